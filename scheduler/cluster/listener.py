"""`Listener`: the cluster's pub/sub on this daemon. `ends:<host>` carries the id of each job whose end
another host wrote and this one wants (it submitted the job, read it while it ran, or held it):
waiters wake, a host drops a job ended elsewhere; an end this host wrote itself sends it nothing.
`queued` carries the model of every job queued (back ends claim), `reclaimed` "id entry why" of every job
taken back from a silent host. Pub/sub may drop messages (a reconnect): after one, `on_reconnect`
runs, and waiters re-read their jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scheduler.cluster.store import UNREACHABLE, ClusterStore

log = logging.getLogger("modelsched.cluster")

RECONNECT_S = 0.25


class Listener:
    def __init__(
        self,
        store: ClusterStore,
        host: str,
        on_end: Callable[[str], None],
        on_queued: Callable[[str], None],
        on_reclaimed: Callable[[str, str, str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self.store = store
        self.on_end = on_end
        self.on_queued = on_queued
        self.on_reclaimed = on_reclaimed
        self.on_reconnect = on_reconnect
        self.connected = asyncio.Event()
        self.messages = 0
        prefix = store.prefix
        self._channels = {
            f"{prefix}ends:{host}".encode(): self._end,
            f"{prefix}queued".encode(): self._queued,
            f"{prefix}reclaimed".encode(): self._reclaimed,
        }

    async def run(self) -> None:
        """Until cancelled: subscribe, deliver, and after a lost connection subscribe again (redis-py
        reconnects the same `PubSub`; the store's close closes its connection)."""
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        while True:
            try:
                await pubsub.subscribe(*self._channels)
                self.connected.set()
                self.on_reconnect()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None or message.get("type") != "message":
                        continue
                    self.messages += 1
                    handler = self._channels.get(message["channel"])
                    if handler is not None:
                        try:
                            handler(message["data"].decode())
                        except Exception:
                            log.exception("a cluster message handler failed")
            except UNREACHABLE as exc:
                if self.connected.is_set():
                    log.warning("the cluster's pub/sub connection was lost: %s", exc)
                self.connected.clear()
                await asyncio.sleep(RECONNECT_S)

    def _end(self, data: str) -> None:
        self.on_end(data)

    def _queued(self, data: str) -> None:
        self.on_queued(data)

    def _reclaimed(self, data: str) -> None:
        job_id, entry, why = (data.split(" ", 2) + ["", ""])[:3]
        self.on_reclaimed(job_id, entry, why)
