"""The `TenantDirectory` contract, run against the in-memory directory and PostgreSQL (database
`qf_test_contract_admit`): a key authenticates to its principal until it is revoked (by its id
or whole); an unknown, malformed or forged key never does, and a malformed one costs no lookup
(the fake counts lookups as PostgreSQL counts queries); a tenant's keys are listed with their
revocation, never their secrets. `-k memory` runs the fake alone, with no services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import tenant_store
from quotaflow.adapters.api_keys import ApiKeyInfo
from quotaflow.adapters.memory.tenants import MemoryTenants
from quotaflow.ports import Principal, TenantDirectory

DATABASE = "qf_test_contract_admit"


@dataclass
class Directory:
    """A directory; how to issue keys in it (tenant, rate limit, plan period), revoke one (by
    id or whole) and list a tenant's; how many lookups it has made."""

    tenants: TenantDirectory
    issue: Callable[[str, int, str], str]
    revoke: Callable[[str], bool]
    list_keys: Callable[[str], list[ApiKeyInfo]]
    lookups: Callable[[], int]
    # a key issued to a new tenant with its tokens per minute and max in flight
    issue_limited: Callable[[str, int, int], str]
    # another key of an issued tenant, with its own requests per minute
    issue_rated: Callable[[str, int], str]


class CountingConnection:
    """A connection that counts the statements run through it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.statements = 0

    def execute(self, *args: Any) -> Any:
        self.statements += 1
        return self.conn.execute(*args)


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection[Any]]:
    from tests.services import fresh_database

    with psycopg.connect(fresh_database(DATABASE), autocommit=True) as conn:
        yield conn


def _memory() -> Directory:
    tenants = MemoryTenants()
    return Directory(tenants, lambda t, rate, period: tenants.create_key(t, rate, period),
                     tenants.revoke, tenants.list_keys, lambda: tenants.lookups,
                     lambda t, tpm, k: tenants.create_key(t, tpm=tpm, max_inflight=k),
                     lambda t, rate: tenants.create_key(t, rate))


def _postgres(conn: psycopg.Connection[Any]) -> Directory:
    made: dict[str, str] = {}

    def issue(tenant: str, rate: int, period: str) -> str:
        if tenant in made:
            return tenant_store.create_key(conn, tenant)
        made[tenant] = tenant_store.create_tenant(conn, tenant, 100, period, rate)
        return made[tenant]

    def issue_limited(tenant: str, tpm: int, max_inflight: int) -> str:
        tenant_store.create_tenant(conn, tenant, 100)
        return tenant_store.create_key(conn, tenant, tpm, max_inflight)

    def issue_rated(tenant: str, rate: int) -> str:
        return tenant_store.create_key(conn, tenant, rate_limit_per_min=rate)

    counting = CountingConnection(conn)
    tenants = tenant_store.PostgresTenants(counting)  # type: ignore[arg-type]
    return Directory(tenants, issue, tenants.revoke, tenants.list_keys,
                     lambda: counting.statements, issue_limited, issue_rated)


_counter = iter(range(1_000_000))


@pytest.fixture(params=["memory", "postgres"])
def directory(request: pytest.FixtureRequest) -> Directory:
    if request.param == "memory":
        return _memory()
    return _postgres(request.getfixturevalue("pg"))


def unique(name: str) -> str:
    return f"{name}-{next(_counter)}"


def test_an_issued_key_authenticates_to_its_principal(directory: Directory) -> None:
    tenant = unique("acme")
    key = directory.issue(tenant, 42, "day")
    found = directory.tenants.authenticate(key)
    assert found is not None
    assert found == Principal(tenant, key.split("_", 2)[1], 42, "day")


def test_a_keys_tokens_per_minute_and_max_in_flight_travel_with_its_principal(
        directory: Directory) -> None:
    tenant = unique("acme")
    key = directory.issue_limited(tenant, 500, 3)
    found = directory.tenants.authenticate(key)
    assert found is not None and (found.tpm, found.max_inflight) == (500, 3)
    plain = directory.tenants.authenticate(directory.issue(unique("acme"), 42, "day"))
    assert plain is not None and (plain.tpm, plain.max_inflight) == (0, 0)


def test_a_keys_own_rate_limit_replaces_its_tenants_for_that_key_alone(
        directory: Directory) -> None:
    tenant = unique("acme")
    before = directory.issue(tenant, 42, "day")
    own = directory.tenants.authenticate(directory.issue_rated(tenant, 2))
    after = directory.issue(tenant, 42, "day")
    assert own is not None and own.rate_limit_per_min == 2
    for sibling in (before, after):
        found = directory.tenants.authenticate(sibling)
        assert found is not None and found.rate_limit_per_min == 42


def test_each_key_of_a_tenant_has_its_own_key_id(directory: Directory) -> None:
    tenant = unique("acme")
    first, second = directory.issue(tenant, 60, "month"), directory.issue(tenant, 60, "month")
    a, b = directory.tenants.authenticate(first), directory.tenants.authenticate(second)
    assert a is not None and b is not None
    assert a.tenant == b.tenant == tenant and a.key_id != b.key_id


def test_a_forged_secret_does_not_authenticate(directory: Directory) -> None:
    key = directory.issue(unique("acme"), 60, "month")
    assert directory.tenants.authenticate(key.rsplit("_", 1)[0] + "_forged") is None
    assert directory.tenants.authenticate(key + "x") is None


@pytest.mark.parametrize("key", ["", "qf_nothere_secret", "not-a-key", "qf_abc", "xx_a_b"])
def test_an_unknown_or_malformed_key_does_not_authenticate(directory: Directory,
                                                           key: str) -> None:
    directory.issue(unique("acme"), 60, "month")
    assert directory.tenants.authenticate(key) is None


def test_a_revoked_key_no_longer_authenticates_and_others_still_do(directory: Directory) -> None:
    tenant = unique("acme")
    kept, revoked = directory.issue(tenant, 60, "month"), directory.issue(tenant, 60, "month")
    assert directory.revoke(revoked)
    assert directory.tenants.authenticate(revoked) is None
    assert directory.tenants.authenticate(kept) is not None


@pytest.mark.parametrize("key", ["", "not-a-key", "qf_abc", "qf_0123456789ab_short",
                                 "qf_0123456789ab_" + "s" * 31 + "\x00"])
def test_a_malformed_key_costs_no_lookup_and_an_unknown_one_exactly_one(
        directory: Directory, key: str) -> None:
    before = directory.lookups()
    assert directory.tenants.authenticate(key) is None
    assert directory.lookups() == before
    assert directory.tenants.authenticate("qf_0123456789ab_" + "s" * 32) is None
    assert directory.lookups() == before + 1


def test_a_key_is_revoked_by_its_id_and_listed_with_its_revocation_never_its_secret(
        directory: Directory) -> None:
    tenant = unique("acme")
    first, second = directory.issue(tenant, 60, "month"), directory.issue(tenant, 60, "month")
    first_id, second_id = first.split("_")[1], second.split("_")[1]
    assert directory.revoke(second_id) is True
    assert directory.tenants.authenticate(second) is None
    listed = directory.list_keys(tenant)
    assert [k.key_id for k in listed] == [first_id, second_id]
    assert listed[0].revoked_at is None and listed[1].revoked_at is not None
    assert listed[0].created_at <= listed[1].created_at
    assert first.split("_", 2)[2] not in repr(listed)


def test_revoking_twice_keeps_the_first_revocation_and_an_unknown_id_is_false(
        directory: Directory) -> None:
    tenant = unique("acme")
    key = directory.issue(tenant, 60, "month")
    assert directory.revoke(key) is True
    (first,) = directory.list_keys(tenant)
    assert directory.revoke(key.split("_")[1]) is True
    assert directory.list_keys(tenant) == [first]
    assert directory.revoke("0123456789ab") is False


def test_listing_the_keys_of_an_unknown_tenant_is_a_lookup_error(directory: Directory) -> None:
    with pytest.raises(LookupError, match="no tenant 'nobody'"):
        directory.list_keys("nobody")


def test_creating_an_existing_tenant_is_refused_by_name(pg: psycopg.Connection[Any]) -> None:
    tenant_store.create_tenant(pg, "twice", 10)
    with pytest.raises(tenant_store.TenantExists, match="'twice' already exists"):
        tenant_store.create_tenant(pg, "twice", 10)


def test_a_key_for_an_unknown_tenant_is_refused_by_name(pg: psycopg.Connection[Any]) -> None:
    with pytest.raises(tenant_store.UnknownTenant, match="no tenant 'nobody'"):
        tenant_store.create_key(pg, "nobody")


@pytest.mark.parametrize("rate", [0, -1])
def test_a_key_rate_limit_below_one_a_minute_is_refused(pg: psycopg.Connection[Any],
                                                        rate: int) -> None:
    tenant = unique("acme")
    tenant_store.create_tenant(pg, tenant, 10)
    with pytest.raises(ValueError, match="at least 1 request a minute"):
        tenant_store.create_key(pg, tenant, rate_limit_per_min=rate)
