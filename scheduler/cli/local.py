"""The commands that work on this machine's files, with no daemon: `config` (the effective settings,
checked as `serve` would check them) and `journal check|backup` (`scheduler.journal.files`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from scheduler import errors
from scheduler.core.models import ModelRegistry, resolve_spec
from scheduler.core.pipelines import pipeline_from
from scheduler.journal import files
from scheduler.settings import ENV_PREFIX, Settings, env_overrides, load_settings, preset_path

EXIT_BAD_CONFIG = 1  # `config`: the configuration would not start
EXIT_DAMAGED = 1  # `journal check` and `journal backup`: the journal is damaged
SECRET_KEYS = ("token", "webhook_secret")
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def check_models(settings: Settings) -> None:
    """What `serve` checks before it starts anything: each model's adapter can be built with its
    options and knobs, each pipeline names registered models; ConfigError naming the key if not."""
    registry = ModelRegistry()
    for model in settings.models:
        spec, adapter = resolve_spec(model, 0.5 if settings.reduce_vram_requirements else 1.0)
        registry.register(spec, adapter)
    for pipeline in settings.pipelines:
        pipeline_from(pipeline, registry)
        if pipeline.name in registry:
            raise errors.ConfigError(f"pipelines.{pipeline.name}: a model has that name already")


def sources(preset: str, config_file: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Where each setting that is not a default comes from: the preset, the config file, a variable."""
    found = {key: f"preset {preset}" for key in tomllib.loads(preset_path(preset).read_text())}
    found["preset"] = "--preset (or MODELSCHED_PRESET)"
    if config_file:
        found.update(dict.fromkeys(tomllib.loads(Path(config_file).read_text()), f"file {config_file}"))
    found.update({key: ENV_PREFIX + key.upper() for key in env_overrides(dict(environ))})
    return found


def toml_value(value: Any) -> str:
    """A TOML literal for a setting's value (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{toml_key(key)} = {toml_value(item)}" for key, item in value.items() if item is not None
        )
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def settings_toml(settings: Settings, origin: Mapping[str, str]) -> str:
    """The settings as a TOML file (secrets hidden), each line saying where its value came from."""
    values = msgspec.to_builtins(settings)
    lines: list[str] = []
    tables: list[str] = []
    for key, value in values.items():
        if key in SECRET_KEYS and value:
            value = "<hidden>"
        if key in ("models", "pipelines", "costs"):
            if value:
                tables += ["", f"# {key}: {origin.get(key, 'default')}"]
            if key == "costs" and value:
                tables += ["[costs]"] + [
                    f"{toml_key(name)} = {toml_value(rate)}" for name, rate in value.items()
                ]
            elif value:
                for entry in value:
                    tables += [f"[[{key}]]"] + [
                        f"{toml_key(name)} = {toml_value(item)}"
                        for name, item in entry.items()
                        if item is not None and item != {}
                    ]
        else:
            line = f"{key} = {toml_value(value)}"
            lines.append(f"{line:<48} # {origin.get(key, 'default')}")
    return "\n".join(lines + tables)


def cli_config(args: argparse.Namespace) -> int:
    """Print the effective settings (preset, then --config, then MODELSCHED_* variables); with
    `--check`, also build every model's adapter and every pipeline as `serve` does. A configuration
    that would not start the daemon: one line on stderr, exit 1."""
    try:
        settings = load_settings(args.preset, config_file=args.config)
        if args.check:
            check_models(settings)
        origin = sources(args.preset, args.config, os.environ)
    except errors.ConfigError as exc:
        print(f"modelsched: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.json:
        shown = msgspec.to_builtins(settings)
        shown.update({key: "<hidden>" for key in SECRET_KEYS if shown.get(key)})
        print(json.dumps(shown, indent=2))
    else:
        print(settings_toml(settings, origin))
    if args.check:
        count = len(settings.models)
        print(f"modelsched: configuration ok ({count} model{'s' * (count != 1)} checked)", file=sys.stderr)
    return 0


def cli_journal(args: argparse.Namespace) -> int:
    try:
        configured = args.journal or load_settings(args.preset, config_file=args.config).journal_path
    except errors.ConfigError as exc:
        print(f"modelsched: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "check":
            path = args.path or configured
            if not os.path.exists(path):
                print(f"modelsched: no journal at {path}", file=sys.stderr)
                return 2
            problem = files.check(path)
            if problem is not None:
                print(f"modelsched: {files.damaged_error(path, problem)}", file=sys.stderr)
                return EXIT_DAMAGED
            summary = files.summary_of(path)
            print(
                f"{path}: ok ({summary.jobs} jobs, {summary.unfinished} unfinished, "
                f"{summary.size_bytes / 2**20:.1f} MiB)"
            )
            return 0
        began = time.monotonic()
        summary = files.backup(configured, args.path)
        print(
            f"{configured} backed up to {args.path}: {summary.jobs} jobs ({summary.unfinished} unfinished), "
            f"{summary.size_bytes / 2**20:.1f} MiB in {time.monotonic() - began:.2f} s"
        )
        return 0
    except errors.JournalDamagedError as exc:
        print(f"modelsched: {exc}", file=sys.stderr)
        return EXIT_DAMAGED
    except (errors.JournalError, OSError) as exc:  # missing, no access, no room: one line
        print(f"modelsched: {exc}", file=sys.stderr)
        return 2
