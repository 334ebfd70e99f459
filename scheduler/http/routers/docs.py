"""OpenAPI helpers for the routers: a request body and the answers of a route, by their structs.
Error answers are problem bodies (`ErrorBody`, `application/problem+json`)."""

from __future__ import annotations

from typing import Any

from scheduler.http.answers import JSON
from scheduler.http.problems import PROBLEM_JSON
from scheduler.http.schemas import ErrorBody, ref


def body_doc(struct: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(struct)}}}}


def errors_doc(
    *error_codes: int, error: type = ErrorBody, media_type: str = PROBLEM_JSON
) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route: each code with its body (`error`, a protocol's own shape on the
    OpenAI and v2 routes)."""
    return {
        code: {"description": "error", "content": {media_type: {"schema": ref(error)}}}
        for code in error_codes
    }


def ok_doc(code: int, struct: type, media_type: str = JSON) -> dict[int | str, dict[str, Any]]:
    """A success answer (or a status report, as `/readyz`'s 503) with its struct."""
    return {
        code: {
            "description": "OK" if code < 300 else "not ready",
            "content": {media_type: {"schema": ref(struct)}},
        }
    }


def answers_doc(ok: int, struct: type, *error_codes: int) -> dict[int | str, dict[str, Any]]:
    return {**ok_doc(ok, struct), **errors_doc(*error_codes)}
