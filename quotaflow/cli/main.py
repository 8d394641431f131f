"""`quotaflow` command line. Each command group lives in its own module with a
`register(subparsers)` function; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from quotaflow import __version__
from quotaflow.settings import SettingsError

_GROUPS = (
    "quotaflow.cli.dev",
    "quotaflow.cli.tenant",
    "quotaflow.cli.key",
    "quotaflow.cli.ledger",
    "quotaflow.cli.usage",
    "quotaflow.cli.analytics",
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
    return code


if __name__ == "__main__":
    raise SystemExit(main())
