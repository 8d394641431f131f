"""`quotaflow` command line. Each command group lives in its own module with a
`register(subparsers)` function; this file only wires them, and answers an outage of
PostgreSQL, Redis or Kafka (`quotaflow.runtime.faults.is_infrastructure`) with one line on
stderr and exit status 3 instead of a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from quotaflow import __version__
from quotaflow.settings import SettingsError

# The exit status when a backing service is down (the commands use 1 and 2 for their own).
UNAVAILABLE_EXIT = 3

_GROUPS = (
    "quotaflow.cli.dev",
    "quotaflow.cli.tenant",
    "quotaflow.cli.key",
    "quotaflow.cli.ledger",
    "quotaflow.cli.usage",
    "quotaflow.cli.analytics",
    "quotaflow.cli.alert",
    "quotaflow.cli.model",
    "quotaflow.cli.ops",
    "quotaflow.cli.func",
    "quotaflow.cli.chaos",
    "quotaflow.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotaflow",
        description="ML inference behind exact token quotas: local stack, tenants, ledger "
        "audit, model registry and the six pipeline functions.",
    )
    parser.add_argument("--version", action="version", version=f"quotaflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except SettingsError as exc:  # a malformed variable: one line naming it, no traceback
        raise SystemExit(f"quotaflow: {exc}") from None
    except Exception as exc:
        from quotaflow.runtime.faults import describe, is_infrastructure

        if not is_infrastructure(exc):
            raise
        print(f"quotaflow {args.command}: {describe(exc)}", file=sys.stderr)
        return UNAVAILABLE_EXIT
    return code


if __name__ == "__main__":
    raise SystemExit(main())
