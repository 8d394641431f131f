"""The chaos run's alert receiver: it verifies each Standard Webhooks signature with the
secret, refuses each webhook-id's first attempt so that every delivery is retried, and keeps
every attempt. Loopback only."""

from __future__ import annotations

import time

from quotaflow.alerts import webhooks
from quotaflow.chaos.levels import SECRET
from quotaflow.chaos.receiver import Receiver, verifies

OTHER = "whsec_" + "b3RoZXItc2VjcmV0LW9mLTE2LWJ5dGVz"


def test_a_delivery_is_refused_once_then_taken_and_its_signature_verifies() -> None:
    receiver = Receiver(SECRET)
    try:
        now = int(time.time())
        assert webhooks.post(receiver.url, SECRET, "msg_1", now, '{"a":1}') == "HTTP 503"
        assert webhooks.post(receiver.url, SECRET, "msg_1", now + 2, '{"a":1}') is None
        assert webhooks.post(receiver.url, OTHER, "msg_2", now, '{"a":2}') == "HTTP 503"
        got = receiver.receipts()
    finally:
        receiver.close()
    assert [(r.webhook_id, r.signature_ok, r.answered) for r in got] == [
        ("msg_1", True, 503), ("msg_1", True, 204), ("msg_2", False, 503)]
    assert got[0].body == '{"a":1}'


def test_a_signature_of_another_body_id_or_a_stale_timestamp_does_not_verify() -> None:
    now = 1_800_000_000
    sig = webhooks.signature(SECRET, "msg_1", now, "body")
    assert verifies(SECRET, "msg_1", str(now), "body", sig, now + 10)
    assert verifies(SECRET, "msg_1", str(now), "body", f"v1,AAAA {sig}", now)
    assert not verifies(SECRET, "msg_1", str(now), "body!", sig, now)
    assert not verifies(SECRET, "msg_2", str(now), "body", sig, now)
    assert not verifies(SECRET, "msg_1", str(now), "body", sig, now + 301)
    assert not verifies(SECRET, "msg_1", "soon", "body", sig, now)
