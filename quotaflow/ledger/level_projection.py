"""The Redis projection's keys, and its budget levels, pure: which hashes a ledger event moves
and by how much, and the names of those hashes.

Each level of a period (the tenant, a team, a key) is one hash
`qf:{tenant}:level:<scope>:<name>:<period>` with the fields of `level_balances`
(reserved_tokens, spent_tokens, reserved_usd, spent_usd) and, like the tenant's balance hash,
the sequence it is exact at (`seq`). A team's and a key's hash carry their tenant's hash tag:
on a Redis Cluster every hash an event moves (its tenant's balance and its three levels) and
every hash admit's screen reads sit in the tenant's one slot, so each script call stays in
one slot (`quotaflow.ledger.projection` says why the tag is the tenant). The tenant's money
has a level hash of its own, not fields in its balance hash: the two are rebuilt from two
snapshot statements, each exact at its own sequence, and one hash records one sequence."""

from __future__ import annotations

from dataclasses import dataclass

from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger.budgets import Hold, LevelBalance, apply_hold
from quotaflow.ledger.commands import StoredEvent

PREFIX = "qf:"
LEVEL_FIELDS = ("reserved_tokens", "spent_tokens", "reserved_usd", "spent_usd")
LEVEL_PATTERN = PREFIX + "{*}:level:*"
_MOVES_LEVELS = (LedgerKind.TOKENS_RESERVED, LedgerKind.RESERVATION_SETTLED,
                 LedgerKind.RESERVATION_RELEASED, LedgerKind.RESERVATION_EXPIRED)

LevelKey = tuple[str, str, str]  # (scope, level_id, period), level_id as in level_balances


def tenant_tag(tenant: str) -> str:
    """The prefix of every key of `tenant`'s, with the tenant as its hash tag: its keys share
    one slot on a Redis Cluster. The whole name is the tag because a tenant's name holds no
    brace (`tenant_store`: a-z, 0-9 and '-')."""
    return f"{PREFIX}{{{tenant}}}:"


def balance_key(tenant: str, period: str) -> str:
    """The Redis hash of one (tenant, period) balance."""
    return f"{tenant_tag(tenant)}balance:{period}"


def tenant_period(key: str) -> tuple[str, str]:
    """`balance_key`'s inverse."""
    tenant, _, period = key.removeprefix(PREFIX + "{").rpartition("}:balance:")
    return tenant, period


@dataclass(frozen=True)
class LevelRow:
    """One row of the ledger's `level_balances` snapshot, with the tenant it belongs to."""

    tenant: str
    scope: LevelScope
    level_id: str  # a team's is `tenant/team`, as in level_balances
    period: str
    balance: LevelBalance


def level_key(tenant: str, scope: LevelScope, level_id: str, period: str) -> str:
    """The Redis hash of one level's period; `level_id` as in level_balances."""
    name = level_id.partition("/")[2] if scope is LevelScope.TEAM else level_id
    return f"{tenant_tag(tenant)}level:{scope.value}:{name}:{period}"


def parse_level_key(key: str) -> LevelKey:
    """`level_key`'s inverse: (scope, level_id, period). Periods hold no ':'; a team's and a
    tenant's names hold none either (a-z, 0-9 and '-')."""
    tenant, _, rest = key.removeprefix(PREFIX + "{").partition("}:level:")
    scope, _, name_period = rest.partition(":")
    name, _, period = name_period.rpartition(":")
    level_id = f"{tenant}/{name}" if scope == LevelScope.TEAM.value else name
    return scope, level_id, period


def event_levels(ev: StoredEvent) -> list[tuple[LevelScope, str]]:
    """The levels an event moves, (scope, level_id): none for a grant or a rejection; else
    its tenant, its key and its team (those it names)."""
    if ev.kind not in _MOVES_LEVELS:
        return []
    out = [(LevelScope.TENANT, ev.tenant)]
    if ev.key_id is not None:
        out.append((LevelScope.KEY, ev.key_id))
    if ev.team_id is not None:
        out.append((LevelScope.TEAM, f"{ev.tenant}/{ev.team_id}"))
    return out


def event_hold(ev: StoredEvent) -> Hold:
    """What the event moves at each of its levels (as `audit_levels` replays it): a
    settlement returns what it did not charge, in tokens and in money."""
    if ev.kind is LedgerKind.RESERVATION_SETTLED:
        return Hold(ev.amount + ev.released, ev.usd + ev.usd_released, ev.amount, ev.usd)
    return Hold(ev.amount, ev.usd)


def level_delta(ev: StoredEvent) -> LevelBalance:
    """How the event moves each of its levels' balances (zero for a grant or a rejection)."""
    return apply_hold(LevelBalance(), ev.kind, event_hold(ev))


def level_balance(raw: dict[bytes, bytes]) -> LevelBalance:
    """A level hash as read by HGETALL (a missing field or hash is zero)."""
    return LevelBalance(*(int(raw.get(f.encode(), 0)) for f in LEVEL_FIELDS))
