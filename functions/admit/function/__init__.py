"""Knative entry of the admit function: `new()` is what the func-python middleware serves."""

from quotaflow.runtime.knative import KnativeFunction


def new() -> KnativeFunction:
    return KnativeFunction("admit")
