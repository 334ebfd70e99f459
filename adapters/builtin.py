"""Built-in models: `echo`, `sleep` and `mlp` (a torch MLP with seeded weights)."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import msgspec

from adapters.base import BaseAdapter, ItemError, Signature, Tensor

MLP_IN = 256
MLP_HIDDEN = 1024
MLP_LAYERS = 3
MLP_OUT = 16
MLP_SEED = 0


class EchoAdapter(BaseAdapter):
    """Returns each input unchanged. An input `{"fail": "message"}` fails that item alone."""

    validate_in_fronts = True
    name = "echo"
    device = "cpu"
    max_batch_size = 256
    max_delay_ms = 1.0

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        return [_echo_one(item) for item in batch]


def _echo_one(item: Any) -> Any:
    if isinstance(item, dict) and "fail" in item:
        return ItemError(str(item["fail"]))
    return item


class SleepAdapter(BaseAdapter):
    """Sleeps the given milliseconds per input (`{"ms": 50}` or a number) and returns `{"slept_ms": ms}`.

    For tests of concurrency, timeouts and faults: `{"exit": code}` ends the worker process at once
    (`os._exit`), as a crashing native library would.
    """

    validate_in_fronts = True
    name = "sleep"
    device = "cpu"
    max_batch_size = 1
    max_delay_ms = 0.0

    def validate(self, inputs: Any) -> None:
        if isinstance(inputs, bool):
            raise ValueError("inputs must be a number of milliseconds or {'ms': number}")
        if isinstance(inputs, int | float):
            milliseconds = inputs
        elif isinstance(inputs, dict):
            milliseconds = inputs.get("ms", 0)
            if "exit" in inputs and not isinstance(inputs["exit"], int):
                raise ValueError("inputs.exit must be an integer exit code")
        else:
            raise ValueError("inputs must be a number of milliseconds or {'ms': number}")
        if not isinstance(milliseconds, int | float) or isinstance(milliseconds, bool):
            raise ValueError("inputs.ms must be a number")
        if not 0 <= milliseconds <= 3_600_000:
            raise ValueError("inputs.ms must be between 0 and 3600000")

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        outputs = []
        for item in batch:
            spec = item if isinstance(item, dict) else {"ms": item}
            if "exit" in spec:
                os._exit(int(spec["exit"]))
            milliseconds = float(spec.get("ms", 0))
            time.sleep(milliseconds / 1000.0)
            outputs.append({"slept_ms": milliseconds})
        return outputs


def build_mlp(seed: int = MLP_SEED) -> Any:  # a torch.nn.Module (torch is imported only where it runs)
    """The benchmark MLP: 256 -> 1024 x3 (ReLU) -> 16, weights drawn from a fixed seed."""
    import torch

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = MLP_IN
    for _ in range(MLP_LAYERS):
        layers += [torch.nn.Linear(width, MLP_HIDDEN), torch.nn.ReLU()]
        width = MLP_HIDDEN
    layers.append(torch.nn.Linear(width, MLP_OUT))
    model = torch.nn.Sequential(*layers).eval()
    torch.random.set_rng_state(generator_state)
    return model


class MLPAdapter(BaseAdapter):
    """A torch MLP with seeded weights: 256 floats in, 16 logits out, batched under inference_mode."""

    validate_in_fronts = True
    name = "mlp"
    vram_mb = 64
    device = "auto"
    max_batch_size = 128  # measured on 2 cores, 1 thread: 10.4k items/s at batch 32, 15.2k at 128
    max_delay_ms = 2.0
    signature = Signature(Tensor("INPUT", "FP32", (-1, MLP_IN)), Tensor("OUTPUT", "FP32", (-1, MLP_OUT)))

    def validate(self, inputs: Any) -> None:
        if not isinstance(inputs, list) or len(inputs) != MLP_IN:
            raise ValueError(f"inputs must be a list of {MLP_IN} numbers")
        try:  # C-speed checks: this runs in the main process for every job
            numbers = msgspec.convert(inputs, list[float])
        except msgspec.ValidationError:
            raise ValueError(f"inputs must be a list of {MLP_IN} numbers") from None
        if not all(map(math.isfinite, numbers)):
            raise ValueError(f"inputs must be a list of {MLP_IN} finite numbers")

    def load(self, device: str) -> Any:
        import torch

        threads = int(self.options.get("torch_threads") or os.environ.get("MODELSCHED_TORCH_THREADS") or 0)
        if threads > 0:  # 0: torch's default
            torch.set_num_threads(threads)
        model = build_mlp(int(self.options.get("seed", MLP_SEED))).to(device)
        return {"model": model, "device": device}

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        import numpy as np
        import torch

        with torch.inference_mode():
            # numpy reads a list of lists three times faster than torch.tensor does
            tensor = torch.from_numpy(np.asarray(batch, dtype=np.float32)).to(state["device"])
            logits = state["model"](tensor)
        rows: list[Any] = logits.cpu().tolist()
        return rows
