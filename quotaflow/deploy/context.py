"""`quotaflow func prepare STEP`: make functions/STEP a self-contained build context.

`kn func deploy --path functions/STEP` builds only what is inside that directory, so the shared
code is copied in beside `function/`, as the one package `quotaflow`: the runtime, the wire as
`quotaflow/events` (with schemas, migrations, Redis scripts and the topic declaration under
quotaflow/events/_data) and the steps' modules as `quotaflow/functions`: every step's, not only
STEP's, since the composition root (`quotaflow/compose.py`) imports each step's ports. The
copies are build outputs (.gitignored); run this before every deploy."""

from __future__ import annotations

import shutil
from pathlib import Path

from quotaflow.events.resources import data_path
from quotaflow.runtime.steps import ALL_STEPS

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "_data")


def _runtime_only(folder: str, names: list[str]) -> set[str]:
    # quotaflow/events and quotaflow/functions are symlinks to the top-level folders: copied on
    # their own below, never followed (functions/ holds the build contexts, this one included).
    skip = {"events", "functions"} if Path(folder).resolve() == REPO / "quotaflow" else set()
    return skip | _IGNORE(folder, names)


def prepare(step: str, root: Path = REPO) -> Path:
    """Fill root/functions/STEP with the shared code (from this checkout); its path."""
    target = root / "functions" / step
    for stale in ("events", "functions"):  # where copies went before the one package name
        shutil.rmtree(target / stale, ignore_errors=True)
    runtime_dst = target / "quotaflow"
    shutil.rmtree(runtime_dst, ignore_errors=True)
    shutil.copytree(REPO / "quotaflow", runtime_dst, ignore=_runtime_only)
    events_dst = runtime_dst / "events"
    shutil.copytree(REPO / "events", events_dst, ignore=_IGNORE)
    data = events_dst / "_data"
    data.mkdir()
    for name in ("schemas", "migrations", "redis"):
        shutil.copytree(data_path(name), data / name, ignore=_IGNORE)
    shutil.copy2(data_path("topics.yaml"), data / "topics.yaml")
    pkg = runtime_dst / "functions"
    pkg.mkdir()
    shutil.copy2(REPO / "functions" / "__init__.py", pkg / "__init__.py")
    for name in ALL_STEPS:
        (pkg / name).mkdir()
        for module in sorted((REPO / "functions" / name).glob("*.py")):
            shutil.copy2(module, pkg / name / module.name)
    return target
