"""Presets: `create_development_scheduler`, `create_production_scheduler` and `SchedulerFactory`."""

from __future__ import annotations

import enum
from typing import Any

from scheduler.scheduler import ASYNC, MULTIPROCESS, Scheduler
from scheduler.settings import Settings, load_settings


class SchedulerType(enum.StrEnum):
    MULTIPROCESS = MULTIPROCESS  # worker processes pinned to GPUs (or CPU workers)
    ASYNC = ASYNC  # models run inside the main process, behind the same API: for development


def create_development_scheduler(
    max_workers_per_gpu: int = 1,
    model_subset: list[str] | None = None,
    reduce_vram_requirements: bool | None = None,
    scheduler_type: SchedulerType | str = SchedulerType.MULTIPROCESS,
    **overrides: Any,
) -> Scheduler:
    """The dev preset (`configs/dev.toml`): echo, sleep, mlp and minilm; one worker per GPU, or a CPU
    worker. `reduce_vram_requirements` (default: the setting, `MODELSCHED_REDUCE_VRAM_REQUIREMENTS`)
    counts every model at half its declared `vram_mb`."""
    if reduce_vram_requirements is not None:
        overrides["reduce_vram_requirements"] = reduce_vram_requirements
    settings = load_settings("dev", overrides={"max_workers_per_gpu": max_workers_per_gpu, **overrides})
    return _build(settings, model_subset, scheduler_type)


def create_production_scheduler(
    model_subset: list[str] | None = None,
    config_file: str | None = None,
    **overrides: Any,
) -> Scheduler:
    """The prod preset (`configs/prod.toml`): two workers per GPU, a durable journal."""
    settings = load_settings("prod", config_file=config_file, overrides=overrides)
    return _build(settings, model_subset, SchedulerType.MULTIPROCESS)


def _build(
    settings: Settings, model_subset: list[str] | None, scheduler_type: SchedulerType | str
) -> Scheduler:
    if model_subset is not None:
        pipelines = {pipeline.name: pipeline for pipeline in settings.pipelines}
        known = {model.name for model in settings.models} | ({"render"} if settings.render_enabled else set())
        unknown = set(model_subset) - known - set(pipelines)
        if unknown:
            raise ValueError(f"model_subset names unknown models: {sorted(unknown)}")
        wanted = set(model_subset)
        for name in model_subset:  # a pipeline named keeps its stages' models
            if name in pipelines:
                wanted |= {
                    stage if isinstance(stage, str) else stage.model for stage in pipelines[name].stages
                }
        settings.models = [model for model in settings.models if model.name in wanted]
        settings.pipelines = [
            pipeline
            for pipeline in settings.pipelines
            if all((stage if isinstance(stage, str) else stage.model) in wanted for stage in pipeline.stages)
        ]
        settings.render_enabled = settings.render_enabled and "render" in model_subset  # the render process
    return Scheduler(settings, scheduler_type=SchedulerType(scheduler_type).value)


class SchedulerFactory:
    @staticmethod
    def create_scheduler(
        scheduler_type: SchedulerType | str = SchedulerType.MULTIPROCESS,
        preset: str = "dev",
        **options: Any,
    ) -> Scheduler:
        if preset == "prod":
            if SchedulerType(scheduler_type) is SchedulerType.ASYNC:
                raise ValueError("the ASYNC scheduler type is for development; use the dev preset")
            return create_production_scheduler(**options)
        return create_development_scheduler(scheduler_type=scheduler_type, **options)
