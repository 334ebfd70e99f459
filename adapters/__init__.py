"""Model adapters: the protocol a model author implements, the registry, and the built-in models."""

from adapters.base import Adapter, BaseAdapter, ItemError
from adapters.registry import BUILTIN_ADAPTERS, build_adapter, resolve_adapter_class

__all__ = [
    "Adapter",
    "BaseAdapter",
    "BUILTIN_ADAPTERS",
    "ItemError",
    "build_adapter",
    "resolve_adapter_class",
]
