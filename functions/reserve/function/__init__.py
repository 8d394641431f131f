"""Knative entry of the reserve function: `new()` is what the func-python middleware serves."""

from quotaflow.runtime.knative import KnativeFunction


def new() -> KnativeFunction:
    return KnativeFunction("reserve")
