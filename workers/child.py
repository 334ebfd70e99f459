"""What every child process of the daemon does first (model workers and the render process alike):
tie its life to the main process, leave Ctrl-C to it, and log in the daemon's format with its own
name. Also the reserved exit codes that tell the supervisor how a child ended."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

from workers.logs import configure_logging

PR_SET_PDEATHSIG = 1
EXIT_BOOT_FAILED = 3  # reserved: the child could not start (so the supervisor backs off)
EXIT_ORPHANED = 4  # the main process is gone


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when the main process ends, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_ORPHANED)


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Fallback for systems without PDEATHSIG: exit when re-parented."""

    def loop() -> None:
        while True:
            threading.Event().wait(interval_s)
            if os.getppid() != parent_pid:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def begin_child(parent_pid: int, name: str, log_level: str, log_format: str = "text") -> None:
    """Die with the parent, ignore SIGINT and SIGTERM (Ctrl-C reaches the whole process group, and so
    does systemd's stop: the parent decides, drains, and tells its children to stop) and log to stderr
    in the daemon's format (`workers.logs`) as `[name]`."""
    die_with_parent(parent_pid)
    watch_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level, log_format, name, sys.stderr)
