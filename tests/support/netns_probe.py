"""Run inside a network namespace that holds only loopback (`tests/test_render_netns.py` starts it):
renders pages on 127.0.0.1 that redirect to, or load from, refused addresses (private, metadata), and
prints what happened as JSON. Even a broken guard could send nothing anywhere from here: the only
interface is `lo`, so a connection to 10.0.0.1 fails with "network unreachable" before any packet.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
from typing import Any

from scheduler.render.client import render_page
from tests.support.pages import SchedulerThread, page_server, render_settings
from workers.render.fetch import RefusedUrl, fetch_page

REFUSED_TARGETS = [
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
]


def isolated() -> bool:
    """True when this namespace cannot reach 10.0.0.1 at all (no route: no packet is sent)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("10.0.0.1", 80)) in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def outcome(daemon: SchedulerThread, url: str, **options: Any) -> dict[str, Any]:
    try:
        page = daemon.call(render_page(daemon.scheduler, url, **options))
    except Exception as exc:
        return {"ok": False, "error": str(exc), "kind": getattr(exc, "kind", None) or type(exc).__name__}
    return {
        "ok": True,
        "engine": page.get("engine"),
        "text": page.get("text"),
        "refused": page.get("refused_requests", []),
    }


def main() -> int:
    report: dict[str, Any] = {
        "isolated": isolated(),
        "browser": {},
        "browser_with_fallback": {},
        "http": {},
        "fetch_page": {},
    }
    if not report["isolated"]:
        print(json.dumps(report))
        return 0
    with page_server() as server, SchedulerThread(render_settings(render_retries=1)) as daemon:
        for target in REFUSED_TARGETS:
            start = f"{server.base}/redirect?to={target}"
            report["browser"][target] = outcome(daemon, start, fallback=None, timeout_s=10)
            report["browser_with_fallback"][target] = outcome(daemon, start, timeout_s=10)
            report["http"][target] = outcome(daemon, start, engine="http", timeout_s=10)
            try:
                asyncio.run(fetch_page(start, ["127.0.0.1"], 10, 1 << 20))
                report["fetch_page"][target] = "fetched"
            except RefusedUrl as exc:
                report["fetch_page"][target] = f"refused: {exc}"
            except Exception as exc:
                report["fetch_page"][target] = f"{type(exc).__name__}: {exc}"
        report["subresources"] = outcome(
            daemon, f"{server.base}/subresources?to=http://10.0.0.1", fallback=None, timeout_s=10
        )
        report["redirects_served"] = server.served("/redirect")
        report["paths_served"] = sorted({request.split("?")[0] for request in server.requests})
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
