"""`quotaflow dev env`: the running local stack's client settings as `export` lines, so that
`eval "$(quotaflow dev env)"` points a shell (the CLI, the example consumer, a test) at it."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quotaflow.devstack import control
from quotaflow.settings import ENV_NAMES, is_kafka_client_variable

# What a client of the stack needs, in the names `Settings.from_env` reads: the brokers and
# every Kafka client property the stack uses (security.protocol, sasl.*, ssl.* on a secured
# cluster), PostgreSQL, Redis, S3, the topic prefix and admit's URL.
CLIENT_SETTINGS = ("kafka_bootstrap", "postgres_url", "redis_url", "s3_endpoint_url",
                   "topic_prefix", "public_url")


def register(dsub: Any) -> None:
    env = dsub.add_parser(
        "env", help="print the running stack's client settings as export lines",
        description="Prints the settings a client needs to use the running local stack, as "
        "shell `export NAME=value` lines, quoted for the shell: "
        "KAFKA_BOOTSTRAP_SERVERS and the Kafka security settings the stack uses "
        "(KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*), POSTGRES_URL, REDIS_URL, "
        "S3_ENDPOINT_URL, QF_TOPIC_PREFIX and admit's URL (QF_PUBLIC_URL). Configure a "
        "shell with: eval \"$(quotaflow dev env)\". Exits 1 with one line when no stack "
        "runs from --state-dir.")
    env.add_argument("--state-dir", type=Path, default=Path(".quotaflow/dev"),
                     help="the running stack's state folder (default .quotaflow/dev)")
    env.set_defaults(func=_env)


def exports(env: Mapping[str, str]) -> str:
    """`export NAME=value` lines for the client settings in `env` (a stack's environment),
    each value quoted for a POSIX shell; empty settings are left out."""
    names = [ENV_NAMES[f] for f in CLIENT_SETTINGS]
    names += sorted(n for n in env if is_kafka_client_variable(n))
    return "".join(f"export {name}={shlex.quote(env[name])}\n"
                   for name in names if env.get(name))


def _env(args: argparse.Namespace) -> int:
    state = control.running_state(args.state_dir)
    if state is None:
        print(f"quotaflow: no local stack runs from {args.state_dir} (start one with "
              "`quotaflow dev up --detach`)", file=sys.stderr)
        return 1
    env: dict[str, str] = dict(state.get("env", {}))
    if state.get("admit_url"):
        env[ENV_NAMES["public_url"]] = str(state["admit_url"])
    sys.stdout.write(exports(env))
    return 0
