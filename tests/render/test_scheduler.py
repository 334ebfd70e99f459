"""Render jobs through the `Scheduler`: the Python client (`scheduler.render.client`), `POST /render`
(the daemon's app, driven in-process over ASGI), the job table, the system status, the
429 bound, and a render process without a browser (HTTP only; this one needs no Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scheduler.core.jobs import JobRequest
from scheduler.errors import InvalidInputError, QueueFullError, SchedulerError
from scheduler.http.app import create_app
from scheduler.render.client import render_page, render_pages, render_with_fallback
from tests.support.pages import (
    JS_TEXT,
    PageServer,
    SchedulerThread,
    needs_chromium,
    render_settings,
)


@pytest.fixture(scope="module")
def daemon() -> Iterator[SchedulerThread]:
    if needs_chromium.args[0]:
        pytest.skip(needs_chromium.kwargs["reason"])
    with SchedulerThread(render_settings(render_max_pages=2, render_queue_max=3)) as running:
        yield running


def post_render(daemon: SchedulerThread, body: Any, query: str = "") -> httpx.Response:
    """`POST /render` against the daemon's app over the running scheduler (its lifespan is not run: the
    scheduler is started already), driven in-process over ASGI on the scheduler's loop."""
    app = create_app(daemon.scheduler)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return await client.post(f"/render{query}", json=body, timeout=120)

    return daemon.call(call())


@needs_chromium
def test_the_python_client(server: PageServer, daemon: SchedulerThread) -> None:
    scheduler = daemon.scheduler
    page = daemon.call(render_page(scheduler, f"{server.base}/js", screenshot=True))
    assert page["engine"] == "chromium" and JS_TEXT in page["text"] and page["screenshot_png"]
    pages = daemon.call(
        render_pages(scheduler, [f"{server.base}/js", f"{server.base}/gone", f"{server.base}/links?n=40"])
    )
    assert [page["status"] for page in pages] == [200, 404, 200] and len(pages[2]["links"]) == 40
    plain = daemon.call(render_with_fallback(scheduler, f"{server.base}/js", primary="http", fallback=None))
    assert plain["engine"] == "http" and JS_TEXT not in plain["text"]
    with pytest.raises(SchedulerError) as failure:  # the browser is too slow and no fallback is allowed
        daemon.call(
            render_with_fallback(
                scheduler, f"{server.base}/slow?s=3", primary="playwright", fallback=None, timeout_s=1
            )
        )
    assert getattr(failure.value, "kind", None) == "timeout"
    with pytest.raises(InvalidInputError, match="^the URL is refused: .*metadata") as refused:
        daemon.call(render_page(scheduler, "http://169.254.169.254/latest/meta-data/"))
    assert refused.value.field == "url"  # as POST /jobs and POST /render answer it
    with pytest.raises(InvalidInputError):
        daemon.call(render_with_fallback(scheduler, f"{server.base}/js", primary="lynx"))
    jobs = scheduler.list_jobs(model="render", limit=100)
    assert {job["status"] for job in jobs} >= {"completed", "error"}  # render jobs are ordinary jobs
    assert all(job["worker"] == "render" for job in jobs)


@needs_chromium
def test_post_render(server: PageServer, daemon: SchedulerThread) -> None:
    answer = post_render(daemon, {"url": f"{server.base}/js", "html": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (
        body["status"] == "completed"
        and JS_TEXT in body["result"]["text"]
        and "<html" in body["result"]["html"]
    )
    job = daemon.scheduler.job_status(body["job_id"])  # GET /jobs/{id} reads the same table
    assert job["model"] == "render" and job["status"] == "completed"
    missing = post_render(daemon, {"url": f"{server.base}/gone"})
    assert missing.status_code == 200 and missing.json()["result"]["status"] == 404
    # 127.0.0.2 is loopback but not on the allowlist: refused at the redirect hop, before any connection.
    hop = post_render(daemon, {"url": f"{server.base}/redirect?to=http://127.0.0.2:9/", "fallback": None})
    assert hop.status_code == 422 and "127.0.0.2" in hop.json()["detail"]


@needs_chromium
@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "http://10.0.0.1/"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http://metadata.google.internal/"}, "url"),
        ({"url": "http://127.0.0.1/", "wait_until": "never"}, "wait_until"),
        ({"url": "http://127.0.0.1/", "screenshot": "yes"}, "screenshot"),
        ({"url": "http://127.0.0.1/", "timeout_s": "soon"}, "timeout_s"),
        ({"url": "http://127.0.0.1/", "colour": "red"}, "colour"),
        ({"wait_until": "load"}, "url"),
    ],
)
def test_post_render_refuses_with_422_naming_the_field(
    daemon: SchedulerThread, body: dict[str, Any], field: str
) -> None:
    answer = post_render(daemon, body)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert field in (error.get("field") or "") + error["detail"]


@needs_chromium
def test_the_render_queue_bound_answers_429(server: PageServer, daemon: SchedulerThread) -> None:
    scheduler = daemon.scheduler
    slow = [
        daemon.call(
            scheduler.schedule_job(
                JobRequest(model="render", inputs={"url": f"{server.base}/slow?s=1", "fallback": None})
            )
        )
        for _ in range(3)
    ]
    answer = post_render(daemon, {"url": f"{server.base}/js"})
    assert answer.status_code == 429 and answer.headers.get("retry-after")
    with pytest.raises(QueueFullError):
        daemon.call(scheduler.schedule_job(JobRequest(model="render", inputs=f"{server.base}/js")))
    views = [daemon.call(scheduler.wait_for(job_id, 60)) for job_id in slow]
    assert [view["status"] for view in views] == ["completed"] * 3
    assert post_render(daemon, {"url": f"{server.base}/js"}).status_code == 200  # room again
    status = daemon.render_status()
    assert status["renders_done"] >= 4 and status["success_rate"] and status["max_pages"] == 2
    assert status["peak_pages_active"] <= 2 and "pages_active" in status


def test_without_a_browser_renders_fall_back_to_http(server: PageServer) -> None:
    with SchedulerThread(render_settings(render_browser_path="/nonexistent/chromium")) as daemon:
        status = daemon.render_status()
        assert status["browser_available"] is False and status["alive"]
        page = daemon.call(render_page(daemon.scheduler, f"{server.base}/js"))
        assert page["engine"] == "http" and "static text" in page["text"] and JS_TEXT not in page["text"]
        with pytest.raises(SchedulerError) as failure:
            daemon.call(render_page(daemon.scheduler, f"{server.base}/js", fallback=None))
        assert getattr(failure.value, "kind", None) in {"no_browser", "failed"}
        answer = post_render(daemon, {"url": f"{server.base}/links?n=7"})
        assert answer.status_code == 200 and len(answer.json()["result"]["links"]) == 7
