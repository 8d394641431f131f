"""The keys of every Redis script call lie in one hash slot, whatever the tenant is called, so
the scripts run on a Redis Cluster (`quotaflow.ledger.projection` says why the tag is the
tenant); and `QF_REDIS_MODE` is read and checked like every setting. No Redis needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from quotaflow.adapters.redis_gate import seen_key, window_key
from quotaflow.adapters.tenant_store import _NAME
from quotaflow.events.resources import data_path
from quotaflow.ledger.projection import (
    GENERATION_KEY,
    LAST_SEQ_KEY,
    REBUILD_KEY,
    balance_key,
)
from quotaflow.settings import Settings, SettingsError

tenants = st.from_regex(_NAME, fullmatch=True)  # the names a tenant may have


@given(tenant=tenants, request_id=st.text(max_size=40), key_id=st.text(max_size=20),
       period=st.text(min_size=1, max_size=12), minute=st.integers(0, 10**8))
def test_a_screen_touches_one_slot_with_the_tenants_balances(
        tenant: str, request_id: str, key_id: str, period: str, minute: int) -> None:
    keys = [seen_key(tenant, request_id), window_key(tenant, key_id, minute),
            balance_key(tenant, period), balance_key(tenant, "2026-12")]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_the_projections_own_state_shares_one_slot() -> None:
    assert len({key_slot(k.encode()) for k in (LAST_SEQ_KEY, GENERATION_KEY,
                                               REBUILD_KEY)}) == 1


def test_tenants_spread_over_slots() -> None:
    slots = {key_slot(balance_key(f"tenant-{i}", "2026-12").encode()) for i in range(100)}
    assert len(slots) > 90


@pytest.mark.parametrize("script", sorted(p.name for p in data_path("redis").glob("*.lua")))
def test_no_script_builds_a_key_name_or_reads_one_from_its_arguments(script: str) -> None:
    # A key a script names itself is not declared in KEYS: a cluster cannot route it.
    text = (Path(data_path("redis")) / script).read_text()
    calls = re.findall(r"redis\.call\('(\w+)',\s*([^,)]+)", text)
    from_keys = set(re.findall(r"local (\w+) = KEYS\[", text))
    assert calls and all(key.startswith("KEYS[") or key in from_keys for _, key in calls)


def test_redis_mode_is_read_and_checked() -> None:
    assert Settings().redis_mode == "standalone"
    assert Settings.from_env({"QF_REDIS_MODE": "cluster"}).redis_mode == "cluster"
    with pytest.raises(SettingsError, match="QF_REDIS_MODE"):
        Settings.from_env({"QF_REDIS_MODE": "sentinel"})
