"""The dashboard at `/`, in real Chromium against a real daemon with a token and two simulated cards:
the login (401 without the cookie, the page after it, the cookie's flags), the charts drawing and
moving while jobs run, a job found by filter and cancelled from the page, and `/docs` and `/redoc`
rendered with every request that leaves the loopback blocked (and none attempted).

Screenshots (login, dashboard, job detail) are taken in each run; with `MODELSCHED_SCREENSHOTS=1` they
are written to `docs/screenshots/`, where the committed ones come from."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from scheduler.core.job_pages import id_bound
from tests.support.browser import wait_until
from tests.support.daemon import REPO, Daemon, running_daemon, wait_status
from tests.support.pages import CHROMIUM, needs_chromium
from tests.support.polling import until_sync

pytestmark = needs_chromium

TOKEN = "dash-s3cret"
CONFIG = """
[[models]]
name = "echo"
adapter = "echo"

[[models]]
name = "sleep"
adapter = "sleep"
device = "gpu"
vram_mb = 3000

[[models]]
name = "hold"
adapter = "sleep"

[costs]
cpu = 0.01
gpu = 0.05
"""
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # in ReDoc's bundle; /redoc's policy refuses it


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp_path = tmp_path_factory.mktemp("dashboard")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    with running_daemon(
        tmp_path,
        token=TOKEN,
        MODELSCHED_CONFIG=str(config),
        MODELSCHED_RENDER_ENABLED="0",
        MODELSCHED_SIMULATED_GPUS="2x24GiB",
        MODELSCHED_FORCE_CPU="0",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context whose requests off the loopback are aborted, and the list of them; an
    uncaught error in any of its pages' scripts fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    leaving: list[str] = []
    script_errors: list[str] = []
    context.on("weberror", lambda error: script_errors.append(str(error.error)))

    def refused(text: str) -> None:  # a refusal by a page's Content-Security-Policy is an error too,
        if "Content Security Policy" in text and REDOC_LOGO not in text:  # but ReDoc's logo, by design
            script_errors.append(text)

    context.on("console", lambda message: refused(message.text))

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            leaving.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    try:
        yield context, leaving
    finally:
        context.close()
    assert script_errors == []


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = REPO / "docs" / "screenshots" if os.environ.get("MODELSCHED_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def logged_in(context: BrowserContext, daemon: Daemon) -> Page:
    page = context.new_page()
    page.goto(daemon.url + "/")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    wait_until(page, "document.getElementById('summary')?.textContent.startsWith('preset')")
    return page


def test_the_token_login_sets_a_strict_http_only_cookie(
    daemon: Daemon, offline: tuple[BrowserContext, list[str]], tmp_path: Path
) -> None:
    context, leaving = offline
    with daemon.client(token=None) as anonymous:
        for path in ("/system/status", "/system/history", "/jobs", "/docs", "/openapi.json"):
            assert anonymous.get(path).status_code == 401, path
        wrong = anonymous.post("/login", json={"token": "nope"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    page = context.new_page()
    first = page.goto(daemon.url + "/")
    assert first is not None and first.status == 401
    page.wait_for_selector("#token")
    page.screenshot(path=str(screenshot_path(tmp_path, "login")))
    page.fill("#token", "not the token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert context.cookies() == []
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    wait_until(page, "document.getElementById('summary')?.textContent.startsWith('preset')")
    (cookie,) = context.cookies()
    assert cookie["name"] == "modelsched_session" and TOKEN not in cookie["value"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's scripts never see it
    assert page.evaluate("fetch('/system/status').then(r => r.status)") == 200
    with httpx.Client(base_url=daemon.url, cookies={cookie["name"]: cookie["value"]}) as by_cookie:
        assert by_cookie.get("/system/status").status_code == 200
        other_origin = by_cookie.delete("/jobs/nothing", headers={"Origin": "http://elsewhere.example"})
        assert other_origin.status_code == 403  # a cookie alone changes nothing from another origin
    page.click("#logout")
    page.wait_for_selector("#token")
    assert context.cookies() == []
    assert leaving == []


def test_the_charts_draw_and_move_while_jobs_run(
    daemon: Daemon, offline: tuple[BrowserContext, list[str]], tmp_path: Path
) -> None:
    context, leaving = offline
    stop = threading.Event()

    def submit_jobs() -> None:
        with daemon.client() as http:
            for index in range(2000):  # bounded: the test stops it long before
                if stop.is_set():
                    return
                http.post("/models/sleep/infer", json={"inputs": {"ms": 20}})
                if index % 5 == 0:
                    http.post("/jobs", json={"model": "echo", "inputs": {"n": index}})

    load = threading.Thread(target=submit_jobs, daemon=True)
    load.start()
    try:
        page = logged_in(context, daemon)
        wait_until(
            page,
            "Number(document.getElementById('charts').dataset.points) >= 2"
            " && document.querySelector('#chart-completed canvas') !== null",
            timeout=30_000,
        )
        points = int(page.get_attribute("#charts", "data-points") or 0)
        pixels = page.evaluate("document.querySelector('#chart-completed canvas').toDataURL()")
        wait_until(
            page, f"Number(document.getElementById('charts').dataset.points) >= {points + 2}", timeout=30_000
        )
        assert page.evaluate("document.querySelector('#chart-completed canvas').toDataURL()") != pixels
        series = page.get_attribute("#chart-completed", "data-series")
        assert series is not None and int(series) >= 2  # echo and sleep
        legend = page.inner_text("#chart-completed")
        assert "sleep" in legend and "echo" in legend
        for chart in ("latency", "queue", "gpu-memory", "gpu-util", "cpu", "rss", "cost"):
            assert page.query_selector(f"#chart-{chart} canvas") is not None, chart
        assert "ledger 0" in page.inner_text("#chart-gpu-memory")
        assert "main" in page.inner_text("#chart-rss")
        wait_until(page, "document.querySelector('#jobs tbody tr[data-job]') !== null")
        page.screenshot(path=str(screenshot_path(tmp_path, "dashboard")), full_page=True)
    finally:
        stop.set()
        load.join(30)
    # No job is made now, so the newest page stands still: the next one, by the cursor, holds older jobs.
    wait_until(page, "document.querySelectorAll('#jobs tbody tr[data-job]').length === 25")
    newest = page.eval_on_selector_all("#jobs tbody tr[data-job]", "rows => rows.map(r => r.dataset.job)")
    page.click("#jobs-older")
    wait_until(page, "document.getElementById('jobs-note').textContent.startsWith('page 2')")
    older = page.eval_on_selector_all("#jobs tbody tr[data-job]", "rows => rows.map(r => r.dataset.job)")
    assert older and max(older) < min(newest)
    with daemon.client() as http:
        history = http.get("/system/history").json()
    assert history["interval_s"] == 2.0 and len(history["at"]) >= points + 2
    assert any(value for value in history["completed_per_s"]["sleep"] if value)
    assert any(value for value in history["cost_per_min_usd"] if value)
    assert leaving == []


def test_a_job_is_found_by_filter_and_cancelled_from_the_page(
    daemon: Daemon, offline: tuple[BrowserContext, list[str]], tmp_path: Path
) -> None:
    context, leaving = offline
    with daemon.client() as http:
        held = [
            http.post("/jobs", json={"model": "hold", "inputs": {"ms": 15_000}}).json()["job_id"]
            for _ in range(3)
        ]
    target = held[-1]  # queued behind the first: the page finds it among the queued `hold` jobs
    page = logged_in(context, daemon)
    page.select_option("#job-filter select[name=model]", "hold")
    page.select_option("#job-filter select[name=status]", "queued")
    page.click("#job-filter button[type=submit]")
    row = f"#jobs tr[data-job='{target}']"
    # the filtered page replaces the unfiltered one (which holds the running `hold` job too)
    wait_until(
        page,
        "(() => { const rows = [...document.querySelectorAll('#jobs tbody tr[data-job]')];"
        f" return rows.some(r => r.dataset.job === '{target}')"
        " && rows.every(r => r.children[2].textContent === 'queued'); })()",
    )
    assert all(
        status == "queued"
        for status in page.eval_on_selector_all(
            "#jobs tbody tr[data-job] td:nth-child(3)", "cells => cells.map(c => c.textContent)"
        )
    )
    page.fill(
        "#job-filter input[name=since]",
        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600)),
    )
    page.click("#job-filter button[type=submit]")  # from an hour ahead: none of them
    wait_until(page, "document.querySelector('#jobs tbody tr[data-job]') === null")
    page.fill("#job-filter input[name=since]", "")
    page.click("#job-filter button[type=submit]")
    page.wait_for_selector(row)
    page.click(row)
    wait_until(page, f"document.getElementById('job-detail').dataset.job === '{target}'")
    assert page.is_visible("#detail-cancel")
    assert "hold" in page.inner_text("#detail-fields")
    page.screenshot(path=str(screenshot_path(tmp_path, "job-detail")))
    page.click("#detail-cancel")
    wait_until(page, "document.getElementById('job-detail').dataset.status === 'cancelled'")
    assert not page.is_visible("#detail-cancel")
    with daemon.client() as http:
        assert http.get(f"/jobs/{target}").json()["status"] == "cancelled"
        for job_id in held[:-1]:
            http.delete(f"/jobs/{job_id}")
        assert all(wait_status(http, job_id, {"cancelled"})["status"] == "cancelled" for job_id in held)
    page.click("#job-detail button[value=close]")
    page.click("#models button[data-action=unload][data-model=hold]")
    wait_until(page, "document.getElementById('model-note').textContent.startsWith('unload hold: ')")
    page.click("#models button[data-action=load][data-model=hold]")
    wait_until(page, "document.getElementById('model-note').textContent.startsWith('load hold: cpu-w')")
    with daemon.client() as http:
        until_sync(
            lambda: any(m["name"] == "hold" and m["loaded_on"] for m in http.get("/models").json()["models"]),
            timeout=30,
            message="hold loaded",
        )
    assert leaving == []


def test_docs_and_redoc_render_offline(daemon: Daemon, offline: tuple[BrowserContext, list[str]]) -> None:
    context, leaving = offline
    page = logged_in(context, daemon)
    page.goto(daemon.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert "/jobs" in page.inner_text(".swagger-ui")
    page.goto(daemon.url + "/redoc")
    page.wait_for_selector("h1:has-text('modelsched')")
    assert "Something went wrong" not in page.inner_text("body")
    assert "Submit Batch" in page.inner_text("body")  # an operation of the schema, drawn
    assert leaving == []


def test_the_job_list_pages_by_cursor_and_time_over_http(daemon: Daemon) -> None:
    with daemon.client() as http:
        ids = [
            http.post("/jobs", json={"model": "echo", "inputs": {"n": n}}).json()["job_id"] for n in range(7)
        ]
        for job_id in ids:
            wait_status(http, job_id, {"completed"})
        created = [http.get(f"/jobs/{job_id}").json()["created_at"] for job_id in ids]
        seen: list[str] = []
        query: dict[str, str | int | float] = {"model": "echo", "limit": 3, "since": created[0]}
        while True:
            page = http.get("/jobs", params=query).json()
            assert len(page["jobs"]) <= 3 and page["not_found"] == []
            seen += [job["job_id"] for job in page["jobs"]]
            if page["next_before"] is None:
                break
            query["before"] = page["next_before"]
        assert seen == sorted(ids, reverse=True)
        until = http.get("/jobs", params={"model": "echo", "since": created[0], "until": created[3]}).json()
        # a time bound has the ids' resolution, a millisecond: jobs 2 and 3 may share one
        before_3 = [job_id for job_id in ids if job_id < id_bound(created[3])]
        assert ids[0] in before_3
        assert [job["job_id"] for job in until["jobs"]] == sorted(before_3, reverse=True)
        assert http.get("/jobs", params={"since": "yesterday"}).status_code == 422
        assert http.get("/jobs", params={"before": "x" * 65}).status_code == 422
