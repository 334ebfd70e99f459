"""The README's render section against a real `modelsched serve` (dev preset, rendering on, the
allowlist holding 127.0.0.1): `POST /render`, `POST /jobs` with `model: "render"`, `GET /jobs/{id}`,
a refused URL, and the render section of `GET /system/status`. Without Chromium the daemon still
starts and renders over plain HTTP, so this runs everywhere."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.support.daemon import running_daemon
from tests.support.pages import CHROMIUM, JS_TEXT, PageServer

HAS_CHROMIUM = os.access(CHROMIUM, os.X_OK)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        running_daemon(
            tmp_path_factory.mktemp("render-rest"),
            MODELSCHED_RENDER_ALLOW_HOSTS="127.0.0.1",
            MODELSCHED_RENDER_RETRIES="1",
        ) as daemon,
        daemon.client() as http,
    ):
        http.timeout = 120
        yield http


def test_post_render_and_render_jobs(server: PageServer, client: httpx.Client) -> None:
    answer = client.post("/render", json={"url": f"{server.base}/js", "screenshot": HAS_CHROMIUM})
    assert answer.status_code == 200, answer.text
    page = answer.json()["result"]
    assert {"url", "final_url", "status", "title", "text", "links", "elapsed_ms"} <= set(page)
    assert page["engine"] == ("chromium" if HAS_CHROMIUM else "http")
    assert (JS_TEXT in page["text"]) == HAS_CHROMIUM
    assert page.get("screenshot_png") or not HAS_CHROMIUM
    submitted = client.post("/jobs", json={"model": "render", "inputs": {"url": f"{server.base}/links?n=12"}})
    assert submitted.status_code == 202
    job = client.get(f"/jobs/{submitted.json()['job_id']}", params={"wait": 60}).json()
    assert job["status"] == "completed" and len(job["result"]["links"]) == 12 and job["worker"] == "render"
    # One submission-time check: the same answer whichever way the URL comes in.
    refused = client.post("/render", json={"url": "http://169.254.169.254/latest/meta-data/"})
    refused_job = client.post("/jobs", json={"model": "render", "inputs": {"url": "http://169.254.169.254/"}})
    for answer in (refused, refused_job):
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "invalid_input" and answer.json()["field"] == "url"
        assert (
            answer.json()["detail"].startswith("the URL is refused: ")
            and "metadata" in answer.json()["detail"]
        )
    bad = client.post("/render", json={"url": f"{server.base}/js", "wait_until": "whenever"})
    assert bad.status_code == 422 and "wait_until" in bad.text
    status = client.get("/system/status").json()["render"]
    assert status["renders_done"] >= 2 and status["browser_available"] is HAS_CHROMIUM
    assert {"pages_active", "success_rate", "restarts", "max_pages"} <= set(status)


@pytest.mark.skipif(not HAS_CHROMIUM, reason=f"no Chromium at {CHROMIUM}: nothing to fall back from")
def test_post_render_with_the_fallback_off(server: PageServer, client: httpx.Client) -> None:
    answer = client.post(
        "/render", json={"url": f"{server.base}/browser-hangs", "timeout_s": 1, "fallback": None}
    )
    assert answer.status_code in (502, 504), answer.text  # the browser timed out; no plain fetch stood in
