"""Knative entry of the reserve function: `new()` is what the func-python middleware serves."""

from events.knative import KnativeFunction


def new() -> KnativeFunction:
    return KnativeFunction("reserve")
