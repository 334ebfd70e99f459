"""A short chaos run (`scripts/chaos.py`): the real daemon under REST load, workers SIGKILLed every
2 s and the main process SIGKILLed and restarted once. Nothing may be lost or answered twice, every
poison job must end in `error`, and no innocent job may end as poison. Part of the default run."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.chaos import run_chaos


@pytest.mark.timeout(300)  # the run's own deadline is 240 s
def test_chaos_300_jobs_nothing_lost_nothing_duplicated(tmp_path: Path) -> None:
    figures = run_chaos(
        jobs=300,
        poison=2,
        kill_every_s=2.0,
        restart_at=0.5,
        cpu_workers=2,
        seed=7,
        deadline_s=240.0,
        folder=str(tmp_path),
    )
    context = {key: value for key, value in figures.items() if key != "daemon_log_tail"}
    assert figures["submitted"] == 300, context
    assert figures["main_kills"] == 1, context
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert figures["poison_not_in_error"] == 0, figures
    assert figures["failed_by_reason"].get("poison") == 2, figures
    assert figures["innocent_failed_as_poison"] == 0, figures
    assert figures["completed"] == 298, figures
