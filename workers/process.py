"""The entry point of a model worker process (started with the `spawn` context by
`scheduler.pool.child.ChildProcess`).

It is pinned to its GPU by UUID (`CUDA_VISIBLE_DEVICES=GPU-…` or `MIG-…`, with
`CUDA_DEVICE_ORDER=PCI_BUS_ID`; also set in the environment it is spawned with, so it holds before
torch is imported), dies with the main process (`workers.child`), and runs the
`WorkerRuntime` loop over its two pipes.
"""

from __future__ import annotations

import logging
import os
import sys
from multiprocessing.connection import Connection

import msgspec

from workers.child import EXIT_BOOT_FAILED, begin_child
from workers.protocol import WorkerConfig

log = logging.getLogger("modelsched.worker")


def worker_main(config_bytes: bytes, inbox: Connection, outbox: Connection) -> None:
    try:
        config = msgspec.msgpack.decode(config_bytes, type=WorkerConfig)
    except msgspec.DecodeError as exc:
        print(f"modelsched worker: unreadable config: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BOOT_FAILED)
    if config.gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_device or str(config.gpu_index)
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    begin_child(config.parent_pid, config.worker_id, config.log_level, config.log_format)
    try:
        from workers.runtime import WorkerRuntime

        if config.torch_threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(config.torch_threads))
        device = "cuda:0" if config.gpu_index is not None and not config.simulated_gpu else "cpu"
    except Exception:
        log.exception("worker %s failed to boot", config.worker_id)
        os._exit(EXIT_BOOT_FAILED)

    def receive(timeout: float) -> bytes | None:
        if not inbox.poll(max(0.0, timeout)):
            return None
        return inbox.recv_bytes()

    runtime = WorkerRuntime(
        config.worker_id,
        device,
        config.specs,
        receive,
        outbox.send_bytes,
        heartbeat_interval_s=config.heartbeat_interval_s,
        load_timeout_s=config.load_timeout_s,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    if config.torch_threads:
        try:
            import torch

            torch.set_num_threads(config.torch_threads)
            torch.set_num_interop_threads(1)
        except Exception:  # torch not installed, or threads already set: the default stands
            log.debug("worker %s: could not set torch threads", config.worker_id, exc_info=True)
    try:
        runtime.run()
    except (BrokenPipeError, EOFError, OSError) as exc:
        log.info("worker %s: main process gone (%s); exiting", config.worker_id, exc)
    os._exit(0)
