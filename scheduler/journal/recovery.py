"""Recovery at start: the jobs that had not ended when the daemon last stopped (or died) are queued
again, in their order, with their `attempts` (a job with tries counted from dead workers is a
suspect and runs alone) and with their deadline still counted from their submission."""

from __future__ import annotations

import logging
import time

from scheduler.core.deadlines import Deadlines
from scheduler.core.jobs import Job
from scheduler.core.table import JobTable

log = logging.getLogger("modelsched.journal")


def queue_again(open_jobs: list[Job], table: JobTable, deadlines: Deadlines) -> None:
    now, now_wall = time.monotonic(), time.time()
    for job in open_jobs:
        table.add(job)
        if job.timeout_s is not None:  # the deadline runs from the submission, across restarts
            deadlines.watch(job, now + max(0.0, job.created_at + job.timeout_s - now_wall))
    if open_jobs:
        log.info(
            "journal: %d job(s) that had not ended are queued again (%d suspect(s))",
            len(open_jobs),
            sum(1 for job in open_jobs if job.attempts > 0),
        )
