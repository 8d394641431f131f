"""admit's authenticator (its cache bounds how long a revoked key works; failed
authentications are throttled without a lookup each, counted by the memory directory's
`lookups`) and the calendar behind the quota pre-check's Retry-After: the next day or month
in the tenant's own zone, across DST changes and month ends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from quotaflow.adapters.memory.tenants import MemoryTenants
from quotaflow.ledger.budgets import period_in_zone
from quotaflow.runtime.door.auth import Authenticator, bearer_key
from quotaflow.runtime.door.limits import seconds_to_next_period
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


def test_a_valid_key_is_looked_up_once_per_cache_period() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    key = tenants.create_key("acme")
    auth = Authenticator(tenants, cache_s=1, monotonic=ticks)
    for _ in range(3):
        auth.principal(f"Bearer {key}")
    assert tenants.lookups == 1
    ticks.now += 1
    auth.principal(f"Bearer {key}")
    assert tenants.lookups == 2


def refused(auth: Authenticator, key: str) -> Problem:
    with pytest.raises(Problem) as caught:
        auth.principal(f"Bearer {key}")
    return caught.value


def unknown_key(n: int) -> str:
    return f"qf_{n:012x}_{'s' * 32}"


@pytest.mark.parametrize("key", ["not-a-key", "qf_abc", "qf_nothere_secret",
                                 "qf_0123456789ab_short", "qf_0123456789AB_" + "s" * 32,
                                 "qf_0123456789ab_" + "s" * 31 + "\x00",
                                 "qf_0123456789ab_" + "s" * 31 + "\u00e9"])
def test_a_malformed_key_is_401_without_a_lookup(key: str) -> None:
    tenants = MemoryTenants()
    auth = Authenticator(tenants, failures_per_s=0, monotonic=Ticks())
    problem = refused(auth, key)
    assert problem.status == 401 and "not valid" in problem.detail
    assert tenants.lookups == 0


def test_a_key_that_failed_is_refused_without_a_lookup_for_the_cache_period() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    auth = Authenticator(tenants, cache_s=1, monotonic=ticks)
    for _ in range(5):
        assert refused(auth, unknown_key(1)).status == 401
    assert tenants.lookups == 1
    ticks.now += 1
    assert refused(auth, unknown_key(1)).status == 401
    assert tenants.lookups == 2


def test_failed_lookups_past_the_budget_are_429_with_retry_after_without_a_lookup() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    auth = Authenticator(tenants, cache_s=1, failures_per_s=5, monotonic=ticks)
    answers = [refused(auth, unknown_key(n)) for n in range(20)]
    assert [p.status for p in answers] == [401] * 5 + [429] * 15
    assert answers[-1].headers["Retry-After"] == "1"
    assert tenants.lookups == 5
    ticks.now += 0.4  # two lookups' worth of budget back
    assert [refused(auth, unknown_key(100 + n)).status for n in range(3)] == [401, 401, 429]
    assert tenants.lookups == 7


def test_valid_lookups_do_not_spend_the_failure_budget() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    auth = Authenticator(tenants, cache_s=1, failures_per_s=2, monotonic=ticks)
    keys = [tenants.create_key(f"t{n}") for n in range(10)]
    assert [auth.principal(f"Bearer {k}").tenant for k in keys] == [f"t{n}" for n in range(10)]
    assert [refused(auth, unknown_key(n)).status for n in range(3)] == [401, 401, 429]


def test_past_the_budget_a_key_once_valid_is_still_looked_up_and_a_new_one_waits() -> None:
    tenants, ticks = MemoryTenants(), Ticks()
    auth = Authenticator(tenants, cache_s=1, failures_per_s=2, monotonic=ticks)
    seen, revoked = tenants.create_key("acme"), tenants.create_key("acme")
    auth.principal(f"Bearer {seen}")
    auth.principal(f"Bearer {revoked}")
    tenants.revoke(revoked)
    ticks.now += 5  # both cache entries stale, the budget full
    for n in range(2):
        refused(auth, unknown_key(n))
    assert refused(auth, unknown_key(3)).status == 429  # the budget is spent
    assert auth.principal(f"Bearer {seen}").tenant == "acme"
    assert refused(auth, revoked).status == 401  # looked up: its revocation is seen
    assert refused(auth, tenants.create_key("acme")).status == 429


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


@pytest.mark.parametrize("plan, now, tz, seconds", [
    # Paris falls back on 2026-10-25: the day that starts at 22:00 UTC the day before is 25 h
    ("day", datetime(2026, 10, 24, 22, 0, tzinfo=UTC), "Europe/Paris", 25 * 3600),
    # and springs forward on 2026-03-29: that day is 23 h
    ("day", datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "Europe/Paris", 23 * 3600),
    # 23:00 on November 30th in New York is December in UTC: New York's November ends in 1 h
    ("month", datetime(2026, 12, 1, 4, 0, tzinfo=UTC), "America/New_York", 3600),
    # Paris's October holds the fall-back: 31 days and an hour
    ("month", datetime(2026, 9, 30, 22, 0, tzinfo=UTC), "Europe/Paris", 31 * 86400 + 3600),
    # Havana skips midnight itself (00:00 -> 01:00 on 2026-03-08): its new day begins at once
    ("day", datetime(2026, 3, 8, 4, 59, tzinfo=UTC), "America/Havana", 60),
])
def test_retry_after_counts_to_the_next_period_in_the_tenants_zone(
        plan: str, now: datetime, tz: str, seconds: int) -> None:
    assert seconds_to_next_period(plan, now, tz) == seconds


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/Havana", "America/Santiago",
                                "Australia/Lord_Howe", "Asia/Kathmandu"])
@pytest.mark.parametrize("plan", ["day", "month"])
def test_retry_after_lands_on_the_first_second_of_the_next_period(plan: str, tz: str) -> None:
    # Every 7 hours through 2026: one second short of Retry-After is still the period the
    # refusal was in, Retry-After itself is the next one, whatever the zone's DST does.
    for hours in range(0, 366 * 24, 7):
        now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hours, seconds=17)
        wait = seconds_to_next_period(plan, now, tz)
        before = now + timedelta(seconds=wait - 1)
        after = now + timedelta(seconds=wait)
        assert period_in_zone(plan, before, tz) == period_in_zone(plan, now, tz), now
        assert period_in_zone(plan, after, tz) != period_in_zone(plan, now, tz), now


def test_a_directory_that_is_down_is_asked_only_the_budgets_lookups_the_rest_are_429() -> None:
    class Down(MemoryTenants):
        asked = 0

        def authenticate(self, api_key: str) -> None:
            self.asked += 1
            raise ConnectionError("connection refused")

    down, ticks = Down(), Ticks()
    auth = Authenticator(down, failures_per_s=2, monotonic=ticks)
    answers = []
    for n in range(50):
        try:
            auth.principal(f"Bearer {unknown_key(n)}")
        except ConnectionError:
            answers.append(503)
        except Problem as refused:
            answers.append(refused.status)
    assert answers == [503] * 2 + [429] * 48 and down.asked == 2
    ticks.now += 1  # a second later the budget has refilled: the directory is asked again
    with pytest.raises(ConnectionError):
        auth.principal(f"Bearer {unknown_key(99)}")


class Slow(MemoryTenants):
    """A directory whose lookups wait until the test lets them answer."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.release = threading.Event()

    def authenticate(self, api_key: str):  # type: ignore[no-untyped-def]
        self.release.wait(5)
        return super().authenticate(api_key)


def _all_at_once(auth: Authenticator, header: str, n: int,
                 release: Callable[[], None]) -> list[object]:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    def call() -> object:
        try:
            return auth.principal(header)
        except Exception as exc:  # what each caller was answered
            return exc

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(call) for _ in range(n)]
        time.sleep(0.2)  # every caller is in, waiting on the one lookup
        assert threading.active_count() > n
        release()
        return [f.result() for f in futures]


def test_a_burst_of_one_valid_key_on_a_fresh_process_is_one_lookup_and_no_429() -> None:
    tenants = Slow()
    key = tenants.create_key("acme")
    auth = Authenticator(tenants, failures_per_s=2)
    answers = _all_at_once(auth, f"Bearer {key}", 32, tenants.release.set)
    assert [getattr(a, "tenant", a) for a in answers] == ["acme"] * 32
    assert tenants.lookups == 1


def test_concurrent_callers_of_one_unknown_key_share_its_401() -> None:
    tenants = Slow()
    auth = Authenticator(tenants, failures_per_s=2)
    answers = _all_at_once(auth, f"Bearer {unknown_key(7)}", 16, tenants.release.set)
    assert {getattr(a, "status", None) for a in answers} == {401}
    assert tenants.lookups == 1
