"""The cluster's hosts as their heartbeats tell them: what each has loaded and can run, its free VRAM
and room, and the hash of its model configuration (a daemon refuses to join a cluster whose hosts
run another configuration: the same model name must mean the same model everywhere). Pure records
and rules; `scheduler.cluster.node` sends and reads the heartbeats."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

import msgspec

from scheduler.core.status import HostStatus
from scheduler.settings import Settings

LIVE_BEATS = 3  # a host whose last heartbeat is older than this many intervals (and LIVE_SLACK_S) is not live
LIVE_SLACK_S = 2.0  # a loaded machine's late beats do not make its host look dead


class HostInfo(msgspec.Struct, kw_only=True):
    """One heartbeat (JSON in the cluster's `hosts` hash)."""

    host: str
    at: float  # wall-clock time of the heartbeat
    config: str  # `config_hash` of its settings
    warm: list[str]  # models loaded on a ready worker
    fits: list[str]  # models some worker of it can run at all
    free_vram_mb: list[float]
    room: int
    workers: int


_decoder = msgspec.json.Decoder(HostInfo)


def config_hash(settings: Settings) -> str:
    """What must be equal across the cluster: the models (each by name) and the pipelines."""
    models = sorted(settings.models, key=lambda model: model.name)
    pipelines = sorted(settings.pipelines, key=lambda pipeline: pipeline.name)
    return hashlib.sha256(msgspec.json.encode([models, pipelines])).hexdigest()[:16]


class Hosts:
    """The last heartbeat of every host; `interval_s`: how often hosts beat."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.known: dict[str, HostInfo] = {}
        # `refusal`'s answers (every submission asks), good until a live host's beat grows too old
        self._refusals: dict[str, str | None] = {}
        self._refusals_until = 0.0

    def update(self, raw: dict[bytes, bytes]) -> None:
        known: dict[str, HostInfo] = {}
        for value in raw.values():
            try:
                info = _decoder.decode(value)
            except msgspec.DecodeError:
                continue
            known[info.host] = info
        self.known = known
        self._refusals_until = 0.0

    def live(self, now: float | None = None) -> list[HostInfo]:
        now = time.time() if now is None else now
        return [info for info in self.known.values() if now - info.at <= self.live_window_s]

    @property
    def live_window_s(self) -> float:
        return LIVE_BEATS * self.interval_s + LIVE_SLACK_S

    def other_config(self, me: str, config: str) -> HostInfo | None:
        """A live host with another model configuration, or None."""
        return next((info for info in self.live() if info.host != me and info.config != config), None)

    def warm_elsewhere(self, models: Iterable[str], me: str) -> set[str]:
        """Those of `models` that a live host other than `me` has loaded."""
        warm = {name for info in self.live() if info.host != me for name in info.warm}
        return {name for name in models if name in warm}

    def refusal(self, model: str) -> str | None:
        """Why no live host can run `model`, or None (remembered until the heartbeats change or a live
        host's last one grows too old)."""
        now = time.time()
        if now >= self._refusals_until:
            self._refusals.clear()
            window = self.live_window_s
            self._refusals_until = min((info.at + window for info in self.live(now)), default=now + 0.1)
        if model not in self._refusals:
            self._refusals[model] = self._refusal(model, self.live(now))
        return self._refusals[model]

    def _refusal(self, model: str, live: list[HostInfo]) -> str | None:
        if any(model in info.fits for info in live):
            return None
        if not live:
            return "no host of the cluster is live"
        return "no live host of the cluster has a worker or card it fits"

    def status(self, now: float | None = None) -> list[HostStatus]:
        now = time.time() if now is None else now
        return [
            HostStatus(
                host=info.host,
                heartbeat_age_s=round(max(0.0, now - info.at), 3),
                live=now - info.at <= self.live_window_s,
                models_loaded=info.warm,
                models_fit=info.fits,
                free_vram_mb=info.free_vram_mb,
                room=info.room,
                workers=info.workers,
            )
            for info in sorted(self.known.values(), key=lambda one: one.host)
        ]
