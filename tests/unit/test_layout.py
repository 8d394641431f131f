"""The layout's promises, read from the code's own imports: `events` is the wire and imports
nothing of the runtime, a step's code in `functions/` sees only the wire and the runtime's
ports and step machinery, the door and the steps open no adapter of their own (the composition
root, `quotaflow/compose.py`, does), and no module imports itself back through others."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "quotaflow", "functions", "function")
# What a step in functions/ may import of our own code.
FUNCTIONS_MAY_IMPORT = ("events", "quotaflow.ports", "quotaflow.runtime")
MAX_MODULE_LINES = 250


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO)
            # Build contexts filled by `quotaflow func prepare` hold copies: not sources.
            if package == "functions" and len(rel.parts) > 3 \
                    and rel.parts[2] in ("events", "quotaflow", "functions"):
                continue
            parts = list(rel.with_suffix("").parts)
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
    wrong = {(m, i) for m in MODULES if m.startswith("events")
             for i in _imports(m) if not i.startswith("events")}
    assert not wrong, sorted(wrong)


def test_steps_import_only_the_wire_and_the_runtimes_ports_and_step_machinery() -> None:
    wrong = {(m, i) for m in MODULES if m.startswith(("functions", "function"))
             for i in _imports(m)
             if not i.startswith((*FUNCTIONS_MAY_IMPORT, "functions", "function"))}
    assert not wrong, sorted(wrong)


# Adapters with no I/O, which anyone may use.
PURE_ADAPTERS = ("quotaflow.adapters.api_keys",)


def test_the_door_and_the_steps_take_their_adapters_from_the_composition_root() -> None:
    wrong = {(m, i) for m in MODULES
             if m.startswith(("quotaflow.runtime.door", "functions", "function"))
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
