"""Knative entry of the root func.yaml: the all-in-one function for small installs (admit's
HTTP door plus the five pipeline steps as Kafka loops in one process)."""

from quotaflow.runtime.knative import KnativeFunction


def new() -> KnativeFunction:
    return KnativeFunction("all")
