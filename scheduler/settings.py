"""Settings: one typed struct, read from a preset TOML file and overridden by `MODELSCHED_*` variables.

A bad file or value raises `ConfigError` with a message naming the key; the daemon prints it and
exits without a traceback.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

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
    batch_policy: str | None = None  # adaptive | fixed
    preload: bool = False  # load it at start; `/readyz` waits for it
    options: dict[str, Any] = {}


class StageConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One stage of a pipeline: a registered model, and how long the stage may take (queue and run)."""

    model: str
    name: str | None = None  # default: the model's name
    timeout_s: float | None = None


class PipelineConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A pipeline as written in a config file (`[[pipelines]]`): stages are model names or tables."""

    name: str
    stages: list[str | StageConfig]
    description: str = ""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    preset: str = "dev"
    # workers
    max_workers_per_gpu: int = 1
    max_models_per_worker: int = 4
    cpu_workers: int = 1
    cpu_workers_min: int = -1  # -1: cpu_workers (a fixed pool)
    cpu_workers_max: int = -1  # -1: cpu_workers
    cpu_idle_timeout_s: float = 30.0
    model_idle_unload_s: float = 0.0  # 0: never
    max_threads: int = 8
    gpu_reserve_mb: int = 512
    reduce_vram_requirements: bool = False
    worker_start_timeout_s: float = 120.0
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 10.0
    max_attempts: int = 3
    model_load_backoff_s: float = 5.0
    model_load_timeout_s: float = 300.0
    torch_threads: int = 0  # 0: leave torch's default
    gpus: list[int | str] = []  # the cards to use, by index or UUID ([]: every card allowed)
    preload: bool = True  # False: models marked `preload` load on their first job like the others
    # jobs
    max_queue: int = 10_000
    default_timeout_s: float = 0.0  # 0: no timeout unless the job sets one
    shutdown_grace_s: float = 10.0
    result_retention_s: float = 86_400.0
    max_finished_in_memory: int = 100_000
    # journal
    journal_path: str = "var/modelsched.db"  # "" or ":memory:" keeps no journal
    journal_synchronous: str = "NORMAL"
    journal_max_mb: int = 10_240  # 0: no bound
    # cluster: many daemons on one Redis (scheduler/cluster); "" keeps the single-host journal
    cluster_url: str = ""  # redis://host:port/db or unix:///path/to/redis.sock
    cluster_name: str = "default"
    cluster_host: str = ""  # this daemon's identity in the cluster ("": hostname:port)
    cluster_heartbeat_s: float = 1.0
    reclaim_idle_s: float = 15.0
    cold_claim_delay_ms: float = 500.0
    # server
    host: str = "127.0.0.1"
    port: int = 8000
    token: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "info"
    log_format: str = "text"  # text | json
    access_log: bool = False
    http_workers: int | Literal["auto"] = "auto"  # front processes doing the HTTP work (0: none)
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
    # clients: batch submission, webhooks
    max_batch_submit: int = 1000
    webhook_secret: str = ""  # "": the token signs the callbacks (none when neither is set)
    webhook_timeout_s: float = 10.0
    webhook_retries: int = 5
    webhook_allow_hosts: list[str] = []
    # models, pipelines and what they cost
    models: list[ModelConfig] = []
    pipelines: list[PipelineConfig] = []
    costs: dict[str, float] = {}  # dollars per worker-second: cpu, gpu, or a GPU's name

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "max_workers_per_gpu",
            "max_models_per_worker",
            "max_queue",
            "max_attempts",
            "heartbeat_interval_s",
            "heartbeat_timeout_s",
            "worker_start_timeout_s",
            "max_body_bytes",
            "max_finished_in_memory",
            "render_max_pages",
            "render_queue_max",
            "render_timeout_s",
            "render_retries",
            "render_recycle_pages",
            "render_max_response_bytes",
            "result_retention_s",
            "model_load_backoff_s",
            "model_load_timeout_s",
            "cpu_idle_timeout_s",
            "max_threads",
            "max_batch_submit",
            "webhook_timeout_s",
            "webhook_retries",
        )
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s: must be longer than heartbeat_interval_s")
        _check_non_negative(
            self, "cpu_workers", "gpu_reserve_mb", "default_timeout_s", "shutdown_grace_s", "torch_threads"
        )
        _check_non_negative(self, "model_idle_unload_s")
        if self.http_workers != "auto" and not 0 <= self.http_workers <= MAX_HTTP_WORKERS:
            raise ValueError(f"http_workers: must be 0 to {MAX_HTTP_WORKERS}, or auto")
        low, high = self.cpu_pool_bounds
        if low < 0 or high < low:
            raise ValueError("cpu_workers_min, cpu_workers_max: need 0 <= cpu_workers_min <= cpu_workers_max")
        for device, rate in self.costs.items():
            if not rate >= 0:
                raise ValueError(f"costs.{device}: must be a number of dollars per second, not negative")
        _check_non_negative(self, "journal_max_mb", "cold_claim_delay_ms")
        _check_positive(self, "cluster_heartbeat_s", "reclaim_idle_s")
        if self.reclaim_idle_s < 3 * self.cluster_heartbeat_s:
            raise ValueError("reclaim_idle_s: must be at least 3 times cluster_heartbeat_s")
        if self.cluster_url and not self.cluster_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("cluster_url: must start with redis://, rediss:// or unix://")
        if self.journal_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("journal_synchronous: must be one of OFF, NORMAL, FULL, EXTRA")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level: must be one of {', '.join(LOG_LEVELS)} (got {self.log_level!r})")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format: must be text or json (got {self.log_format!r})")
        if not 0 < self.port < 65536:
            raise ValueError("port: must be between 1 and 65535")
        names = [model.name for model in self.models]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ValueError(f"models: duplicate model names {sorted(duplicates)}")
        pipeline_names = [pipeline.name for pipeline in self.pipelines]
        duplicates = {name for name in pipeline_names if pipeline_names.count(name) > 1 or name in names}
        if duplicates:
            raise ValueError(f"pipelines: names used twice (or by a model) {sorted(duplicates)}")

    @property
    def front_count(self) -> int:
        """How many front processes serve HTTP (`http_workers`, with `auto` resolved); none in a
        cluster (`cluster_url`): the fronts' hot path reads and waits on the local table, which holds
        only this host's jobs, so a cluster daemon serves HTTP in its main process."""
        if self.cluster_url:
            return 0
        if self.http_workers == "auto":
            return auto_http_workers(os.cpu_count() or 1)
        return self.http_workers

    @property
    def cpu_pool_bounds(self) -> tuple[int, int]:
        """(fewest, most) CPU workers: an elastic pool when they differ."""
        low = self.cpu_workers if self.cpu_workers_min < 0 else self.cpu_workers_min
        high = max(self.cpu_workers, low) if self.cpu_workers_max < 0 else self.cpu_workers_max
        return low, high


MAX_HTTP_WORKERS = 64
AUTO_FRONTS_FROM_CORES = 6  # below this many cores, `auto` is 0: one process does everything


def auto_http_workers(cores: int) -> int:
    """`http_workers = "auto"`: none on a small machine (the fronts, the main process and the workers
    would share too few cores), else a third of the cores, at most 16."""
    return 0 if cores < AUTO_FRONTS_FROM_CORES else min(16, cores // 3)


def _check_positive(settings: Settings, *keys: str) -> None:
    for key in keys:
        if getattr(settings, key) <= 0:
            raise ValueError(f"{key}: must be greater than 0")


def _check_non_negative(settings: Settings, *keys: str) -> None:
    for key in keys:
        if getattr(settings, key) < 0:
            raise ValueError(f"{key}: must not be negative")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "MODELSCHED_"
_SCALAR_FIELDS = {
    field.name: field.type
    for field in msgspec.structs.fields(Settings)
    if field.name not in {"models", "render_allow_hosts", "webhook_allow_hosts", "pipelines", "costs", "gpus"}
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
        given = _read_toml(Path(config_file))
        if "models" in given and "pipelines" not in given:
            raw.pop("pipelines", None)  # the preset's pipelines run on the preset's models, now replaced
        raw.update(given)
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
        key = name[len(ENV_PREFIX) :].lower()
        if key in _SCALAR_FIELDS:
            values[key] = value
        elif key in ("render_allow_hosts", "webhook_allow_hosts", "gpus"):
            values[key] = [host.strip() for host in value.split(",") if host.strip()]
    return values


def settings_table() -> list[tuple[str, str, Any]]:
    """(variable, key, default) for every scalar setting: the README's table is made from this."""
    defaults = Settings()
    return [(ENV_PREFIX + key.upper(), key, getattr(defaults, key)) for key in _SCALAR_FIELDS]


SETTING_MEANINGS: dict[str, str] = {
    "preset": "the preset file read first (`dev` or `prod`); `modelsched serve --preset` sets it",
    "max_workers_per_gpu": "worker processes started on each GPU",
    "max_models_per_worker": "models one worker keeps loaded before the least recently used idle one is evicted",
    "cpu_workers": "CPU worker processes: the CPU stage pool (started when no GPU is visible, or a model or stage runs on `cpu`)",
    "cpu_workers_min": "fewest CPU workers of an elastic pool (-1: `cpu_workers`); 0 starts them on the first backlog",
    "cpu_workers_max": "most CPU workers of an elastic pool (-1: `cpu_workers`); more start while CPU jobs wait",
    "cpu_idle_timeout_s": "an elastic pool's CPU worker idle this long stops (down to `cpu_workers_min`)",
    "model_idle_unload_s": "a model without jobs this long is unloaded from its worker, returning its memory (0: never)",
    "max_threads": "threads of the main process's pool for `run_in_thread` and `map_threads`",
    "gpu_reserve_mb": "memory per GPU the VRAM ledger never hands to models",
    "reduce_vram_requirements": "count models at half their declared `vram_mb` in the ledger",
    "worker_start_timeout_s": "how long a worker may take to start before it is killed and replaced",
    "heartbeat_interval_s": "how often a worker says it is alive",
    "heartbeat_timeout_s": "a worker silent this long is killed and respawned; its jobs are queued again",
    "max_attempts": "worker deaths a job may be in flight for before it fails as a poison job",
    "model_load_backoff_s": "after a model fails to load, its jobs fail at once for this long, doubling per failure in a row (at most 300 s)",
    "model_load_timeout_s": "a model's load may take this long (heartbeats go on while it loads); a load that hangs longer gets its worker replaced",
    "torch_threads": "torch threads per worker (0: torch's default)",
    "preload": "load the models marked `preload = true` at start and keep them loaded, `/readyz` waiting for them; `false`: they load on their first job like the others",
    "max_queue": "jobs waiting at most; a submission past it gets 429 with `Retry-After`",
    "default_timeout_s": "timeout of a job that sets none (0: none)",
    "shutdown_grace_s": "on SIGTERM/SIGINT, how long running jobs may take to finish",
    "result_retention_s": "how long ended jobs are still answered by `GET /jobs/{id}`",
    "max_finished_in_memory": "ended jobs kept in memory; older ones are read from the journal",
    "journal_path": 'the SQLite journal file (`""` or `:memory:`: no journal, nothing survives a restart)',
    "journal_synchronous": "SQLite `synchronous`: `NORMAL` survives a process crash, `FULL` a power loss",
    "journal_max_mb": "bound on the journal's pages in use: past it the oldest ended jobs are pruned first (never an unfinished one); with only unfinished jobs left, submissions get 503 (0: no bound)",
    "cluster_url": 'the Redis that daemons share as their queue and journal (`redis://…` or `unix://…`; `""`: one host, the SQLite journal); `modelsched serve --cluster URL` sets it',
    "cluster_name": "the name that prefixes the cluster's keys, so that clusters may share one Redis",
    "cluster_host": 'this daemon\'s identity in the cluster; a restarted daemon reclaims the jobs of its identity at once (`""`: hostname:port)',
    "cluster_heartbeat_s": "how often a daemon tells the cluster its models, free VRAM and room, and refreshes the jobs it holds",
    "reclaim_idle_s": "a held job not refreshed this long (its daemon died) is queued again by any daemon, counting an attempt",
    "cold_claim_delay_ms": "a job waits this long for a daemon with its model loaded before one that must load it claims it (none waits when no live daemon has it loaded)",
    "host": "address the daemon binds (loopback by default)",
    "port": "port the daemon listens on",
    "token": "when set, every endpoint but the probes (`/healthz`, `/readyz`) wants `Authorization: Bearer <token>`",
    "max_body_bytes": "largest request body accepted; a larger one gets 413",
    "log_level": "`debug`, `info`, `warning`, `error` or `critical`",
    "log_format": "`text` (one line: time, level, logger, message, `job=<id>`) or `json` (one object a line, `job_id` a field); uvicorn's lines too",
    "access_log": "one log line per HTTP request: method, path, status, duration (through the same format)",
    "http_workers": "front processes that share the port and do the HTTP work (parsing, JSON, auth), handing jobs to the main process over pipes; 0: the main process serves HTTP itself; `auto`: 0 below 6 cores, else a third of the cores (at most 16); none in a cluster (`cluster_url`)",
    "render_enabled": "start the render process (Chromium) for the `render` model and `POST /render`",
    "render_browser_path": "the Chromium binary the render process launches",
    "render_max_pages": "browser pages rendering at once",
    "render_queue_max": "renders waiting or running at most; past it `POST /render` gets 429",
    "render_timeout_s": "time one render attempt may take",
    "render_retries": "attempts per render before the HTTP fallback (where the job allows it)",
    "render_recycle_pages": "pages one browser renders before it is replaced",
    "render_max_response_bytes": "largest page body the render process keeps",
    "max_batch_submit": "jobs one `POST /jobs/batch` (or `GET /jobs?ids=`) may hold",
    "webhook_secret": 'the HMAC-SHA256 key of the `X-Modelsched-Signature` header of job callbacks (`""`: the `token`; unsigned when neither is set)',
    "webhook_timeout_s": "time one callback POST may take",
    "webhook_retries": "tries of a callback POST that fails (back-off from 0.5 s, doubling) before it is given up",
}


def settings_markdown_table() -> str:
    """The README's configuration table: variable, default, meaning, for every `MODELSCHED_*` setting."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, key, default in settings_table():
        shown = f"`{default}`" if default != "" else '`""`'
        lines.append(f"| `{variable}` | {shown} | {SETTING_MEANINGS.get(key, '')} |")
    return "\n".join(lines)
