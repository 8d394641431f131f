"""The `AdmissionGate` contract for the budget levels below the tenant, on the same gates as
test_gate_port (the in-memory gate; Redis plain, over TLS, a 3-master Cluster; each alone and
grouped): a request whose key's or team's projected remaining tokens cannot cover what it
needs is refused naming that level (the key first), with what it has left, and nothing is
recorded or held; within them it goes through as before. `-k memory` runs the fake alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quotaflow.events.status import LevelScope
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Kind
from quotaflow.ports import Screening, ScreenQuery
from tests.contract import test_gate_port as base
from tests.redis_servers import REDIS_VARIANTS

NOW_MS = 1_795_953_600_000  # 2026-11-29 12:00 UTC


@pytest.fixture(params=["memory", *REDIS_VARIANTS, *(f"{v}-grouped" for v in REDIS_VARIANTS)])
def gate(request: pytest.FixtureRequest) -> base.Gate:
    """A gate whose projection holds acme's grant of 1,000 tokens and two reservations of
    team ml's: 60 tokens at key k1 and 30 at key k2; k3 (no team) holds nothing."""
    g = base._memory() if request.param == "memory" else base._redis(
        request.param.removesuffix("-grouped"), request.param.endswith("-grouped"))
    at = datetime(2026, 11, 29, tzinfo=UTC)
    g.apply([StoredEvent(1, "acme", 1, Kind.QUOTA_GRANTED, None, "2026-11", 1000, 0, None, at),
             StoredEvent(2, "acme", 2, Kind.TOKENS_RESERVED, "r1", "2026-11", 60, 0, None, at,
                         "k1", "ml", 600),
             StoredEvent(3, "acme", 3, Kind.TOKENS_RESERVED, "r2", "2026-11", 30, 0, None, at,
                         "k2", "ml", 300)])
    return g


def screen(g: base.Gate, request_id: str, key_id: str = "k1", needs: int = 10,
           key_limit: int | None = None, team: str | None = "ml",
           team_limit: int | None = None, tpm: int = 0) -> Screening:
    return g.gate.screen(ScreenQuery(request_id, "h", key_id, NOW_MS // 60_000, "acme",
                                     "2026-11", 10_000, needs, tpm, 0, NOW_MS, needs, key_limit,
                                     team, team_limit))


def test_a_key_whose_projected_tokens_cannot_cover_the_request_is_refused_naming_it(
        gate: base.Gate) -> None:
    refused = screen(gate, "a", needs=41, key_limit=100, team_limit=10_000)
    assert (refused.over_level, refused.level_remaining, refused.over) == (
        LevelScope.KEY, 40, None)
    # Refused: nothing was recorded, so the same id screened again is counted, not known.
    again = screen(gate, "a", needs=40, key_limit=100)
    assert (again.known_hash, again.over_level) == (None, None)
    assert screen(gate, "a", needs=40, key_limit=100).known_hash == "h"


def test_a_team_whose_keys_together_hold_too_much_refuses_another_keys_request(
        gate: base.Gate) -> None:
    # k2 itself holds 30 of no limit; its team holds 90 of 100.
    refused = screen(gate, "b", key_id="k2", needs=11, team_limit=100)
    assert (refused.over_level, refused.level_remaining) == (LevelScope.TEAM, 10)
    # The key is screened first: both over, the key is named.
    both = screen(gate, "c", key_id="k2", needs=11, key_limit=35, team_limit=100)
    assert (both.over_level, both.level_remaining) == (LevelScope.KEY, 5)
    assert screen(gate, "d", key_id="k2", needs=10, team_limit=100).over_level is None


def test_a_level_refusal_holds_none_of_the_keys_tokens_per_minute(gate: base.Gate) -> None:
    assert screen(gate, "e", needs=50, key_limit=100, tpm=60).over_level is LevelScope.KEY
    let = screen(gate, "f", needs=40, key_limit=100, tpm=60)
    assert (let.over_level, let.over) == (None, None)  # 40 of the minute's 60, not 90


def test_unlimited_levels_and_a_key_with_no_team_are_not_screened(gate: base.Gate) -> None:
    assert screen(gate, "g", needs=900).over_level is None
    assert screen(gate, "h", key_id="k3", needs=900, team=None, team_limit=0).over_level is None
    fresh = screen(gate, "i", key_id="k3", needs=5, key_limit=4, team=None)
    assert (fresh.over_level, fresh.level_remaining) == (LevelScope.KEY, 4)
