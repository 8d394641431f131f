"""The one list of pipeline steps: the ones that consume Kafka, by name, and admit (the
HTTP door, which has no `Step`: `functions/admit/handler.py` says why)."""

from __future__ import annotations

from importlib import import_module

from quotaflow.runtime.step import AnyStep

CONSUMER_STEPS = ("estimate", "reserve", "infer", "settle", "record")
ALL_STEPS = ("admit", *CONSUMER_STEPS)


def load_step(name: str) -> AnyStep:
    """The `STEP` of `functions/<name>/handler.py`."""
    if name not in CONSUMER_STEPS:
        raise KeyError(f"unknown step {name!r}; steps are {', '.join(CONSUMER_STEPS)}")
    step: AnyStep = import_module(f"quotaflow.functions.{name}.handler").STEP
    return step
