"""The answers of the OpenAI-compatible routes (`/v1`) and of the Open Inference Protocol (`/v2`) as
msgspec structs, for their OpenAPI documentation: these routes answer in their protocols' own shapes,
errors included (`OpenAIError`, `V2Error`), because their clients (the `openai` package,
`tritonclient`) read those shapes. Only the bearer check's 401 is a problem body there too."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(msgspec.Struct):
    """An error on `/v1`: OpenAI's shape; `code` is the daemon's error kind, `param` the field."""

    error: OpenAIErrorDetail


class Embedding(msgspec.Struct):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class OpenAIModel(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[OpenAIModel]


class V2Error(msgspec.Struct):
    """An error of the Open Inference Protocol: `{"error": "<message>"}`."""

    error: str


class V2Server(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class V2Live(msgspec.Struct):
    live: bool


class V2Ready(msgspec.Struct):
    ready: bool


class V2ModelReady(msgspec.Struct):
    name: str
    ready: bool


class V2Tensor(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2Output(msgspec.Struct, kw_only=True):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | msgspec.UnsetType = msgspec.UNSET  # JSON; else `parameters.binary_data_size`
    parameters: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class V2InferAnswer(msgspec.Struct, kw_only=True):
    """The JSON of an infer answer (with the binary extension, its first
    `Inference-Header-Content-Length` bytes; the tensor's bytes follow)."""

    model_name: str
    model_version: str
    outputs: list[V2Output]
    id: str | msgspec.UnsetType = msgspec.UNSET


PROTOCOL_SCHEMAS: tuple[type, ...] = (
    OpenAIError,
    EmbeddingList,
    OpenAIModel,
    OpenAIModelList,
    V2Error,
    V2Server,
    V2Live,
    V2Ready,
    V2ModelReady,
    V2ModelMetadata,
    V2InferAnswer,
)
