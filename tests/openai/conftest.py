"""The local stack for the OpenAI client's tests: its own database `qf_test_openai_door` and
Redis db index 15, the stand-in model pausing 5 ms per token (so a client can hang up
mid-stream) and re-driving requests only after a minute."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from tests.e2e.conftest import start_stack

TOKEN_DELAY_MS = 5


@pytest.fixture(scope="session")
def openai_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("openai"), database="qf_test_openai_door",
                    redis_db=15, standin_token_delay_ms=TOKEN_DELAY_MS)
    yield s
    s.down()


def new_tenant(stack: DevStack, tokens: int = 1_000_000, rate: int = 6000) -> tuple[str, str]:
    name = f"oa-{uuid.uuid4().hex[:8]}"
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, name, tokens, rate_limit_per_min=rate)
        RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
    return name, key


def openai_client(stack: DevStack, key: str, **kw: object) -> OpenAI:
    """The official client pointed at admit: base URL `<admit>/v1`, the API key as is."""
    return OpenAI(base_url=f"{stack.admit_url}/v1", api_key=key, **kw)  # type: ignore[arg-type]


def ledger_rows(stack: DevStack, tenant: str) -> dict[str, dict[str, int]]:
    """Per request id: the amount of each ledger event kind."""
    with db.connect(stack.settings.postgres_url) as conn:
        rows = conn.execute("SELECT request_id, kind, sum(amount) FROM ledger_events "
                            "WHERE tenant_id = %s AND request_id IS NOT NULL "
                            "GROUP BY request_id, kind", (tenant,)).fetchall()
    out: dict[str, dict[str, int]] = {}
    for rid, kind, amount in rows:
        out.setdefault(str(rid), {})[str(kind)] = int(amount)
    return out


def audit(stack: DevStack, tenant: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings.as_env()}
    return subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--tenant", tenant],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
