"""The command line's tables (`scheduler/cli/tables.py`, pure): a status with simulated GPUs, a render
process and a journal problem; the model states; a status from a daemon with fields this version does
not know, or without some it does, still prints."""

from __future__ import annotations

from scheduler.cli.tables import duration, jobs_table, model_state, models_table, shown, status_text, table

STATUS = {
    "scheduler": {
        "type": "process",
        "preset": "prod",
        "accepting": True,
        "started_at": 1.0,
        "uptime_s": 3725.0,
    },
    "gpu": [
        {
            "id": 0,
            "index": 0,
            "name": "Simulated 24GiB",
            "simulated": True,
            "total_mb": 24576.0,
            "used_mb": 1536.0,
            "free_mb": 23040.0,
            "utilization_pct": 37.0,
            "reserve_mb": 512,
            "ledger_used_mb": 320.0,
            "workers": ["gpu0-w0"],
            "memory_utilization": 0.0625,
        }
    ],
    "workers": [
        {
            "worker_id": "gpu0-w0",
            "pid": 4242,
            "device": "cuda:0",
            "state": "ready",
            "loaded_models": [{"model": "minilm", "loading": False}, {"model": "mlp", "loading": True}],
            "jobs_in_flight": 2,
            "jobs_done": 1234,
            "heartbeat_age_s": 0.2,
            "restarts": 1,
            "rss_mb": 2048.0,
            "a_field_from_a_newer_daemon": 1,
        }
    ],
    "render": {
        "state": "ready",
        "browser_pid": 777,
        "browser_launches": 2,
        "pages_active": 3,
        "max_pages": 5,
        "peak_pages_active": 5,
        "pages_waiting": 1,
        "renders_done": 10,
        "success_rate": 0.9,
        "fallbacks": 1,
        "restarts": 0,
    },
    "queue": {
        "queued": 4,
        "processing": 2,
        "completed": 1234,
        "error": 3,
        "cancelled": 1,
        "max_queue": 10000,
    },
    "models": [
        {
            "name": "minilm",
            "adapter": "minilm",
            "device": "auto",
            "max_batch_size": 16,
            "vram_mb": 256,
            "loaded_on": ["gpu0-w0"],
            "queued": 4,
            "failed": None,
            "state": "ready",
        },
        {
            "name": "broken",
            "adapter": "x:Y",
            "device": "gpu",
            "max_batch_size": 8,
            "vram_mb": 100,
            "loaded_on": [],
            "queued": 0,
            "failed": "ImportError: no module x",
        },
    ],
    "journal": {
        "path": "/var/lib/modelsched.db",
        "size_mb": 12.5,
        "used_mb": 10.0,
        "max_mb": 0,
        "pruned_for_size": 0,
        "pruned_for_age": 7,
        "problem": "the journal cannot commit: disk full",
    },
}


def test_the_status_as_sections_of_tables() -> None:
    text = status_text(STATUS)
    lines = text.splitlines()
    assert lines[0] == "modelsched: preset prod, accepting jobs, up 1h 02m"
    gpu_row = lines[lines.index("GPUS") + 2]
    assert gpu_row.split("  ")[0] == "0" and "Simulated 24GiB (simulated)" in gpu_row
    assert "1.5 GiB / 24.0 GiB" in gpu_row and "37%" in gpu_row and "320 MiB" in gpu_row
    worker_row = lines[lines.index("WORKERS") + 2].split()
    assert worker_row[:4] == ["gpu0-w0", "cuda:0", "ready", "4242"] and "minilm," in worker_row
    assert "queued 4  processing 2  completed 1234  error 3  cancelled 1  (at most 10000 waiting)" in lines
    assert "broken" in text and "failed" in lines[lines.index("MODELS") + 3]
    render = lines[lines.index("RENDER") + 1]
    assert "state ready" in render and "pid 777" in render and "pages 3/5" in render and "90% ok" in render
    journal = lines[lines.index("JOURNAL") + 1]
    assert "no bound" in journal and "PROBLEM: the journal cannot commit: disk full" in journal


def test_a_status_missing_sections_still_prints() -> None:
    text = status_text({"scheduler": {"preset": "dev", "accepting": False}, "workers": []})
    assert "NOT accepting jobs" in text and "(none: CPU workers only)" in text
    assert "RENDER\noff" in text and "JOURNAL\nnone" in text and text.count("(none)") == 2


def test_model_states_cells_and_durations() -> None:
    assert model_state({"state": "loading", "loaded_on": ["w"]}) == "loading"  # the daemon's own word first
    assert model_state({"failed": "boom"}) == "failed"
    assert model_state({"loaded_on": ["w"]}) == "loaded" and model_state({"loaded_on": []}) == "unloaded"
    assert [shown(value) for value in (None, "", True, 0.12345, 1234.5, ["a", "b"], [])] == [
        "-",
        "-",
        "yes",
        "0.123",
        "1234",
        "a, b",
        "-",
    ]
    assert [duration(s) for s in (None, 4.25, 187, 7500, 273600)] == [
        "-",
        "4.2s",
        "3m 07s",
        "2h 05m",
        "3d 04h",
    ]
    assert table(["A", "LONGER"], [["wide cell", 1]]) == "A          LONGER\nwide cell  1"
    assert models_table([]).endswith("(none)")
    jobs = jobs_table(
        [
            {
                "job_id": "j1",
                "model": "echo",
                "status": "completed",
                "priority": "normal",
                "created_at": 90.0,
                "started_at": 95.0,
                "ended_at": 96.5,
                "attempts": 1,
                "worker": "cpu-w0",
                "error_kind": None,
            }
        ],
        now=100.0,
    )
    assert jobs.splitlines()[1].split() == [
        "j1",
        "echo",
        "completed",
        "normal",
        "10.0s",
        "ago",
        "1.5s",
        "1",
        "cpu-w0",
        "-",
    ]
