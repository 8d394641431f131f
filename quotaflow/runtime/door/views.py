"""The JSON bodies of admit's reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quotaflow.ledger.budgets import LevelView
from quotaflow.ledger.domain import Balance
from quotaflow.ports import RequestView
from quotaflow.runtime.handling import client_reason


def request_json(view: RequestView) -> dict[str, Any]:
    """`GET /v1/requests/{id}`: status, output, usage, model, reason and times (ISO 8601)."""
    return {
        "request_id": view.request_id,
        "status": view.status,
        "output": view.output,
        "usage": {"prompt_tokens": view.prompt_tokens,
                  "completion_tokens": view.completion_tokens,
                  "reserved_tokens": view.reserved_tokens,
                  "charged_tokens": view.charged_tokens},
        "model": {"name": view.model, "version": view.model_version},
        "reason": None if view.reason is None else client_reason(view.reason),
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
    }


def quota_json(tenant: str, period: str, balance: Balance,
               levels: Sequence[LevelView] = ()) -> dict[str, Any]:
    """`GET /v1/quota`: the tenant's projected balance in its current period, and the calling
    key's budget levels in the order key, team, tenant."""
    return {"tenant": tenant, "period": period, "granted": balance.granted,
            "reserved": balance.reserved, "spent": balance.spent,
            "remaining": balance.remaining, "levels": [v.as_json() for v in levels]}
