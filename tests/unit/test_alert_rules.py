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

from quotaflow.alerts.rules import Alert, Change, Level, crossings, level_changes, reached
from quotaflow.alerts.webhooks import BadSecret, secret_key, signature
from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind

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


def ledger_entry(kind: LedgerKind, amount: int, usd: int = 0, key_id: str | None = None,
                 team_id: str | None = None) -> LedgerEntry:
    return LedgerEntry(1, "acme", 1, kind, "r1", "2026-11", amount, 0, AT, key_id=key_id,
                       team_id=team_id, usd=usd)


def test_a_grant_raises_the_tenants_token_limit_and_nothing_else() -> None:
    assert level_changes(ledger_entry(LedgerKind.QUOTA_GRANTED, 100)) == [
        Change("tenant", "acme", "tokens", 0, 100)]
    assert level_changes(ledger_entry(LedgerKind.QUOTA_GRANTED, 0)) == []


def test_a_settlement_spends_its_tokens_and_money_at_its_tenant_team_and_key() -> None:
    settled = ledger_entry(LedgerKind.RESERVATION_SETTLED, 30, 2_600, "k1", "ml")
    assert level_changes(settled) == [
        Change("tenant", "acme", "tokens", 30), Change("tenant", "acme", "usd", 2_600),
        Change("team", "ml", "tokens", 30), Change("team", "ml", "usd", 2_600),
        Change("key", "k1", "tokens", 30), Change("key", "k1", "usd", 2_600)]


def test_a_settlement_without_team_or_price_spends_only_where_it_has_something() -> None:
    settled = ledger_entry(LedgerKind.RESERVATION_SETTLED, 30, 0, "k1")
    assert level_changes(settled) == [Change("tenant", "acme", "tokens", 30),
                                      Change("key", "k1", "tokens", 30)]


@pytest.mark.parametrize("kind", [LedgerKind.TOKENS_RESERVED, LedgerKind.RESERVATION_RELEASED,
                                  LedgerKind.RESERVATION_EXPIRED, LedgerKind.REQUEST_REJECTED])
def test_holds_releases_expiries_and_rejections_spend_nothing(kind: LedgerKind) -> None:
    assert level_changes(ledger_entry(kind, 30, 2_600, "k1", "ml")) == []


def test_a_key_alert_crosses_on_the_keys_money_and_not_on_another_key() -> None:
    alert = Alert(8, "acme", "key", "k1", 50, "u", SECRET)
    (c,) = crossings(Level("key", "k1", "2026-11", "usd", 500_000, 1_000_000), [alert])
    assert json.loads(c.cloudevent(AT))["data"]["spent"] == "0.500000"
    assert crossings(Level("key", "k2", "2026-11", "usd", 10**6, 10**6), [alert]) == []
