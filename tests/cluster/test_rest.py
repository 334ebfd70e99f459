"""Two real daemons (`modelsched serve --cluster`) on one Redis, over REST: `/infer` on a pure front
runs on the back end; a job submitted on one daemon is read, listed (`?ids=`), awaited, streamed
(`/jobs/{id}/events`) and cancelled on the other; the job list shows every host's jobs; `/system/status` shows the cluster; with Redis gone a submission gets 503 with Retry-After and
readiness 503, both back once Redis is."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import running_daemon
from tests.support.polling import until_sync
from tests.support.redis_server import RedisServer


def cluster(server: RedisServer, host: str, cpu_workers: int) -> dict[str, str]:
    return {
        "MODELSCHED_CLUSTER_URL": server.url,
        "MODELSCHED_CLUSTER_HOST": host,
        "MODELSCHED_CLUSTER_HEARTBEAT_S": "0.3",
        "MODELSCHED_CPU_WORKERS": str(cpu_workers),
        "MODELSCHED_RENDER_ENABLED": "false",
    }


@pytest.mark.timeout(240)
def test_two_daemons_over_rest(tmp_path: Path, redis_server: RedisServer) -> None:
    (tmp_path / "back").mkdir()
    (tmp_path / "front").mkdir()
    with (
        running_daemon(tmp_path / "back", **cluster(redis_server, "back", 1)) as back,
        running_daemon(tmp_path / "front", **cluster(redis_server, "front", 0)) as front,
        back.client() as to_back,
        front.client() as to_front,
    ):
        answer = to_front.post("/models/echo/infer", json={"inputs": {"x": 1}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == {"x": 1}
        job_id = answer.json()["job_id"]
        assert to_back.get(f"/jobs/{job_id}").json()["host"] == "back"
        listed = to_back.get("/jobs", params={"ids": f"{job_id},nope"}).json()
        assert [one["job_id"] for one in listed["jobs"]] == [job_id] and listed["not_found"] == ["nope"]
        # submitted on the back end, streamed and awaited on the front
        slow = to_back.post("/jobs", json={"model": "sleep", "inputs": {"ms": 600}}).json()["job_id"]
        events: list[str] = []

        def stream() -> None:
            with httpx.stream("GET", f"{front.url}/jobs/{slow}/events", timeout=30) as lines:
                events.extend(
                    line[len("event: ") :] for line in lines.iter_lines() if line.startswith("event: ")
                )

        reader = threading.Thread(target=stream)
        reader.start()
        view = to_front.get(f"/jobs/{slow}", params={"wait": 20}).json()
        assert view["status"] == "completed", view
        reader.join(20)
        assert not reader.is_alive() and events[-1] == "completed", events
        # cancelled on the front while it runs on the back end
        running = to_back.post("/jobs", json={"model": "sleep", "inputs": {"ms": 3000}}).json()["job_id"]
        until_sync(lambda: to_front.get(f"/jobs/{running}").json()["status"] == "processing", timeout=20)
        assert to_front.delete(f"/jobs/{running}").json()["status"] == "cancelled"
        assert to_front.delete(f"/jobs/{running}").status_code == 409
        # the job list on either daemon: every host's jobs from Redis, newest first, filtered, paged
        for to_any in (to_front, to_back):
            listed = to_any.get("/jobs").json()
            assert [one["job_id"] for one in listed["jobs"]] == [running, slow, job_id], listed
            assert listed["next_before"] is None
        ended = to_front.get("/jobs", params={"status": "completed"}).json()["jobs"]
        assert [one["job_id"] for one in ended] == [slow, job_id]
        assert [one["job_id"] for one in to_back.get("/jobs", params={"model": "echo"}).json()["jobs"]] == [
            job_id
        ]
        first = to_front.get("/jobs", params={"limit": 2}).json()
        assert [one["job_id"] for one in first["jobs"]] == [running, slow] and first["next_before"] == slow
        rest = to_back.get("/jobs", params={"limit": 2, "before": first["next_before"]}).json()
        assert [one["job_id"] for one in rest["jobs"]] == [job_id] and rest["next_before"] is None
        status = to_front.get("/system/status").json()["cluster"]
        assert {host["host"] for host in status["hosts"] if host["live"]} == {"back", "front"}
        assert any(queue["model"] == "sleep" for queue in status["queues"])
        # Redis gone: 503 with Retry-After; back again: accepted
        redis_server.kill()
        gone = to_front.post("/jobs", json={"model": "echo", "inputs": 1})
        assert gone.status_code == 503 and gone.headers["retry-after"], gone.text
        assert gone.headers["content-type"] == "application/problem+json", gone.headers
        assert gone.json()["type"].endswith("/journal_unavailable") and gone.json()["status"] == 503
        assert to_front.get("/readyz").status_code == 503
        redis_server.start()
        until_sync(
            lambda: to_front.post("/jobs", json={"model": "echo", "inputs": 1}).status_code == 202, timeout=20
        )
        until_sync(lambda: to_front.get("/readyz").status_code == 200, timeout=20)
