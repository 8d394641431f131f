"""An in-memory `AdmissionGate`: counts per key and minute, balances and the key's and team's
levels read from an in-memory projection (as the Redis gate reads the Redis one), the record
of requests let through (`forget_seen` drops it, as a flushed Redis would), and the keys'
rolling minutes of tokens and in-flight slots, decided as `infra/redis/admit_screen.lua`
decides them."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.events.status import KeyLimit, LevelScope
from quotaflow.ledger.domain import Balance
from quotaflow.ports import ReservedTokens, Screening, ScreenQuery

WINDOW_MS = 60_000


class MemoryAdmissionGate:
    """Request counts by (key id, minute) over `projection`'s balances."""

    def __init__(self, projection: MemoryProjection | None = None,
                 slot_ttl_s: int = 3600) -> None:
        self.projection = projection or MemoryProjection()
        self.slot_ttl_ms = slot_ttl_s * 1000
        self._counts: Counter[tuple[str, int]] = Counter()
        self._seen: dict[str, str] = {}
        # (tenant, key id) -> request id -> (admitted ms, tokens)
        self._minutes: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        # tenant -> request id -> (deadline ms, key id)
        self._slots: dict[str, dict[str, tuple[int, str]]] = {}
        self._lock = threading.Lock()

    def screen(self, query: ScreenQuery) -> Screening:
        """The record, or the count and the balance (recording a request within both, and
        holding its key's tokens and slot when within the key's limits too)."""
        q = query
        with self._lock:
            known = self._seen.get(q.request_id)
            if known is not None:
                return Screening(known, 0, Balance())
            self._counts[(q.key_id, q.minute)] += 1
            count = self._counts[(q.key_id, q.minute)]
            balance = self.projection.balance(q.tenant, q.period)
            within_quota = not balance.granted or balance.remaining >= q.needs_tokens
            if count > q.rate_limit_per_min or not within_quota:
                return Screening(None, count, balance)
            over_level = self._over_level(q)
            if over_level is not None:
                return Screening(None, count, balance, None, 0, *over_level)
            refused = self._key_limits(q)
            if refused is not None:
                return Screening(None, count, balance, *refused)
            self._seen[q.request_id] = q.payload_hash
            if q.tpm:
                self._minutes[(q.tenant, q.key_id)].setdefault(
                    q.request_id, (q.now_ms, q.tpm_tokens))
            if q.max_inflight:
                self._slots.setdefault(q.tenant, {}).setdefault(
                    q.request_id, (q.now_ms + self.slot_ttl_ms, q.key_id))
        return Screening(None, count, balance)

    def _over_level(self, q: ScreenQuery) -> tuple[LevelScope, int] | None:
        levels = [(LevelScope.KEY, q.key_id, q.key_limit_tokens)]
        if q.team_id is not None:
            levels.append((LevelScope.TEAM, f"{q.tenant}/{q.team_id}", q.team_limit_tokens))
        for scope, level_id, limit in levels:
            if limit is None:
                continue
            left = limit - self.projection.level(q.tenant, scope, level_id,
                                                 q.period).used_tokens()
            if left < q.needs_tokens:
                return scope, left
        return None

    def _key_limits(self, q: ScreenQuery) -> tuple[KeyLimit, int] | None:
        minute = self._minutes.setdefault((q.tenant, q.key_id), {})
        for rid, (at, _) in list(minute.items()):
            if at <= q.now_ms - WINDOW_MS:
                del minute[rid]
        used = sum(tokens for _, tokens in minute.values())
        if q.tpm and q.request_id not in minute and used + q.tpm_tokens > q.tpm:
            retry = -1
            for at, tokens in sorted(minute.values()):  # the oldest leave the window first
                used -= tokens
                if q.tpm_tokens <= q.tpm and used + q.tpm_tokens <= q.tpm:
                    retry = at + WINDOW_MS - q.now_ms
                    break
            return KeyLimit.TOKENS_PER_MINUTE, retry
        slots = self._slots.setdefault(q.tenant, {})
        if q.max_inflight and q.request_id not in slots:
            for rid, (deadline, owner) in list(slots.items()):
                if owner == q.key_id and deadline <= q.now_ms:
                    del slots[rid]  # past its deadline: a release that never came
            if sum(owner == q.key_id for _, owner in slots.values()) >= q.max_inflight:
                return KeyLimit.IN_FLIGHT, 1000
        return None

    def trim(self, reserved: Sequence[ReservedTokens]) -> None:
        """Lower each request's tokens in its key's rolling minute (0: drop it)."""
        with self._lock:
            for r in reserved:
                minute = self._minutes.get((r.tenant, r.key_id), {})
                held = minute.get(r.request_id)
                if held is None or r.tokens >= held[1]:
                    continue
                if r.tokens == 0:
                    del minute[r.request_id]
                else:
                    minute[r.request_id] = (held[0], r.tokens)

    def release(self, tenant: str, request_ids: Sequence[str]) -> None:
        """Free the ended requests' in-flight slots."""
        with self._lock:
            slots = self._slots.get(tenant, {})
            for rid in request_ids:
                slots.pop(rid, None)

    def forget_seen(self) -> None:
        """Drop every record of requests let through (a Redis flush)."""
        with self._lock:
            self._seen.clear()
