"""The dashboard at `/`, in real Chromium: after pipeline jobs have run it shows the pipeline with its
stages, the costs (per device, model and pipeline, per 1,000 jobs) and the CPU stage pool (the
charts, the job list and the login are `tests/http/test_dashboard.py`'s)."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from tests.support.browser import wait_until
from tests.support.daemon import running_daemon
from tests.support.pages import CHROMIUM, needs_chromium

CONFIG = """
[[models]]
name = "clean"
adapter = "echo"

[[models]]
name = "model"
adapter = "echo"

[[pipelines]]
name = "tidy"
stages = ["clean", {name = "infer", model = "model", timeout_s = 5}]

[costs]
cpu = 0.5
"""


@needs_chromium
def test_the_dashboard_shows_pipelines_costs_and_the_cpu_pool(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    with running_daemon(tmp_path, MODELSCHED_CONFIG=str(config), MODELSCHED_RENDER_ENABLED="0") as daemon:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            for index in range(5):
                answer = client.post("/pipelines/tidy/infer", json={"inputs": {"n": index}})
                assert answer.status_code == 200 and answer.json()["result"] == {"n": index}
            costs = client.get("/system/status").json()["costs"]
        assert costs["jobs_ended"] == 5 and costs["by_pipeline"]["tidy"] > 0
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-background-networking"],
            )
            try:
                page = browser.new_page()
                page.goto(daemon.url + "/")
                wait_until(page, "document.querySelector('#pipelines td')?.textContent === 'tidy'")
                stages = page.inner_text("#pipelines")
                assert "clean (clean, cpu) → infer (model, cpu)" in stages
                summary = page.inner_text("#cost-summary")
                assert (
                    "5 job(s) ended" in summary and "per 1,000 jobs $" in summary and "cpu $0.5/s" in summary
                )
                costs_table = page.inner_text("#costs")
                assert "pipeline\ttidy\t$" in costs_table and "device\tcpu\t$" in costs_table
                assert "1 running (1 ready)" in page.inner_text("#pool-summary")
            finally:
                browser.close()
