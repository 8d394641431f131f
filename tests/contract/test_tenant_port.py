"""The `TenantDirectory` contract, run against the in-memory directory and PostgreSQL (database
`qf_test_contract_admit`): a key authenticates to its principal until it is revoked; an
unknown, malformed or forged key never does. `-k memory` runs the fake alone, with no services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import tenant_store
from quotaflow.adapters.memory.tenants import MemoryTenants
from quotaflow.ports import Principal, TenantDirectory

DATABASE = "qf_test_contract_admit"


@dataclass
class Directory:
    """A directory and how to issue keys in it (tenant, rate limit, plan period) and revoke."""

    tenants: TenantDirectory
    issue: Callable[[str, int, str], str]
    revoke: Callable[[str], None]


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection[Any]]:
    from tests.services import fresh_database

    with psycopg.connect(fresh_database(DATABASE), autocommit=True) as conn:
        yield conn


def _memory() -> Directory:
    tenants = MemoryTenants()
    return Directory(tenants, lambda t, rate, period: tenants.create_key(t, rate, period),
                     tenants.revoke)


def _postgres(conn: psycopg.Connection[Any]) -> Directory:
    made: dict[str, str] = {}

    def issue(tenant: str, rate: int, period: str) -> str:
        if tenant in made:
            return tenant_store.create_key(conn, tenant)
        made[tenant] = tenant_store.create_tenant(conn, tenant, 100, period, rate)
        return made[tenant]

    return Directory(tenant_store.PostgresTenants(conn), issue,
                     lambda key: tenant_store.revoke_key(conn, key))


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
    directory.revoke(revoked)
    assert directory.tenants.authenticate(revoked) is None
    assert directory.tenants.authenticate(kept) is not None


def test_creating_an_existing_tenant_is_refused_by_name(pg: psycopg.Connection[Any]) -> None:
    tenant_store.create_tenant(pg, "twice", 10)
    with pytest.raises(tenant_store.TenantExists, match="'twice' already exists"):
        tenant_store.create_tenant(pg, "twice", 10)
