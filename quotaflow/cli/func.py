"""`quotaflow func prepare STEP`: make functions/STEP a self-contained build context.

`kn func deploy --path functions/STEP` builds only what is inside that directory, so the shared
runtime is copied in beside `function/`: the `events` package (with schemas, migrations, Redis
scripts and the topic declaration under events/_data) and the step's own `functions.STEP`
package. The copies are build outputs (.gitignored); run this before every deploy."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from events.resources import data_path

REPO = Path(__file__).resolve().parents[2]
STEPS = ("admit", "estimate", "reserve", "infer", "settle", "record")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "_data")


def register(sub: Any) -> None:
    f = sub.add_parser("func", help="Knative function build contexts")
    fsub = f.add_subparsers(dest="func_command", metavar="ACTION", required=True)
    p = fsub.add_parser("prepare", help="copy the shared runtime into functions/STEP so "
                        "`kn func deploy --path functions/STEP` can build it")
    p.add_argument("steps", nargs="*", metavar="STEP",
                   help=f"steps to prepare: {', '.join(STEPS)} (default: all six)")
    p.set_defaults(func=_prepare)


def prepare(step: str, root: Path = REPO) -> Path:
    target = root / "functions" / step
    events_dst = target / "events"
    shutil.rmtree(events_dst, ignore_errors=True)
    shutil.copytree(REPO / "events", events_dst, ignore=_IGNORE)
    data = events_dst / "_data"
    data.mkdir()
    for name in ("schemas", "migrations", "redis"):
        shutil.copytree(data_path(name), data / name, ignore=_IGNORE)
    shutil.copy2(data_path("topics.yaml"), data / "topics.yaml")
    runtime_dst = target / "quotaflow"
    shutil.rmtree(runtime_dst, ignore_errors=True)
    shutil.copytree(REPO / "quotaflow", runtime_dst, ignore=_IGNORE)
    pkg = target / "functions"
    shutil.rmtree(pkg, ignore_errors=True)
    (pkg / step).mkdir(parents=True)
    shutil.copy2(REPO / "functions" / "__init__.py", pkg / "__init__.py")
    for module in ("__init__.py", "handler.py", "app.py"):
        shutil.copy2(target / module, pkg / step / module)
    return target


def _prepare(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        print(f"error: unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEPS)}")
        return 2
    for step in args.steps or STEPS:
        path = prepare(step)
        print(f"prepared {path.relative_to(REPO)}: kn func deploy --path "
              f"{path.relative_to(REPO)}")
    return 0
