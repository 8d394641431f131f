"""`quotaflow func`: the Knative functions' files. `generate` renders each step's func.yaml,
pyproject.toml, app.py and function/__init__.py (and the root func.yaml and function/) from
quotaflow/deploy; `prepare` fills build contexts for `kn func deploy --path functions/STEP`."""

from __future__ import annotations

import argparse
from typing import Any

from quotaflow.deploy.context import REPO, prepare
from quotaflow.deploy.generate import stale, write
from quotaflow.deploy.sizing import VARIANTS
from quotaflow.runtime.steps import ALL_STEPS


def register(sub: Any) -> None:
    """Add the `func` command group."""
    f = sub.add_parser("func", help="Knative function files and build contexts")
    fsub = f.add_subparsers(dest="func_command", metavar="ACTION", required=True)
    g = fsub.add_parser("generate", help="write every func.yaml, pyproject.toml, app.py and "
                        "function/__init__.py from the sizing table and templates")
    g.add_argument("--check", action="store_true",
                   help="write nothing; fail if a committed file differs from the output")
    g.set_defaults(func=_generate)
    p = fsub.add_parser("prepare", help="copy the shared runtime into functions/STEP so "
                        "`kn func deploy --path functions/STEP` can build it")
    p.add_argument("steps", nargs="*", metavar="STEP",
                   help=f"steps to prepare: {', '.join(ALL_STEPS)} (default: all six), or a "
                   f"variant's build context: {', '.join(VARIANTS)}")
    p.set_defaults(func=_prepare)


def _generate(args: argparse.Namespace) -> int:
    if args.check:
        differ = stale(REPO)
        for rel in differ:
            print(f"differs from the generator's output: {rel}")
        if differ:
            print("run `quotaflow func generate` and commit the result")
        return 1 if differ else 0
    changed = write(REPO)
    for rel in changed:
        print(f"wrote {rel}")
    print(f"{len(changed)} file(s) written" if changed else "generated files are up to date")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.steps) - set(ALL_STEPS) - set(VARIANTS))
    if unknown:
        print(f"error: unknown step(s) {', '.join(unknown)}; steps are {', '.join(ALL_STEPS)}"
              f" (variants: {', '.join(VARIANTS)})")
        return 2
    for step in args.steps or ALL_STEPS:
        path = prepare(step)
        print(f"prepared {path.relative_to(REPO)}: kn func deploy --path "
              f"{path.relative_to(REPO)}")
    return 0
