"""The layout's rules, read from the source so they outlive any one change: what each room may import
(every import counts, inside functions too), no module over 400 lines, a docstring on every module,
and a wheel that ships every sub-package."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("adapters", "workers", "scheduler", "configs")
WEB = ("fastapi", "starlette", "uvicorn")
MAX_LINES = 400

# Room -> the rooms of ours it may import (a room always imports itself). The longest matching prefix
# names a module's room. Third-party libraries are free, except the web frameworks (`WEB`).
ALLOWED: dict[str, set[str]] = {
    "adapters": set(),
    "workers": {"adapters"},
    "scheduler.errors": {"workers"},
    "scheduler.settings": {"scheduler.errors"},
    "scheduler.pool": {"scheduler.errors", "scheduler.settings", "workers", "adapters"},
    "scheduler.core": {"scheduler.pool", "scheduler.errors", "scheduler.settings", "workers", "adapters"},
    "scheduler.journal": {"scheduler.core", "scheduler.errors", "scheduler.settings", "workers"},
    "scheduler.render": {
        "scheduler.core",
        "scheduler.pool",
        "scheduler.errors",
        "scheduler.settings",
        "workers",
        "adapters",
    },
    "scheduler.render.client": {
        "scheduler.render",
        "scheduler.core",
        "scheduler.errors",
        "workers",
        "scheduler.scheduler",
    },  # a user of the public API, which imports no client
    "scheduler.supervision": {
        "scheduler.core",
        "scheduler.pool",
        "scheduler.render",
        "scheduler.errors",
        "scheduler.settings",
        "workers",
    },
    "scheduler.client": set(),  # the remote client: httpx and msgspec, nothing of the daemon
    "scheduler.cli": {
        "scheduler.client",
        "scheduler.settings",
        "scheduler.errors",
        "scheduler.core",
        "scheduler.journal",
    },  # the command line: the client for the daemon's commands; settings, models and the journal file
    "scheduler.webhooks": {
        "scheduler.core",
        "scheduler.errors",
        "scheduler.render",
        "scheduler.settings",
        "workers",
    },  # job callbacks, through the render's SSRF guard
    "scheduler.submissions": {"scheduler.core", "scheduler.errors", "scheduler.webhooks"},
    "scheduler.cluster": {
        "scheduler.core",
        "scheduler.errors",
        "scheduler.settings",
        "scheduler.submissions",
        "scheduler.webhooks",
        "workers",
    },  # Redis: the cluster's queue and journal (redis-py), from the main process's loop only
    "scheduler.assembly": {
        "scheduler.cluster",
        "scheduler.supervision",
        "scheduler.webhooks",
        "scheduler.submissions",
        "scheduler.core",
        "scheduler.pool",
        "scheduler.journal",
        "scheduler.render",
        "scheduler.errors",
        "scheduler.settings",
        "workers",
        "adapters",
    },
    "scheduler.scheduler": {
        "scheduler.supervision",
        "scheduler.assembly",
        "scheduler.webhooks",
        "scheduler.submissions",
        "scheduler.core",
        "scheduler.pool",
        "scheduler.journal",
        "scheduler.render",
        "scheduler.errors",
        "scheduler.settings",
        "workers",
        "adapters",
    },
    "scheduler.presets": {"scheduler.scheduler", "scheduler.settings"},
    "scheduler.http": {"scheduler", "workers"},
    "scheduler": {
        "scheduler.core",
        "scheduler.errors",
        "scheduler.presets",
        "scheduler.scheduler",
    },  # __init__
    "server": {"scheduler"},
    "configs": set(),
}
WEB_ROOMS = ("scheduler.http",)


def modules() -> list[tuple[str, Path]]:
    found = [("server", REPO / "server.py")]
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def room_of(module: str) -> str:
    matches = [room for room in ALLOWED if module == room or module.startswith(room + ".")]
    return max(matches, key=len)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def ours(imported: str) -> bool:
    return imported.split(".")[0] in (*PACKAGES, "server")


def test_each_room_imports_only_what_it_may() -> None:
    forbidden = []
    for module, path in modules():
        room = room_of(module)
        allowed = ALLOWED[room] | {room}
        for line, imported in imports_of(path):
            where = f"{path.relative_to(REPO)}:{line}: {imported}"
            if imported.split(".")[0] in WEB and not room.startswith(WEB_ROOMS):
                forbidden.append(f"{where} (a web framework outside scheduler/http)")
            elif ours(imported) and not any(
                imported == other or imported.startswith(other + ".") for other in allowed
            ):
                forbidden.append(f"{where} ({room} may import {sorted(allowed)})")
    assert forbidden == [], "\n".join(forbidden)


def test_the_rule_itself_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The checker sees an import hidden inside a function."""
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from scheduler.http.app import create_app\n    return create_app\n")
    assert imports_of(sneaky) == [(2, "scheduler.http.app.create_app")]
    assert room_of("scheduler.core.dispatch") == "scheduler.core"
    assert not any("scheduler.http.app".startswith(other) for other in ALLOWED["scheduler.core"])


def test_no_module_is_over_400_lines_and_each_says_what_it_is() -> None:
    lua = sorted((REPO / "scheduler").rglob("*.lua"))  # the cluster's Redis functions: code too
    assert lua, "the Redis functions were not found"
    long = [
        f"{path.relative_to(REPO)} ({count} lines)"
        for path in [path for _, path in modules()] + lua
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert long == []
    undocumented = [
        str(path.relative_to(REPO))
        for _, path in modules()
        if path.read_text().strip() and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert undocumented == []


def test_a_wheel_ships_every_sub_package_and_imports_from_it(tmp_path: Path) -> None:
    """Build the wheel as a user would get it (from a copy of the sources: an in-tree build keeps a
    `build/` folder whose stale files would ship), then import every module from its contents alone,
    not from this checkout, with the environment's libraries."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    for name in ("server.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("modelsched-*.whl"))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
        names = set(archive.namelist())
    expected = (
        {str(path.relative_to(REPO)) for _, path in modules()}
        | {
            "configs/dev.toml",
            "configs/prod.toml",
            "scheduler/http/dashboard/static/index.html",
            "scheduler/http/dashboard/static/dashboard.js",
            "scheduler/http/dashboard/static/login.html",
            "scheduler/http/dashboard/static/vendor/uplot/uPlot.iife.min.js",
            "scheduler/http/dashboard/static/vendor/uplot/LICENSE",
        }
        | {str(path.relative_to(REPO)) for path in (REPO / "scheduler").rglob("*.lua")}
    )
    assert expected - names == set()
    site_packages = [entry for entry in sys.path if entry.endswith("site-packages")]
    importing = "; ".join(f"import {name}" for name, _ in modules() if name != "server")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(unpacked), *site_packages])}
    checked = subprocess.run(
        [sys.executable, "-S", "-c", f"{importing}; import scheduler, server; print(scheduler.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().startswith(str(unpacked))


def test_the_docs_name_files_that_exist_and_the_readme_lists_every_setting() -> None:
    from scheduler.settings import settings_markdown_table

    readme = (REPO / "README.md").read_text()
    assert settings_markdown_table() in readme
    named = set()
    for doc in ("README.md", "docs/architecture.md", "docs/performance.md"):
        named |= set(
            re.findall(
                r"`((?:scheduler|workers|adapters|tests|scripts|bench)/[\w/.]*\w)`", (REPO / doc).read_text()
            )
        )

    def exists(
        path: str,
    ) -> bool:  # a file, a module (`workers/protocol`) or a module's name (`core/x.Class`)
        module = path.rsplit(".", 1)[0] if not path.endswith(".py") and "." in path else path
        return any((REPO / name).exists() for name in (path, f"{path}.py", f"{module}.py"))

    assert sorted(path for path in named if not exists(path)) == []


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_every_room_has_modules(room: str) -> None:
    assert any(room_of(module) == room for module, _ in modules()), f"no module is in {room}"
