"""The ledger topic's records: the relay's envelope of a committed event (the same bytes on the
wire as before payloads were typed), and the in-memory outbox's once-each, in-order publishing.
Neither needs a service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.adapters.memory.outbox import MemoryOutbox
from quotaflow.events.envelope import from_kafka, to_kafka
from quotaflow.events.payloads import LedgerEntry
from quotaflow.ledger.commands import ReserveTokens, SettleReservation, StoredEvent
from quotaflow.ledger.domain import Kind
from quotaflow.ledger.outbox import ledger_envelope

RECORDED = datetime(2026, 11, 29, 13, 0, 1, 123000, tzinfo=timezone(timedelta(hours=2)))
SETTLED = StoredEvent(42, "acme", 7, Kind.RESERVATION_SETTLED, "r1", "2026-11", 30, 70, None,
                      RECORDED)
# Written by the relay before typed payloads (quotaflow.events.envelope.Event with a dict of
# data), as v1; v2 appends the budget levels' seven fields (here none: one zero byte each).
WIRE_VALUE = ("540861636d650e245265736572766174696f6e536574746c6564020472310e323032362d3131"
              "3c8c01c6efb1efc468")


def test_a_ledger_record_keeps_its_wire_bytes_id_source_and_time() -> None:
    message = to_kafka(ledger_envelope(SETTLED))
    headers = dict(message.headers)
    assert message.value is not None and message.value.hex() == WIRE_VALUE + "00" * 7
    assert message.key in ("acme", b"acme")
    assert (headers["ce_id"], headers["ce_source"], headers["ce_time"],
            headers["ce_type"], headers["ce_dataschema"]) == \
        (b"ledger/42", b"/quotaflow/ledger", b"2026-11-29T11:00:01.123000Z",
         b"dev.quotaflow.ledger.entry", b"urn:quotaflow:schema:ledger:v2")


def test_a_ledger_record_decodes_to_the_committed_event() -> None:
    message = to_kafka(ledger_envelope(SETTLED))
    decoded = from_kafka(message.headers, message.key, message.value)
    assert decoded.payload == LedgerEntry(42, "acme", 7, "ReservationSettled", "r1", "2026-11",
                                          30, 70, RECORDED)
    assert decoded.time == RECORDED.astimezone(UTC)


def test_the_memory_outbox_publishes_each_committed_event_once_in_order() -> None:
    ledger = MemoryLedger(FixedClock())
    outbox = MemoryOutbox(ledger)
    ledger.add_tenant("acme", 100)
    ledger.reserve([ReserveTokens("acme", "r1", 40, "h")])
    assert outbox.publish_pending() == 2
    assert outbox.publish_pending() == 0
    ledger.end([SettleReservation("acme", "r1", 10, "s")])
    ledger.reserve([ReserveTokens("acme", "r1", 40, "h")])  # a redelivery: no new event
    assert outbox.publish_pending(batch=1) == 1
    assert [e.kind for e in outbox.published] == [
        Kind.QUOTA_GRANTED, Kind.TOKENS_RESERVED, Kind.RESERVATION_SETTLED]
    assert outbox.published == ledger.events_after(0)


def test_a_ledger_record_carries_the_levels_and_the_price_version_and_v1_readers_skip_them(
        ) -> None:
    import io
    import json

    import fastavro

    from quotaflow.events.resources import data_path

    held = StoredEvent(43, "acme", 8, Kind.TOKENS_RESERVED, "r2", "2026-11", 100, 0, None,
                       RECORDED, "k1", "ml", 160, 0, "smollm2", 3, 40)
    message = to_kafka(ledger_envelope(held))
    entry = from_kafka(message.headers, message.key, message.value).payload
    assert isinstance(entry, LedgerEntry)
    assert (entry.key_id, entry.team_id, entry.usd, entry.model, entry.price_version,
            entry.input_tokens) == ("k1", "ml", 160, "smollm2", 3, 40)
    schemas = data_path("schemas") / "ledger"
    v1, v2 = (fastavro.parse_schema(json.loads((schemas / f"v{n}.avsc").read_text()))
              for n in (1, 2))
    old = fastavro.schemaless_reader(io.BytesIO(message.value or b""), v2, v1)
    assert isinstance(old, dict) and old["amount"] == 100 and "usd" not in old
