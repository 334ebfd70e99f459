"""OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`, so the `openai` package
(or LangChain's `OpenAIEmbeddings`) can use the daemon as its base URL (`http://host:port/v1`).

`POST /v1/embeddings` takes `model` (any model whose adapter's signature says `embedding`: `minilm`
built in), `input` (a string or a list of strings) and `encoding_format` (`float`, or `base64`: the
little-endian float32 bytes, which the `openai` package asks for by default). The sentences run as
one job of the model (split into batches by the worker like any `minilm` job); the tokens are
counted in the main process while it runs (the adapter's `count_tokens`) for `usage`. Errors come in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the daemon's status codes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Request

from scheduler.core.endings import result_of
from scheduler.core.jobs import JobRequest
from scheduler.errors import InvalidInputError, ModelNotFoundError
from scheduler.http.answers import (
    DEFAULT_INFER_WAIT_S,
    JSON,
    Answer,
    HttpError,
    decode,
    error_parts,
    json_answer,
)
from scheduler.http.body import read_body
from scheduler.http.protocol_schemas import EmbeddingList, OpenAIError, OpenAIModel, OpenAIModelList
from scheduler.http.routers.docs import body_doc, errors_doc, ok_doc
from scheduler.scheduler import Scheduler


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    """`POST /v1/embeddings` (OpenAI's fields; `user` and other extra fields are ignored)."""

    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


log = logging.getLogger("modelsched.server")
_decoder = msgspec.json.Decoder(EmbeddingsRequest)
ERROR_TYPES = {401: "authentication_error", 404: "invalid_request_error", 422: "invalid_request_error"}


def openai_error(exc: Exception) -> Answer:
    body, headers = error_parts(exc)
    status = body.status
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": body.detail, "type": kind, "param": body.field, "code": body.error}
    return json_answer({"error": error}, status, headers)


def count_tokens(adapter: Any, sentences: list[str]) -> int:
    """The sentences' tokens as the model sees them (0 when its adapter cannot count them)."""
    count = getattr(adapter, "count_tokens", None)
    if count is None:
        return 0
    try:
        return sum(count(sentences))
    except Exception as exc:  # no tokenizer file, a library missing: the embeddings still come
        log.warning("cannot count the tokens for usage: %s", exc)
        return 0


def embedding_data(vectors: list[Any], encoding: str) -> list[dict[str, Any]]:
    if encoding == "base64":
        import numpy as np

        rows = np.asarray(vectors, dtype="<f4")
        return [
            {"object": "embedding", "index": index, "embedding": base64.b64encode(row.tobytes()).decode()}
            for index, row in enumerate(rows)
        ]
    return [
        {"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)
    ]


def router(scheduler: Scheduler) -> APIRouter:
    routes = APIRouter(prefix="/v1", tags=["openai"])

    def embedding_adapter(model: str) -> Any:
        registered = scheduler.registry.models.get(model)
        if registered is None:
            raise ModelNotFoundError(f"model {model!r} is not registered")
        signature = getattr(registered.adapter, "signature", None)
        if signature is None or not signature.embedding:
            raise InvalidInputError(f"model {model!r} is not an embedding model", field="model")
        return registered.adapter

    @routes.post(
        "/embeddings",
        openapi_extra=body_doc(EmbeddingsRequest),
        responses={
            **ok_doc(200, EmbeddingList),
            **errors_doc(
                404, 409, 413, 422, 429, 500, 502, 503, 504, 507, error=OpenAIError, media_type=JSON
            ),
        },
    )
    async def embeddings(request: Request) -> Answer:
        try:
            raw = await read_body(
                request.receive, request.scope["headers"], scheduler.settings.max_body_bytes
            )
            body: EmbeddingsRequest = decode(raw, _decoder)
            adapter = embedding_adapter(body.model)
            sentences = [body.input] if isinstance(body.input, str) else body.input
            dimension = adapter.signature.output.shape[-1]
            if body.dimensions is not None and body.dimensions != dimension:
                raise HttpError(
                    422, "invalid_body", f"{body.model} gives {dimension} dimensions", "dimensions"
                )
            job_id = await scheduler.schedule_job(JobRequest(model=body.model, inputs=sentences), waited=True)
            tokens = asyncio.ensure_future(asyncio.to_thread(count_tokens, adapter, sentences))
            try:
                vectors = result_of(
                    await scheduler.wait_for(job_id, DEFAULT_INFER_WAIT_S), scheduler.accepting
                )
            finally:
                used = await tokens
        except Exception as exc:
            return openai_error(exc)
        answer = {
            "object": "list",
            "data": embedding_data(vectors, body.encoding_format),
            "model": body.model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
        return json_answer(answer, headers={"X-Job-Id": job_id})

    @routes.get("/models", responses=ok_doc(200, OpenAIModelList))
    async def models() -> Answer:
        created = int(scheduler.started_at or time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "modelsched"}
            for name in scheduler.registry.models
        ]
        return json_answer({"object": "list", "data": data})

    @routes.get(
        "/models/{model}",
        responses={**ok_doc(200, OpenAIModel), **errors_doc(404, error=OpenAIError, media_type=JSON)},
    )
    async def model(model: str) -> Answer:
        if model not in scheduler.registry.models:
            return openai_error(ModelNotFoundError(f"model {model!r} is not registered"))
        created = int(scheduler.started_at or time.time())
        return json_answer({"id": model, "object": "model", "created": created, "owned_by": "modelsched"})

    return routes
