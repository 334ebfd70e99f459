"""The log format itself (`workers.logs`), on a stream: text and JSON lines, the job id from `extra=`
and from `job_context`, a traceback kept with its line."""

from __future__ import annotations

import io
import json
import logging

from workers.logs import about_job, job_context, make_handler


def written(log_format: str, write: object) -> str:
    stream = io.StringIO()
    logger = logging.getLogger("modelsched.test-format")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = make_handler(log_format, "cpu-w3", stream)
    logger.addHandler(handler)
    try:
        assert callable(write)
        write(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_text_lines_name_the_process_and_end_with_the_job() -> None:
    def write(log: logging.Logger) -> None:
        log.info("plain")
        log.warning("timed out on %s", "cpu-w0", extra=about_job("j1"))
        with job_context("j2"):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")

    lines = written("text", write).splitlines()
    assert lines[0].endswith(" INFO [cpu-w3] modelsched.test-format: plain")
    assert lines[1].endswith(" WARNING [cpu-w3] modelsched.test-format: timed out on cpu-w0 job=j1")
    assert lines[2].endswith(": failed job=j2") and lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


def test_json_lines_carry_the_job_the_process_the_fields_and_the_traceback() -> None:
    def write(log: logging.Logger) -> None:
        log.info("request", extra={"status": 200, "duration_ms": 1.5, **about_job("j1")})
        with job_context("j2"):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
        log.info("after")  # outside the context: about no job

    first, second, third = (json.loads(line) for line in written("json", write).splitlines())
    assert first["message"] == "request" and first["level"] == "INFO" and first["process"] == "cpu-w3"
    assert (first["status"], first["duration_ms"], first["job_id"]) == (200, 1.5, "j1")
    assert first["logger"] == "modelsched.test-format" and first["time"].endswith("+00:00")
    assert second["job_id"] == "j2" and "ValueError: boom" in second["exc_info"]
    assert "job_id" not in third and "process_name" not in third and "color_message" not in third
