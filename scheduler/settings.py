"""Settings: one typed struct, read from a preset TOML file and overridden by `MODELSCHED_*` variables.

A bad file or value raises `ConfigError` with a message naming the key; the daemon prints it and
exits without a traceback.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from scheduler.errors import ConfigError


class ModelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A model as written in a config file; unset knobs take the adapter class's defaults."""

    name: str
    adapter: str
    vram_mb: int | None = None
    device: str | None = None
    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    options: dict[str, Any] = {}


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    preset: str = "dev"
    # workers
    max_workers_per_gpu: int = 1
    max_models_per_worker: int = 4
    cpu_workers: int = 1
    gpu_reserve_mb: int = 512
    reduce_vram_requirements: bool = False
    worker_start_timeout_s: float = 120.0
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 10.0
    max_attempts: int = 3
    torch_threads: int = 0  # 0: leave torch's default
    # jobs
    max_queue: int = 10_000
    default_timeout_s: float = 0.0  # 0: no timeout unless the job sets one
    shutdown_grace_s: float = 10.0
    result_retention_s: float = 86_400.0
    max_finished_in_memory: int = 100_000
    # journal
    journal_path: str = "var/modelsched.db"  # "" or ":memory:" keeps no journal
    journal_synchronous: str = "NORMAL"
    # server
    host: str = "127.0.0.1"
    port: int = 8000
    token: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "info"
    # render process
    render_enabled: bool = False
    render_browser_path: str = "/usr/bin/chromium"
    render_max_pages: int = 5
    render_queue_max: int = 100
    render_timeout_s: float = 30.0
    render_retries: int = 3
    render_recycle_pages: int = 200
    render_allow_hosts: list[str] = []
    render_max_response_bytes: int = 10 * 1024 * 1024
    # models
    models: list[ModelConfig] = []

    def __post_init__(self) -> None:
        _check_positive(self, "max_workers_per_gpu", "max_models_per_worker", "max_queue", "max_attempts")
        _check_non_negative(
            self, "cpu_workers", "gpu_reserve_mb", "default_timeout_s", "shutdown_grace_s", "torch_threads"
        )
        if self.journal_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("journal_synchronous: must be one of OFF, NORMAL, FULL, EXTRA")
        if not 0 < self.port < 65536:
            raise ValueError("port: must be between 1 and 65535")
        names = [model.name for model in self.models]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ValueError(f"models: duplicate model names {sorted(duplicates)}")


def _check_positive(settings: Settings, *keys: str) -> None:
    for key in keys:
        if getattr(settings, key) <= 0:
            raise ValueError(f"{key}: must be greater than 0")


def _check_non_negative(settings: Settings, *keys: str) -> None:
    for key in keys:
        if getattr(settings, key) < 0:
            raise ValueError(f"{key}: must not be negative")


ENV_PREFIX = "MODELSCHED_"
_SCALAR_FIELDS = {
    field.name: field.type
    for field in msgspec.structs.fields(Settings)
    if field.name not in {"models", "render_allow_hosts"}
}


def preset_path(preset: str) -> Path:
    path = Path(str(resources.files("configs").joinpath(f"{preset}.toml")))
    if not path.exists():
        raise ConfigError(f"preset: unknown preset {preset!r} (known: dev, prod)")
    return path


def load_settings(
    preset: str = "dev",
    config_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Preset file, then `config_file` over it, then `MODELSCHED_*` variables, then `overrides`."""
    raw: dict[str, Any] = _read_toml(preset_path(preset))
    if config_file is not None:
        raw.update(_read_toml(Path(config_file)))
    raw["preset"] = preset
    raw.update(env_overrides(os.environ if environ is None else environ))
    raw.update(overrides or {})
    return settings_from_dict(raw)


def settings_from_dict(raw: dict[str, Any]) -> Settings:
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_name_key(str(exc))}") from None


def _name_key(message: str) -> str:
    # msgspec says "... - at `$.models[0].name`"; say it as the key a person writes.
    return message.replace("`$.", "`").replace("$.", "")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def env_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """`MODELSCHED_MAX_QUEUE=50` -> {"max_queue": "50"}; values are converted by `settings_from_dict`."""
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key in _SCALAR_FIELDS:
            values[key] = value
        elif key == "render_allow_hosts":
            values[key] = [host.strip() for host in value.split(",") if host.strip()]
    return values


def settings_table() -> list[tuple[str, str, Any]]:
    """(variable, key, default) for every scalar setting: the README's table is made from this."""
    defaults = Settings()
    return [(ENV_PREFIX + key.upper(), key, getattr(defaults, key)) for key in _SCALAR_FIELDS]
