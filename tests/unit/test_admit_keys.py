"""API keys at admit's door on in-memory ports: the door trusts a looked-up key for
`Settings.auth_cache_ms`, so a revocation takes effect within it; a flood of bad keys costs
the directory at most the per-process failure budget in lookups (the memory directory counts
them as PostgreSQL would count queries)."""

from __future__ import annotations

from dataclasses import replace

from quotaflow.runtime.door.app import create_app
from quotaflow.runtime.door.auth import FAILURES_PER_S
from tests.problems import assert_problem, body
from tests.unit.test_admit_door import Door, headers


def door_with_cache(ms: int) -> Door:
    door = Door()
    door.settings = replace(door.settings, auth_cache_ms=ms)
    door.client = create_app(door.settings, door.ports).test_client()
    return door


def test_a_revoked_key_is_refused_once_the_auth_cache_lifetime_has_passed() -> None:
    door = door_with_cache(0)
    assert door.post(over={"ce-id": "before"}).status_code == 202
    assert door.tenants.revoke(door.keys["acme"].split("_")[1])
    assert_problem(door.post(over={"ce-id": "after"}), 401, "not valid or was revoked")


def test_a_looked_up_key_is_trusted_for_the_auth_cache_lifetime() -> None:
    door = door_with_cache(60_000)
    assert door.post(over={"ce-id": "before"}).status_code == 202
    door.tenants.revoke(door.keys["acme"])
    assert door.post(over={"ce-id": "after"}).status_code == 202
    assert door.tenants.lookups == 1


def test_a_flood_of_bad_keys_costs_at_most_the_failure_budget_in_lookups() -> None:
    door = Door()
    assert door.post(over={"ce-id": "cached"}).status_code == 202
    lookups = door.tenants.lookups
    malformed = [door.client.get("/v1/quota", headers={"Authorization": f"Bearer bad-{n}"})
                 for n in range(100)]
    assert {r.status_code for r in malformed} == {401}
    assert door.tenants.lookups == lookups
    unknown = [door.client.post("/", data=body(), headers=headers(f"qf_{n:012x}_{'s' * 32}"))
               for n in range(100)]
    statuses = [r.status_code for r in unknown]
    assert set(statuses) == {401, 429} and statuses[0] == 401
    throttled = unknown[statuses.index(429)]
    assert_problem(throttled, 429, "send the request again")
    assert throttled.headers["Retry-After"] == "1"
    # The budget refills while the test runs: allow a second's worth more at most.
    assert door.tenants.lookups - lookups <= 2 * FAILURES_PER_S
    assert door.post(over={"ce-id": "still-cached"}).status_code == 202


def test_the_failure_budget_is_the_settings_own() -> None:
    door = Door()
    door.settings = replace(door.settings, auth_failures_per_s=2)
    door.client = create_app(door.settings, door.ports).test_client()
    unknown = [door.client.post("/", data=body(), headers=headers(f"qf_{n:012x}_{'s' * 32}"))
               for n in range(10)]
    statuses = [r.status_code for r in unknown]
    assert statuses[:2] == [401, 401] and statuses.count(401) <= 4  # 2, and a refill at most
    assert 429 in statuses


def test_the_failure_budget_is_read_from_the_environment_and_must_be_at_least_one() -> None:
    import pytest

    from quotaflow.settings import Settings, SettingsError

    assert Settings.from_env({"QF_AUTH_FAILURES_PER_S": "3"}).auth_failures_per_s == 3
    with pytest.raises(SettingsError, match="at least 1"):
        Settings.from_env({"QF_AUTH_FAILURES_PER_S": "0"})
    with pytest.raises(SettingsError, match="integer"):
        Settings.from_env({"QF_AUTH_FAILURES_PER_S": "ten"})
