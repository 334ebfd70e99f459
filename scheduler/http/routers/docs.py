"""OpenAPI helpers for the routers: a request body and the answers of a route, by their structs."""

from __future__ import annotations

from typing import Any

from scheduler.http.answers import JSON
from scheduler.http.schemas import ErrorBody, ref


def body_doc(struct: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(struct)}}}}


def answers_doc(ok: int, struct: type, *error_codes: int) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {
        ok: {"description": "OK", "content": {JSON: {"schema": ref(struct)}}}
    }
    for code in error_codes:
        answers[code] = {"description": "error", "content": {JSON: {"schema": ref(ErrorBody)}}}
    return answers
