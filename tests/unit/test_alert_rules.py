"""Threshold alerts' pure parts: a level reaches a threshold by exact integer arithmetic; a
crossing's webhook-id is the same for every evaluation of the same alert, level, period, unit
and threshold, and another in the next period; its CloudEvent carries the data the issue names;
the signature is the Standard Webhooks one, checked by this file's own reading of the spec and
against the spec's published example."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from events.status import LedgerKind
from quotaflow.alerts.rules import Alert, Level, crossings, reached, tenant_change
from quotaflow.alerts.webhooks import BadSecret, secret_key, signature

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
ALERT = Alert(7, "acme", "tenant", "acme", 80, "https://hooks.example/qf", SECRET)
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the specification: the key is the base64 after
    `whsec_`; the signed content `id.timestamp.body`; any of the space-separated `v1,` entries
    may match."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(v.startswith("v1,") and hmac.compare_digest(v[3:], expected)
               for v in headers["webhook-signature"].split(" "))


def level(spent: int, limit: int = 1000, period: str = "2026-11") -> Level:
    return Level("tenant", "acme", period, "tokens", spent, limit)


def test_the_signature_matches_the_specifications_example() -> None:
    # The example of the Standard Webhooks reference libraries' tests.
    got = signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                    1614265330, '{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_signature_verifies_and_a_changed_body_or_id_does_not() -> None:
    body = '{"a":1}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1764950000",
               "webhook-signature": signature(SECRET, "msg_1", 1764950000, body)}
    assert verify(SECRET, headers, body.encode())
    assert not verify(SECRET, headers, b'{"a":2}')
    assert not verify(SECRET, {**headers, "webhook-id": "msg_2"}, body.encode())


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!",
                                 "whsec_c2hvcnQ="])
def test_a_secret_not_in_the_whsec_form_is_refused(bad: str) -> None:
    with pytest.raises(BadSecret):
        secret_key(bad)


def test_a_level_reaches_its_threshold_exactly_and_an_unlimited_one_never() -> None:
    assert not reached(level(799), 80) and reached(level(800), 80)
    assert not reached(level(10**9, limit=0), 1)
    assert reached(Level("tenant", "acme", "2026-11", "tokens", 1, 3), 33)  # 33.3 % >= 33


def test_one_crossing_per_alert_level_period_unit_and_threshold() -> None:
    (first,) = crossings(level(800), [ALERT])
    (again,) = crossings(level(950), [ALERT])
    (next_period,) = crossings(level(800, period="2026-12"), [ALERT])
    assert first.webhook_id == again.webhook_id != next_period.webhook_id
    assert crossings(level(799), [ALERT]) == []
    other = Alert(7, "acme", "team", "acme", 80, "u", SECRET)
    assert crossings(level(1000), [other]) == []  # a team's alert is not the tenant's


def test_the_cloudevent_carries_the_level_and_the_threshold() -> None:
    (c,) = crossings(level(800), [ALERT])
    event = json.loads(c.cloudevent(AT))
    assert (event["type"], event["id"], event["specversion"]) == (
        "dev.quotaflow.budget.threshold", c.webhook_id, "1.0")
    assert event["data"] == {"scope": "tenant", "id": "acme", "period": "2026-11",
                             "unit": "tokens", "threshold_percent": 80, "spent": 800,
                             "limit": 1000}
    money = crossings(Level("tenant", "acme", "2026-11", "usd", 9_000_000, 10_000_500),
                      [ALERT])[0]
    assert json.loads(money.cloudevent(AT))["data"]["limit"] == "10.000500"


def test_grants_raise_the_limit_and_settlements_the_spent() -> None:
    assert tenant_change(LedgerKind.QUOTA_GRANTED, 100) == (0, 100)
    assert tenant_change(LedgerKind.RESERVATION_SETTLED, 30) == (30, 0)
    assert tenant_change(LedgerKind.TOKENS_RESERVED, 30) == (0, 0)
