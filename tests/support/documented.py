"""Whether a real answer is what the daemon's OpenAPI document says the route sends: the route (by its
path template), the status code among the route's documented responses, the media type among that
response's, and the body valid against its schema (JSON Schema, with the document's components)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema_rs

ERROR_MEDIA_TYPES = ("application/problem+json", "application/json")


@dataclass
class Documented:
    """The OpenAPI document of a daemon, read once; `problems(method, path, answer)` lists what in an
    answer the document does not say."""

    schema: dict[str, Any]
    templates: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    validators: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for template in self.schema["paths"]:
            parts = re.split(r"(\{[^}]+\})", template)
            pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
            self.templates.append((re.compile(f"^{pattern}$"), template))
        self.templates.sort(key=lambda item: item[1].count("{"))  # literal paths before templates

    def template(self, method: str, path: str) -> str | None:
        """The template of the operation that answers `method path`, as the router would pick it."""
        for pattern, template in self.templates:
            if pattern.match(path) and method.lower() in self.schema["paths"][template]:
                return template
        return None

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        template = self.template(method, path)
        if template is None:
            return None
        operation: dict[str, Any] = self.schema["paths"][template][method.lower()]
        return operation

    def problems(self, method: str, path: str, answer: httpx.Response) -> list[str]:
        where = f"{method} {path} -> {answer.status_code}"
        operation = self.operation(method, path)
        if operation is None:
            return [f"{where}: no such operation documented"]
        response = operation["responses"].get(str(answer.status_code))
        if response is None:
            return [f"{where}: status not documented ({sorted(operation['responses'])}): {answer.text[:200]}"]
        media_type = answer.headers.get("content-type", "").split(";")[0].strip()
        content = {key.split(";")[0].strip(): value for key, value in response.get("content", {}).items()}
        if media_type not in content:
            return [f"{where}: media type {media_type!r} not documented ({sorted(content)})"]
        body_schema = content[media_type].get("schema")
        if body_schema is None or not media_type.endswith("json"):
            return []
        key = f"{operation['operationId']} {answer.status_code} {media_type}"
        validator = self.validators.get(key)
        if validator is None:
            validator = self.validators[key] = jsonschema_rs.validator_for(
                {**body_schema, "components": self.schema["components"]}
            )
        errors = [error.message for error in validator.iter_errors(answer.json())]
        return [f"{where}: body does not fit its schema: {errors[:3]}: {answer.text[:200]}"] if errors else []


def documented(client: httpx.Client) -> Documented:
    return Documented(client.get("/openapi.json").json())
