"""The adapter protocol: how a model is loaded, validated and run on a batch.

A model author subclasses `BaseAdapter` (or implements `Adapter`): `load(device)` returns whatever
state `predict(state, batch)` needs; `predict` returns one output per input, and may put an
`ItemError` (or any exception instance) in an item's place to fail that item alone. `validate(inputs)`
runs in the main process at submission and raises `ValueError` naming what is wrong, so a bad job
never reaches a worker. `preprocess`/`postprocess` run per item in the worker, around `predict`.

Many items in one job: an adapter may define `items(inputs) -> list` (e.g. the sentences of a
request) and `assemble(inputs, outputs) -> output`. The worker's batcher then counts items, not jobs:
`predict` receives items from one or several jobs, a large job is split across batches, and
`assemble` turns the job's item outputs back into its result. Without `items`, a job is one item.

Tensors: an adapter may declare its `signature` (one input and one output `Tensor`: name, datatype,
shape) for the protocols that speak in tensors (the Open Inference Protocol, `POST /v2/models/{m}/infer`;
OpenAI's `/v1/embeddings` for one with `embedding = True`). The first dimension is the batch: the
items of one job for an adapter with `items`, else one job per row. An embedding model may also
define `count_tokens(sentences) -> list[int]` (run in the main process) for the usage counts.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable


class Tensor(NamedTuple):
    """A tensor of a model's signature: its name, datatype (`FP32`, `BYTES`, ...) and shape (-1: any
    size; the first dimension is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


class Signature(NamedTuple):
    """What a model takes and gives as tensors; `embedding`: its output is one vector per input
    (OpenAI's `/v1/embeddings` answers from it)."""

    input: Tensor
    output: Tensor
    embedding: bool = False


class ItemError(Exception):
    """An error that belongs to one input of a batch; its batch-mates still complete."""


@runtime_checkable
class Adapter(Protocol):
    name: str
    vram_mb: int
    device: str
    max_batch_size: int
    max_delay_ms: float
    batch_policy: str

    def load(self, device: str) -> Any: ...

    def predict(self, state: Any, batch: list[Any]) -> list[Any]: ...

    def validate(self, inputs: Any) -> None: ...

    def preprocess(self, inputs: Any) -> Any: ...

    def postprocess(self, output: Any) -> Any: ...

    def unload(self, state: Any) -> None: ...


class BaseAdapter:
    """Defaults for every knob; subclasses override the class attributes and `load`/`predict`."""

    name: ClassVar[str] = "model"
    vram_mb: int = 0
    device: str = "auto"
    max_batch_size: int = 32
    max_delay_ms: float = 5.0  # with batch_policy "fixed": how long a batch waits to fill
    batch_policy: str = "adaptive"  # adaptive: run what is waiting at once | fixed: wait to fill
    signature: Signature | None = None  # its tensors, for the protocols that speak in tensors
    # `validate` is a pure function of the inputs and the adapter's options (no I/O, no state of the
    # daemon), so the HTTP fronts may run it on a copy of the adapter built from the same options; the
    # main process then takes the inputs as they came, never decoding them (unless `items` needs them).
    # A subclass inherits it: one whose `validate` reads anything else sets it back to False.
    validate_in_fronts: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    def load(self, device: str) -> Any:
        return None

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        raise NotImplementedError

    def validate(self, inputs: Any) -> None:
        return None

    def preprocess(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, output: Any) -> Any:
        return output

    def unload(self, state: Any) -> None:
        return None
