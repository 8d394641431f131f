"""The installed runtime never loads the benchmarks or what only they need: `benchmarks/` is a
checkout's folder outside the wheel, and matplotlib and psutil come with the `dev` extra only.
`quotaflow bench` imports the benchmarks when it runs, never when the CLI is built."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quotaflow.cli.main import main

REPO = Path(__file__).resolve().parents[2]
NEVER = ("matplotlib", "psutil", "benchmarks")

# In a fresh interpreter: the CLI with every command registered, the six steps' and the
# all-in-one function's entries, then every module of the runtime packages.
PROBE = """
import importlib, json, pkgutil, sys
import quotaflow.cli.main
quotaflow.cli.main.build_parser()
for entry in ["function", *(f"quotaflow.functions.{s}.app" for s in
              ("admit", "estimate", "reserve", "infer", "settle", "record"))]:
    importlib.import_module(entry)
import quotaflow


def walk(path, prefix):
    # quotaflow.events and quotaflow.functions are walked through their symlinks; never the
    # build contexts `quotaflow func prepare` fills (functions/<step>/quotaflow/...: copies)
    for found in pkgutil.iter_modules(path, prefix):
        name = found.name
        if name.rpartition(".")[2] == "__main__" or \
                name.startswith("quotaflow.functions.") and name.count(".") == 3 and \
                name.rpartition(".")[2] in ("quotaflow", "events", "functions"):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed: nothing to load
            continue
        if found.ispkg:
            walk(module.__path__, name + ".")


walk(quotaflow.__path__, "quotaflow.")
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules
                        if m.partition(".")[0] in sys.argv[1:]})))
"""


def test_importing_the_runtime_loads_no_plotting_cpu_or_benchmark_module() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *NEVER], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_only_the_bench_command_imports_the_benchmarks_and_only_when_it_runs() -> None:
    where: list[str] = []
    for package in ("events", "quotaflow", "functions", "function"):
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO)
            # build contexts filled by `quotaflow func prepare` hold copies: not sources
            if rel.parts[0] == "functions" and len(rel.parts) > 3 \
                    and rel.parts[2] in ("events", "quotaflow", "functions"):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.partition(".")[0] in NEVER for n in names):
                    where.append(f"{rel}:{node.col_offset == 0}")
    # quotaflow/cli/bench.py, inside its command function (not at the top of the module)
    assert sorted(set(where)) == ["quotaflow/cli/bench.py:False"], where


def test_the_bench_command_without_the_benchmarks_says_in_one_line_how_to_get_them(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("benchmarks", "benchmarks.run", "benchmarks.wrk"):
        monkeypatch.setitem(sys.modules, name, None)  # as in a wheel without a checkout
    assert main(["bench", "--quick", "--no-docs"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "checkout" in err and "dev" in err
