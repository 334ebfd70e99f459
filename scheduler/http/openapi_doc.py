"""The finishing touches of the daemon's OpenAPI document, so that it lists exactly what each route
sends: our msgspec structs as the component schemas; FastAPI's own 422 (`HTTPValidationError`, a
body the daemon never sends) taken out, each route documenting the 422 it does send; the answers
every route may give added to each (500 `internal_error`, and 401 when a token is set, except on the
paths the bearer check lets through); stable, readable `operationId`s (`operation_id`)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from fastapi.routing import APIRoute

from scheduler.http.problems import PROBLEM_JSON
from scheduler.http.protocol_schemas import PROTOCOL_SCHEMAS
from scheduler.http.schemas import ErrorBody, openapi_components, ref
from scheduler.http.tensors import InferRequestV2

FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
PROTOCOL_PREFIXES = {"/v1/": "openai_", "/v2": "v2_"}


def operation_id(route: APIRoute) -> str:
    """The route's function name (`submit_job`, `get_job`), prefixed on the protocol routes
    (`openai_embeddings`, `v2_infer`); `_version` for the v2 paths that name a model version."""
    prefix = next((name for start, name in PROTOCOL_PREFIXES.items() if route.path.startswith(start)), "")
    suffix = "_version" if "{version}" in route.path else ""
    return f"{prefix}{route.name}{suffix}"


def methods_of(schema: dict[str, Any], path: str) -> list[str]:
    """The methods the document gives `path` (a 405's `Allow`: Starlette names only those of the
    first route that matches the path); empty when no documented route has it."""
    methods: set[str] = set()
    for template, operations in schema.get("paths", {}).items():
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations if method in METHODS)
    return sorted(methods)


def finish(schema: dict[str, Any], open_paths: frozenset[str], token_set: bool) -> dict[str, Any]:
    """`schema` (FastAPI's) made true to the daemon's answers, in place; returned."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_SCHEMAS:
        components.pop(name, None)
    components.update(openapi_components())
    _, protocol_components = msgspec.json.schema_components(
        (*PROTOCOL_SCHEMAS, InferRequestV2), ref_template="#/components/schemas/{name}"
    )
    components.update(protocol_components)
    problem = {"content": {PROBLEM_JSON: {"schema": ref(ErrorBody)}}}
    for path, operations in schema.get("paths", {}).items():
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            answers = operation.setdefault("responses", {})
            fastapi_422 = answers.get("422", {}).get("content", {}).get("application/json", {})
            if fastapi_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del answers["422"]
            answers.setdefault("500", {"description": "an unexpected error (`internal_error`)", **problem})
            if token_set and path not in open_paths:
                answers.setdefault(
                    "401",
                    {
                        "description": "no bearer token, or a wrong one (`unauthorized`)",
                        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                        **problem,
                    },
                )
    return schema
