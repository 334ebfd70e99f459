"""The SSRF guard against real non-loopback targets, safely: the renders run in a network namespace
that holds only loopback (`unshare --net`, or `unshare --user --map-root-user --net` without root), so
nothing could leave the machine even if the guard were broken. A redirect hop to a private or
metadata address must be refused by the guard (a 422-type error), in Chromium and in the plain fetch,
and a page's own requests to such addresses must be aborted while the page still renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.netns_probe import REFUSED_TARGETS
from tests.support.pages import needs_chromium

REPO = Path(__file__).resolve().parents[2]
UNSHARE_COMMANDS = (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"])


def loopback_only_namespace() -> list[str] | None:
    """An `unshare` command line that works here, or None."""
    for command in UNSHARE_COMMANDS:
        try:
            done = subprocess.run(
                [*command, "sh", "-c", "ip link set lo up"], capture_output=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


@needs_chromium
def test_refused_hops_in_a_loopback_only_namespace() -> None:
    command = loopback_only_namespace()
    if command is None:
        pytest.skip("cannot create a network namespace here (unshare --net needs root or user namespaces)")
    done = subprocess.run(
        [*command, "sh", "-c", 'ip link set lo up && exec "$0" -m tests.support.netns_probe', sys.executable],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["isolated"], "the namespace can reach 10.0.0.1: not loopback-only"
    for target in REFUSED_TARGETS:
        host = target.split("/")[2].strip("[]")
        for engine in ("browser", "browser_with_fallback", "http"):
            seen = report[engine][target]
            assert not seen["ok"] and seen["kind"] in {"input", "refused", "InvalidInputError"}, (
                engine,
                seen,
            )
            assert host in seen["error"], (engine, seen)
        assert report["fetch_page"][target].startswith("refused"), report["fetch_page"][target]
    page = report["subresources"]
    assert page["ok"] and page["engine"] == "chromium" and "page with subresources" in page["text"]
    assert any("10.0.0.1" in refusal for refusal in page["refused"]), page
    assert report["redirects_served"] == 4 * len(REFUSED_TARGETS)  # each redirect once; no hop went further
