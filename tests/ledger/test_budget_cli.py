"""`quotaflow tenant|team|key|price` with budgets, as an operator runs them: money given in
dollars is kept exact, a team or tenant that does not exist is named, exit 2."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from quotaflow.cli.main import main
from tests.services import fresh_database, redis_base


@pytest.fixture(scope="module")
def url() -> str:
    return fresh_database("qf_test_budget_cli")


def _run(url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("POSTGRES_URL", url)
    monkeypatch.setenv("REDIS_URL", f"{redis_base()}/13")
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_a_tenant_with_a_team_keys_and_prices_from_the_command_line(
        url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    code, out = _run(url, monkeypatch, capsys, "tenant", "create", "acme", "--tokens", "1000",
                     "--usd", "20", "--tz", "Europe/Paris")
    assert code == 0 and "1000 tokens and $20.000000 per month (Europe/Paris)" in out
    code, out = _run(url, monkeypatch, capsys, "team", "create", "acme", "ml", "--usd", "5.25")
    assert code == 0 and "$5.250000 per period" in out
    code, out = _run(url, monkeypatch, capsys, "key", "create", "acme", "--team", "ml",
                     "--tokens", "300", "--usd", "0.000001")
    assert code == 0 and out.splitlines()[-1].startswith("qf_")
    code, out = _run(url, monkeypatch, capsys, "price", "set", "smollm2", "--input-per-mtok",
                     "0.15", "--output-per-mtok", "0.60")
    assert code == 0 and "v1" in out
    _run(url, monkeypatch, capsys, "price", "set", "smollm2", "--input-per-mtok", "0.3",
         "--output-per-mtok", "1.2")
    code, out = _run(url, monkeypatch, capsys, "price", "list")
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["smollm2", "1", "0.150000", "0.600000"], ["smollm2", "2", "0.300000", "1.200000"]]
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT k.limit_tokens, k.limit_usd, t.limit_usd, x.limit_usd, "
                           "x.time_zone FROM api_keys k JOIN teams t USING (tenant_id, team_id) "
                           "JOIN tenants x USING (tenant_id)").fetchone()
    assert row == (300, 1, 5_250_000, 20_000_000, "Europe/Paris")


@pytest.mark.parametrize("argv", [("team", "create", "ghost", "ml"),
                                  ("key", "create", "acme", "--team", "ghost")])
def test_a_missing_tenant_or_team_is_named_and_exits_2(
        url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any, argv: tuple[str, ...]) -> None:
    code, out = _run(url, monkeypatch, capsys, *argv)
    assert code == 2 and "ghost" in out
