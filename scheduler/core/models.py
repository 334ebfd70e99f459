"""The main process's registry of models: each model's spec (knobs resolved against its adapter
class) and an unloaded adapter instance used only to validate inputs at submission."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.base import BaseAdapter
from adapters.registry import build_adapter
from scheduler.errors import ConfigError, InvalidInputError, ModelNotFoundError
from scheduler.settings import ModelConfig
from workers.protocol import BatchPolicy, ModelSpec

DEVICES = ("auto", "gpu", "cpu")


def input_validator(adapter_path: str, options: dict[str, Any]) -> Callable[[Any], None]:
    """The `validate` of a new adapter of that class (`module:Class`) and options: an HTTP front's own
    copy of a model's checks (`BaseAdapter.validate_in_fronts`)."""
    return build_adapter(adapter_path, options).validate


def resolve_spec(
    config: ModelConfig | dict[str, Any], vram_scale: float = 1.0
) -> tuple[ModelSpec, BaseAdapter]:
    """A config (unset knobs None) -> a full spec using the adapter class's defaults, and the adapter."""
    config = model_config(config)
    try:
        adapter = build_adapter(config.adapter, config.options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"models.{config.name}.adapter: {exc}") from None
    device = config.device or adapter.device
    if device not in DEVICES:
        raise ConfigError(
            f"models.{config.name}.device: must be one of {', '.join(DEVICES)} (got {device!r})"
        )
    max_batch_size = config.max_batch_size or adapter.max_batch_size
    if max_batch_size < 1:
        raise ConfigError(f"models.{config.name}.max_batch_size: must be at least 1")
    max_delay_ms = adapter.max_delay_ms if config.max_delay_ms is None else config.max_delay_ms
    if max_delay_ms < 0:
        raise ConfigError(f"models.{config.name}.max_delay_ms: must not be negative")
    vram_mb = adapter.vram_mb if config.vram_mb is None else config.vram_mb
    if vram_mb < 0:
        raise ConfigError(f"models.{config.name}.vram_mb: must not be negative")
    batch_policy = _batch_policy(config.batch_policy or adapter.batch_policy, config.name)
    spec = ModelSpec(
        name=config.name,
        adapter=config.adapter,
        vram_mb=int(vram_mb * vram_scale),
        device=device,
        max_batch_size=max_batch_size,
        max_delay_ms=float(max_delay_ms),
        batch_policy=batch_policy,
        options=dict(config.options),
    )
    return spec, adapter


def model_config(config: ModelConfig | dict[str, Any]) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    try:
        return ModelConfig(**config)
    except TypeError as exc:
        raise ConfigError(f"model config: {exc}") from None


def _batch_policy(value: str, model: str) -> BatchPolicy:
    if value == "adaptive":
        return "adaptive"
    if value == "fixed":
        return "fixed"
    raise ConfigError(f"models.{model}.batch_policy: must be adaptive or fixed (got {value!r})")


@dataclass
class RegisteredModel:
    """A model as the main process knows it: its spec, an unloaded adapter (to validate inputs), why
    no worker can ever run it (`no_fit`, set once the workers are known) and its load back-off."""

    spec: ModelSpec
    adapter: BaseAdapter
    no_fit: str | None = None
    failed_error: str | None = None
    failed_until: float = 0.0
    preload: bool = False  # kept loaded on some worker from the start (`scheduler.core.readiness`)
    preload_paused: bool = False  # unloaded by request: not loaded again until a load is asked for


class ModelRegistry:
    """Every registered model by name."""

    def __init__(self) -> None:
        self.models: dict[str, RegisteredModel] = {}

    def register(self, spec: ModelSpec, adapter: BaseAdapter, preload: bool = False) -> None:
        self.models[spec.name] = RegisteredModel(spec, adapter, preload=preload)

    def get(self, name: str) -> RegisteredModel:
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFoundError(f"unknown model {name!r} (registered: {known})")
        return model

    def validate(self, name: str, inputs: Any) -> RegisteredModel:
        model = self.get(name)
        try:
            model.adapter.validate(inputs)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(str(exc)) from None
        return model

    def specs(self) -> list[ModelSpec]:
        return [model.spec for model in self.models.values()]

    def __contains__(self, name: str) -> bool:
        return name in self.models
