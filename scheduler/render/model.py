"""The `render` model: registered when rendering is on, so render jobs live in the job table like
any other (`get_job`, `wait_for`, `cancel_job` and the journal work for them). Its adapter only
validates; render jobs never reach a model worker: `scheduler.render.executor` hands them to the
render process."""

from __future__ import annotations

from typing import Any

from adapters.base import BaseAdapter
from scheduler.errors import InvalidInputError
from workers.render.request import UrlRefused, parse_render_request

RENDER_MODEL = "render"


class RenderModel(BaseAdapter):
    """Inputs: a URL, or the fields of `workers.render.request.RenderRequest`."""

    name = RENDER_MODEL
    device = "auto"
    max_batch_size = 1

    def validate(self, inputs: Any) -> None:
        """ValueError naming the field at fault; InvalidInputError on `url` when the guard refuses it."""
        try:
            parse_render_request(inputs, self.options.get("allow_hosts", ()))
        except UrlRefused as exc:
            raise InvalidInputError(str(exc), field="url") from None

    def predict(self, state: Any, batch: list[Any]) -> list[Any]:
        raise RuntimeError("render jobs run in the render process, not in a model worker")


def render_model_config(allow_hosts: list[str]) -> dict[str, Any]:
    """The `render` model's registration."""
    return {
        "name": RENDER_MODEL,
        "adapter": "scheduler.render.model:RenderModel",
        "options": {"allow_hosts": list(allow_hosts)},
    }
