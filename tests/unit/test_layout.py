"""The layout's promises, read from the code's own imports: `quotaflow.events` is the wire and
imports nothing of the runtime, a step's code in `functions/` sees only the wire and the
runtime's ports and step machinery, the door and the steps open no adapter of their own (the
composition root, `quotaflow/compose.py`, does), no module imports itself back through others,
and nothing of ours imports `events`, `functions` or `function`, names other distributions
install: the wheel installs the one top-level name `quotaflow`."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The folders of the card and the runtime, by the module name their files import as: the wheel
# installs one top-level name, `quotaflow` (events/ and functions/ through the committed
# symlinks quotaflow/events and quotaflow/functions); the root function/ is the root func.yaml's
# Knative entry, imported by that name only by kn func's middleware.
PACKAGES = {"quotaflow": "quotaflow", "events": "quotaflow.events",
            "functions": "quotaflow.functions", "function": "function"}
# What a step in functions/ may import of our own code.
FUNCTIONS_MAY_IMPORT = ("quotaflow.events", "quotaflow.ports", "quotaflow.runtime")
MAX_MODULE_LINES = 250
# Names other distributions on PyPI install too: nothing of ours imports them.
TAKEN_NAMES = ("events", "functions", "function")
TAKEN_IMPORT = re.compile(r"^[ \t]*(from|import)[ \t]+(events|functions|function)\b", re.M)


def _sources(folder: str) -> Iterator[Path]:
    # rglob does not follow the symlinks quotaflow/events and quotaflow/functions: each file once.
    for path in (REPO / folder).rglob("*.py"):
        rel = path.relative_to(REPO)
        # Build contexts filled by `quotaflow func prepare` hold copies: not sources.
        if rel.parts[0] == "functions" and len(rel.parts) > 3 \
                and rel.parts[2] in ("events", "quotaflow", "functions", "build"):
            continue
        yield path


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in _sources(folder):
            parts = [name, *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> Iterator[str]:
    """Every first-party module `module` imports, at the top or inside a function."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


def test_the_wire_imports_nothing_of_the_runtime_or_the_steps() -> None:
    wrong = {(m, i) for m in MODULES if m.startswith("quotaflow.events")
             for i in _imports(m) if not i.startswith("quotaflow.events")}
    assert not wrong, sorted(wrong)


def test_steps_import_only_the_wire_and_the_runtimes_ports_and_step_machinery() -> None:
    wrong = {(m, i) for m in MODULES if m.startswith(("quotaflow.functions", "function"))
             for i in _imports(m)
             if not i.startswith((*FUNCTIONS_MAY_IMPORT, "quotaflow.functions"))}
    assert not wrong, sorted(wrong)


# Adapters with no I/O, which anyone may use.
PURE_ADAPTERS = ("quotaflow.adapters.api_keys",)


def test_the_door_and_the_steps_take_their_adapters_from_the_composition_root() -> None:
    wrong = {(m, i) for m in MODULES
             if m.startswith(("quotaflow.runtime.door", "quotaflow.functions", "function"))
             for i in _imports(m)
             if i.startswith("quotaflow.adapters") and i not in PURE_ADAPTERS}
    assert not wrong, sorted(wrong)


def test_no_module_imports_itself_back_through_others() -> None:
    graph = {m: set(_imports(m)) for m in MODULES}
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        if m in done:
            return
        if m in visiting:
            cycles.append([*visiting[visiting.index(m):], m])
            return
        visiting.append(m)
        for n in sorted(graph[m]):
            visit(n)
        visiting.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert not cycles, cycles


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_stays_readable_in_size(module: str) -> None:
    # Comment lines do not count: a why-comment is worth more than the line it costs, and none
    # should be deleted to keep a module under the limit.
    lines = sum(1 for line in MODULES[module].read_text().splitlines()
                if not line.lstrip().startswith("#"))
    assert lines <= MAX_MODULE_LINES, f"{MODULES[module].relative_to(REPO)}: {lines} lines"


def test_no_code_of_ours_imports_a_top_level_name_another_distribution_installs() -> None:
    folders = (*PACKAGES, "tests", "benchmarks", "kafka", "infra")
    wrong = []
    for path in (p for folder in folders for p in _sources(folder)):
        text = path.read_text()
        if not TAKEN_IMPORT.search(text):  # parsing every file would take seconds
            continue
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            wrong += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                      if n.partition(".")[0] in TAKEN_NAMES]
    assert not wrong, wrong


def test_the_wheel_installs_the_one_top_level_name_quotaflow() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["quotaflow"]
    assert all(dst.startswith("quotaflow/") for dst in wheel["force-include"].values())
    # the card's folders stay at the top of the checkout, inside the package by relative links
    for folder in ("events", "functions"):
        link = REPO / "quotaflow" / folder
        assert link.is_symlink() and link.readlink() == Path("..", folder), link
    # mypy reads each file under one module name only: events/ and functions/ through quotaflow
    assert not set(project["tool"]["mypy"]["files"]) & {"events", "functions"}
