"""admit's fast checks on Redis: the key's request count in its one-minute window and the
projected balances of its tenant, its key and its team (`level_projection`), and (`screen`)
with them the record of requests recently let through and the key's tokens per minute and
requests in flight, all in one round trip (`infra/redis/admit_screen.lua`). Every key of a
screen carries the tenant's hash tag, so on a Redis Cluster they sit in one slot with the
tenant's balances (`quotaflow.ledger.projection` says why the tag is the tenant), and one
script sees them all atomically: the per-key limits hold exactly across every door process
and replica, which a count kept per process cannot.

The money levels are not screened here: a request's worst case in money needs its prompt
tokens (counted by the model's tokenizer in estimate, after admit) and the price version in
force (in PostgreSQL), neither of which the door has without a read per request; reserve
decides money exactly, and the screen's token bound would make a money bound loose anyway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from quotaflow.adapters.group_commit import GroupCommitter
from quotaflow.adapters.redis_client import RedisClient, call_script
from quotaflow.adapters.redis_client import connect_redis as connect_redis  # re-exported
from quotaflow.events.resources import data_path
from quotaflow.events.status import KeyLimit, LevelScope
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import balance_key, level_key, tenant_tag
from quotaflow.ports import ReservedTokens, Screening, ScreenQuery

WINDOW_TTL_S = 120  # a window outlives its minute, so a late request still counts in it
# How long a request let through is recognised without PostgreSQL: clients resend within
# seconds; after this a resend is counted again and PostgreSQL still answers it as a resend.
SEEN_TTL_S = 600


def window_key(tenant: str, key_id: str, minute: int) -> str:
    """The counter of `tenant`'s key `key_id`'s requests in minute `minute` (Unix seconds //
    60)."""
    return f"{tenant_tag(tenant)}rate:{key_id}:{minute}"


def seen_key(tenant: str, request_id: str) -> str:
    """The record of a request of `tenant`'s recently let through: its payload hash."""
    return f"{tenant_tag(tenant)}seen:{request_id}"


_FIELDS = tuple((f.name, f.name.encode()) for f in fields(Balance))


def tpm_key(tenant: str, key_id: str) -> str:
    """The tokens `tenant`'s key `key_id` reserved in its rolling minute, by admission time."""
    return f"{tenant_tag(tenant)}tpm:{key_id}"


def tpm_tokens_key(tenant: str, key_id: str) -> str:
    """The tokens each request in `tpm_key`'s rolling minute holds, by request id."""
    return f"{tenant_tag(tenant)}tpm-tokens:{key_id}"


def slots_key(tenant: str) -> str:
    """`tenant`'s requests holding an in-flight slot: request id -> 'deadline_ms key_id'."""
    return f"{tenant_tag(tenant)}inflight"


def slot_counts_key(tenant: str) -> str:
    """How many in-flight slots each of `tenant`'s keys holds."""
    return f"{tenant_tag(tenant)}inflight-n"


def _balance(raw: dict[bytes, bytes]) -> Balance:
    # The projection's hash holds one integer field per Balance field; a missing hash is zero.
    return Balance(**{name: int(raw.get(key, 0)) for name, key in _FIELDS})


class RedisAdmissionGate:
    """The `AdmissionGate` over the Redis projection (redis-py clients are thread-safe)."""

    def __init__(self, client: RedisClient, slot_ttl_s: int = 3600) -> None:
        self.redis = client
        # A slot no release frees (its process crashed after the request ended) is freed
        # past this; it must outlast the longest a request can stay open (compose: the
        # request deadline plus the sweeps that end it), or a slot would be freed early.
        self.slot_ttl_ms = slot_ttl_s * 1000
        self._screen = client.register_script(
            (data_path("redis") / "admit_screen.lua").read_text())
        self._release = client.register_script(
            (data_path("redis") / "release_slots.lua").read_text())
        self._trim = client.register_script(
            (data_path("redis") / "trim_window.lua").read_text())

    def screen(self, query: ScreenQuery) -> Screening:
        """The record, or the count and the balance, in one script call."""
        return self.screen_many([query])[0]

    def screen_many(self, queries: Sequence[ScreenQuery]) -> list[Screening]:
        """`screen` for many requests in one round trip (a pipeline of script calls, each
        atomic, applied in order; `call_script` says what happens when Redis forgot the
        script); one answer per query."""
        replies = call_script(self.redis, self._screen, [self._call(q) for q in queries])
        return [_screening(reply) for reply in replies]

    def _call(self, q: ScreenQuery) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
        # A key without limits of its own sends only what the rate limit, the pre-check and the
        # record need: redis-py's encoding of each argument is most of a screen's client CPU.
        keys: tuple[str, ...]
        args: tuple[str | int, ...]
        keys = (seen_key(q.tenant, q.request_id), window_key(q.tenant, q.key_id, q.minute),
                balance_key(q.tenant, q.period))
        args = (q.payload_hash, SEEN_TTL_S, WINDOW_TTL_S, q.rate_limit_per_min, q.needs_tokens)
        if q.tpm or q.max_inflight:
            keys = (*keys, tpm_key(q.tenant, q.key_id), slots_key(q.tenant),
                    slot_counts_key(q.tenant), tpm_tokens_key(q.tenant, q.key_id))
            args = (*args, q.tpm, q.max_inflight, q.now_ms, self.slot_ttl_ms, q.request_id,
                    q.key_id, q.tpm_tokens)
        if q.key_limit_tokens is None and q.team_limit_tokens is None:
            return keys, args
        key_level = level_key(q.tenant, LevelScope.KEY, q.key_id, q.period)
        if q.team_id is None:  # no team: the key's hash again, never read (no limit)
            return (*keys, key_level, key_level), (*args, _limit(q.key_limit_tokens), -1)
        return ((*keys, key_level, level_key(q.tenant, LevelScope.TEAM,
                                             f"{q.tenant}/{q.team_id}", q.period)),
                (*args, _limit(q.key_limit_tokens), _limit(q.team_limit_tokens)))

    def release(self, tenant: str, request_ids: Sequence[str]) -> None:
        """Free the ended requests' in-flight slots, in one script call."""
        if request_ids:
            call_script(self.redis, self._release,
                        [((slots_key(tenant), slot_counts_key(tenant)), tuple(request_ids))])

    def trim(self, reserved: Sequence[ReservedTokens]) -> None:
        """Each request's tokens in its key's rolling minute lowered, in one round trip."""
        if reserved:
            call_script(self.redis, self._trim, [
                ((tpm_key(r.tenant, r.key_id), tpm_tokens_key(r.tenant, r.key_id)),
                 (r.request_id, r.tokens)) for r in reserved])


def _limit(tokens: int | None) -> int:
    return -1 if tokens is None else tokens


def _screening(reply: Any) -> Screening:
    # The script answers {known hash or '', count, flat HGETALL of the balance, the key limit
    # over or '', ms until it frees} and, when a level refused, {its scope, tokens it has left}.
    known, count, flat, over, retry_ms, *level = reply
    if known:
        return Screening(known.decode(), 0, Balance())
    raw = dict(zip(flat[::2], flat[1::2], strict=True))
    return Screening(None, int(count), _balance(raw), KeyLimit(over.decode()) if over else None,
                     int(retry_ms), LevelScope(level[0].decode()) if level else None,
                     int(level[1]) if level else 0)


class GroupScreenGate:
    """An `AdmissionGate` whose `screen` shares one Redis round trip with the screens of
    concurrent callers (a `GroupCommitter` over `screen_many`): redis-py spends about 150 us
    of CPU on each round trip and about 20 us on each command of a pipeline (BENCHMARKS.md,
    admit's hot path), which under load is most of the door's Redis cost."""

    def __init__(self, gate: RedisAdmissionGate, timeout_s: float = 5.0,
                 max_batch: int = 128) -> None:
        self.gate = gate
        self.timeout_s = timeout_s
        self.committer = GroupCommitter(gate.screen_many, max_batch, "redis-screen")

    def screen(self, query: ScreenQuery) -> Screening:
        """Screened with whatever else is waiting."""
        return self.committer.submit(query, self.timeout_s)

    def release(self, tenant: str, request_ids: Sequence[str]) -> None:
        """The gate's own release (ends are batched by their callers already)."""
        self.gate.release(tenant, request_ids)

    def trim(self, reserved: Sequence[ReservedTokens]) -> None:
        """The gate's own trim (reserve trims a batch at once)."""
        self.gate.trim(reserved)
