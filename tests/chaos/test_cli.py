"""`quotaflow chaos` on the command line: its help names every option, and bad arguments are
refused before anything starts. No services needed."""

from __future__ import annotations

import pytest

from quotaflow.cli.main import build_parser


def test_help_names_every_option_and_each_fault_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["chaos", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--requests", "--tenants", "--concurrency", "--faults", "--every-s",
                   "--seed", "--timeout-s", "--model", "--json", "--no-levels",
                   "pg_terminate_backend",
                   "FLUSHDB", "SIGKILL"):
        assert option in text, option


@pytest.mark.parametrize("argv", [["--faults", "pg,disk"], ["--requests", "0"],
                                  ["--model", "gpt"]])
def test_bad_arguments_are_refused_naming_the_problem(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["chaos", *argv])
    assert done.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_default_plan_asks_for_every_fault_kind() -> None:
    args = build_parser().parse_args(["chaos"])
    assert args.faults == ("kill", "broker", "pg", "redis")
    assert (args.requests, args.seed, args.model) == (300, 1, "standin")
    assert args.levels  # the tenant with teams, prices and alerts, unless --no-levels
