"""Finds an adapter class by built-in name or import path (`package.module:Class`) and builds it."""

from __future__ import annotations

import importlib
from typing import Any

from adapters.base import BaseAdapter

BUILTIN_ADAPTERS: dict[str, str] = {
    "echo": "adapters.builtin:EchoAdapter",
    "sleep": "adapters.builtin:SleepAdapter",
    "mlp": "adapters.builtin:MLPAdapter",
    "minilm": "adapters.text:MiniLMAdapter",
    "transformers": "adapters.text:TransformersAdapter",
    "classify-prep": "adapters.classify:ClassifyPrepAdapter",
    "classify-encode": "adapters.classify:ClassifyEncodeAdapter",
    "classify-format": "adapters.classify:ClassifyFormatAdapter",
    "cpu-call": "adapters.call:CallAdapter",
}


def resolve_adapter_class(path: str) -> type[BaseAdapter]:
    """Import `package.module:Class` (or a built-in name); a clear ValueError when it cannot."""
    import_path = BUILTIN_ADAPTERS.get(path, path)
    module_name, _, class_name = import_path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"adapter {path!r} is not a built-in name nor 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"adapter {path!r}: cannot import module {module_name!r}: {exc}") from exc
    adapter_class = getattr(module, class_name, None)
    if not isinstance(adapter_class, type):
        raise ValueError(f"adapter {path!r}: module {module_name!r} has no class {class_name!r}")
    return adapter_class


def build_adapter(adapter_path: str, options: dict[str, Any] | None = None) -> BaseAdapter:
    adapter_class = resolve_adapter_class(adapter_path)
    return adapter_class(**(options or {}))
