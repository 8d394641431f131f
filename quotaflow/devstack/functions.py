"""The processes of a local stack's functions: admit, each consumer step (N members each with
`--replicas`), the analytics and alerts consumers, or the Knative mode's (`knative_mode`). On a
secured cluster each process connects as its function's own Kafka user (`LocalBroker.client_env`),
so the ACLs of its KafkaUser are what it meets here too."""

from __future__ import annotations

import sys
from typing import Protocol

from quotaflow.devstack import knative_mode, replicas
from quotaflow.devstack.brokers import LocalBroker
from quotaflow.devstack.process import free_port
from quotaflow.devstack.serving import admit_server_argv
from quotaflow.runtime.steps import CONSUMER_STEPS
from quotaflow.settings import Settings


class Stack(knative_mode.Stack, Protocol):
    """What starting the functions needs of the stack (`stack.DevStack`)."""

    settings: Settings
    child_env: dict[str, str]
    kafka: LocalBroker | None
    knative: bool
    replicas: int
    admit_workers: int
    admit_access_log: bool


def start_all(stack: Stack) -> None:
    """Start every function's process."""
    if stack.knative:  # one delivery process runs the five; as the stack's admin user
        knative_mode.spawn(stack, function_env(stack, ""))
        start_process(stack, "alerts", "alerts")  # a Deployment on a cluster, not a function
        return
    for step, name in replicas.members(CONSUMER_STEPS, stack.replicas):
        start_process(stack, name, step)
    start_process(stack, "analytics", "analytics")  # the usage roll-ups, beside the steps
    start_process(stack, "alerts", "alerts")  # threshold alerts, from the ledger topic
    start_process(stack, "admit", "admit")


def function_env(stack: Stack, function: str) -> dict[str, str]:
    """The stack's settings, and `function`'s own Kafka user if secured ("": the admin)."""
    # infer's model threads spin between operators unless QF_ORT_SPIN=0: 8-10 % more
    # tokens/s through the local pipeline, in six alternating pairs (BENCHMARKS.md).
    return {**stack.settings.as_env(), **stack.child_env, "PYTHONUNBUFFERED": "1",
            **(stack.kafka.client_env(function) if stack.kafka and function else {})}


def start_process(stack: Stack, name: str, function: str) -> None:
    """Start process `name` of `function` (admit, a step, analytics, alerts)."""
    env = function_env(stack, function)
    if function == "admit":
        stack._spawn(name, admit_server_argv(stack.admit_port, stack.admit_workers,
                                             access_log=stack.admit_access_log), env)
        return
    stack.metrics_ports[name] = free_port()
    env["QF_METRICS_PORT"] = str(stack.metrics_ports[name])
    command = ["run", function] if function in CONSUMER_STEPS else [function, "run"]
    stack._spawn(name, [sys.executable, "-m", "quotaflow", *command], env)
