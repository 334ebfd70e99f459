"""The render process with real Chromium, against pages served on 127.0.0.1 (the allowlist holds only
127.0.0.1): JavaScript, timeouts, statuses, links, HTML and screenshots, the page pool bound under 50
concurrent renders, a killed browser and a killed render process recovering, recycling."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from scheduler.errors import InvalidInputError, QueueFullError, RenderFailedError
from tests.support.pages import (
    JS_TEXT,
    PageServer,
    ServiceThread,
    needs_chromium,
    render_settings,
)

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def renderer() -> Iterator[ServiceThread]:
    with ServiceThread(render_settings(render_max_pages=5, render_queue_max=100)) as running:
        yield running


def test_javascript_runs_and_the_result_has_every_field(server: PageServer, renderer: ServiceThread) -> None:
    page = renderer.render({"url": f"{server.base}/js", "html": True, "screenshot": True})
    assert page["engine"] == "chromium" and page["status"] == 200 and page["title"] == "JS page"
    assert JS_TEXT in page["text"] and "static text" in page["text"]
    assert page["url"] == page["final_url"] == f"{server.base}/js"
    assert page["elapsed_ms"] > 0 and isinstance(page["links"], list)
    assert f'<div id="out">{JS_TEXT}</div>' in page["html"]  # the DOM after scripts ran
    assert base64.b64decode(page["screenshot_png"]).startswith(b"\x89PNG\r\n\x1a\n")
    for wait_until in ("domcontentloaded", "networkidle"):
        assert JS_TEXT in renderer.render({"url": f"{server.base}/js", "wait_until": wait_until})["text"]
    plain = renderer.render({"url": f"{server.base}/js", "engine": "http"})
    assert plain["engine"] == "http" and JS_TEXT not in plain["text"] and "static text" in plain["text"]


def test_a_404_and_a_page_of_many_links(server: PageServer, renderer: ServiceThread) -> None:
    missing = renderer.render(f"{server.base}/no-such-page")
    assert missing["status"] == 404 and missing["title"] == "Not found" and missing["engine"] == "chromium"
    links = renderer.render(f"{server.base}/links?n=500")
    assert len(links["links"]) == 500
    assert links["links"][0] == f"{server.base}/page/0" and links["links"][-1] == f"{server.base}/page/499"
    moved = renderer.render(f"{server.base}/redirect?to=/js")  # an allowed redirect is followed
    assert moved["final_url"] == f"{server.base}/js" and JS_TEXT in moved["text"]


def test_a_page_slower_than_its_timeout_fails_after_its_tries(
    server: PageServer, renderer: ServiceThread
) -> None:
    before = server.served("/slow")
    with pytest.raises(RenderFailedError) as failure:
        renderer.render({"url": f"{server.base}/slow?s=4", "timeout_s": 1, "fallback": None})
    assert failure.value.kind == "timeout"
    assert server.served("/slow") - before == 2  # render_retries=2 tries, no fallback fetch


def test_a_failing_browser_falls_back_to_the_plain_fetch(server: PageServer, renderer: ServiceThread) -> None:
    page = renderer.render({"url": f"{server.base}/browser-hangs", "timeout_s": 1})
    assert page["engine"] == "http" and page["text"] == "served to the fallback"
    assert renderer.status()["fallbacks"] >= 1


def test_refusals_answer_as_invalid_input(server: PageServer, renderer: ServiceThread) -> None:
    """Refused before any connection: by the validation (a literal private address) or by the guard in
    the render process (a name it would have to resolve is never looked up: it is a metadata name)."""
    with pytest.raises(InvalidInputError, match="private"):
        renderer.render("http://10.0.0.1/")
    with pytest.raises(InvalidInputError, match="metadata"):
        renderer.render("http://metadata.google.internal/computeMetadata/v1/")
    with pytest.raises(InvalidInputError, match="only http and https"):
        renderer.render("file:///etc/passwd")
    big = renderer.render({"url": f"{server.base}/big?kb=64", "fallback": None})  # under the 10 MiB limit
    assert len(big["text"]) == 64 * 1024


def test_the_page_pool_bound_holds_under_50_concurrent_renders(
    server: PageServer, renderer: ServiceThread
) -> None:
    urls = [f"{server.base}/pool?ms=300&i={i}" for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        pages = list(pool.map(lambda url: renderer.render({"url": url, "fallback": None}), urls))
    assert [page["title"] for page in pages] == [f"pool {i}" for i in range(50)]
    assert all(page["engine"] == "chromium" for page in pages)
    assert 2 <= server.max_concurrent["/pool"] <= 5  # pages really ran side by side, never more than 5
    renderer.wait(lambda: renderer.status()["renders_done"] >= 50, 10, "status counts the renders")
    status = renderer.status()
    assert status["peak_pages_active"] <= 5 and status["max_pages"] == 5
    assert status["success_rate"] is not None and status["in_flight"] == 0


def test_a_killed_browser_is_relaunched_and_its_render_retried(
    server: PageServer, renderer: ServiceThread
) -> None:
    renderer.render(f"{server.base}/js")  # a browser is up
    renderer.wait(lambda: renderer.status()["browser_pid"] is not None, 10, "browser pid in the status")
    status = renderer.status()
    browser_pid, launches = status["browser_pid"], status["browser_launches"]
    render_process = psutil.Process(status["pid"])
    assert browser_pid in {child.pid for child in render_process.children(recursive=True)}  # ours, by pid
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(renderer.render, {"url": f"{server.base}/slow?s=2", "fallback": None})
        renderer.wait(
            lambda: renderer.status()["pages_active"] >= 1 and server.served("/slow") > 0,
            20,
            "the slow render started",
        )
        os.kill(browser_pid, signal.SIGKILL)
        page = pending.result(timeout=60)
    assert page["engine"] == "chromium" and page["text"] == "finally"
    renderer.wait(lambda: renderer.status()["browser_launches"] > launches, 10, "a new browser launched")
    assert renderer.status()["browser_pid"] != browser_pid


def test_a_killed_render_process_is_respawned_and_its_renders_resent(server: PageServer) -> None:
    with ServiceThread(render_settings(render_recycle_pages=2)) as renderer:
        for _ in range(3):  # three pages on a browser recycled after two
            renderer.render(f"{server.base}/js")
        renderer.wait(lambda: renderer.status()["browser_launches"] == 2, 10, "the browser recycled")
        old = renderer.status()
        old_browser = psutil.Process(old["browser_pid"])
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(renderer.render, {"url": f"{server.base}/slow?s=1", "fallback": None})
            renderer.wait(lambda: renderer.status()["pages_active"] >= 1, 20, "the slow render started")
            os.kill(old["pid"], signal.SIGKILL)
            page = pending.result(timeout=90)
        assert page["text"] == "finally"
        status = renderer.status()
        assert status["restarts"] == 1 and status["pid"] != old["pid"] and status["alive"]
        # The dead render process's browser does not outlive it.
        renderer.wait(
            lambda: not old_browser.is_running() or old_browser.status() == psutil.STATUS_ZOMBIE,
            20,
            "the old browser exited",
        )


def test_the_render_queue_bound_answers_queue_full(server: PageServer) -> None:
    with (
        ServiceThread(render_settings(render_queue_max=2, render_max_pages=1)) as renderer,
        ThreadPoolExecutor(2) as pool,
    ):
        slow = [
            pool.submit(renderer.render, {"url": f"{server.base}/slow?s=1", "fallback": None})
            for _ in range(2)
        ]
        renderer.wait(lambda: renderer.status()["in_flight"] == 2, 10, "two renders in flight")
        with pytest.raises(QueueFullError, match="render queue is full"):
            renderer.render(f"{server.base}/js")
        assert [future.result(timeout=60)["text"] for future in slow] == ["finally", "finally"]
        assert renderer.render(f"{server.base}/js")["engine"] == "chromium"  # room again
