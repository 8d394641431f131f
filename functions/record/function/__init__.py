"""Knative entry of the record function: `new()` is what the func-python middleware serves."""

from quotaflow.runtime.knative import KnativeFunction


def new() -> KnativeFunction:
    return KnativeFunction("record")
