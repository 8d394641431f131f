"""admit's authenticator (its cache bounds how long a revoked key works) and the calendar
behind the quota pre-check's Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quotaflow.adapters.memory.tenants import MemoryTenants
from quotaflow.door.auth import Authenticator, bearer_key
from quotaflow.door.limits import seconds_to_next_period
from quotaflow.ports import Principal
from quotaflow.runtime.problem import Problem


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_revoked_key_works_until_its_cache_entry_expires() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    key = tenants.create_key("acme")
    auth = Authenticator(tenants, cache_s=10, monotonic=ticks)
    assert auth.principal(f"Bearer {key}").tenant == "acme"
    tenants.revoke(key)
    ticks.now += 9.9
    assert auth.principal(f"Bearer {key}").tenant == "acme"
    ticks.now += 0.2
    with pytest.raises(Problem) as refused:
        auth.principal(f"Bearer {key}")
    assert refused.value.status == 401
    assert "revoked" in refused.value.detail


class CountingTenants(MemoryTenants):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def authenticate(self, api_key: str) -> Principal | None:
        self.lookups += 1
        return super().authenticate(api_key)


def test_a_valid_key_is_looked_up_once_per_cache_period_and_an_invalid_one_every_time() -> None:
    tenants, ticks = CountingTenants(), Ticks()
    key = tenants.create_key("acme")
    auth = Authenticator(tenants, cache_s=10, monotonic=ticks)
    for _ in range(3):
        auth.principal(f"Bearer {key}")
    assert tenants.lookups == 1
    for _ in range(2):
        with pytest.raises(Problem):
            auth.principal("Bearer qf_nothere_secret")
    assert tenants.lookups == 3


@pytest.mark.parametrize("header, detail", [
    ("", "missing Authorization"),
    ("Basic abc", "must be 'Bearer <api key>'"),
    ("Bearer   ", "must be 'Bearer <api key>'"),
])
def test_a_missing_or_non_bearer_header_is_401_naming_it(header: str, detail: str) -> None:
    with pytest.raises(Problem) as refused:
        bearer_key(header)
    assert refused.value.status == 401 and detail in refused.value.detail
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"


def test_the_bearer_scheme_is_case_insensitive_and_the_key_trimmed() -> None:
    assert bearer_key("bearer  qf_a_b ") == "qf_a_b"


@pytest.mark.parametrize("plan, now, seconds", [
    ("day", datetime(2026, 11, 29, 23, 59, 30, tzinfo=UTC), 30),
    ("day", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), 86400),
    ("month", datetime(2026, 11, 30, 23, 0, tzinfo=UTC), 3600),
    ("month", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), 1),
    ("month", datetime(2026, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC), 1),
])
def test_retry_after_counts_the_seconds_to_the_next_period(plan: str, now: datetime,
                                                           seconds: int) -> None:
    assert seconds_to_next_period(plan, now) == seconds
