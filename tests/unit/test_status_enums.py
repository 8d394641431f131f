"""The enums in `quotaflow.events.status` say exactly what the schemas document and the
database allows, so neither can drift from the code; a decoded record carries enum members, not
bare strings; and a member travels as the very string it replaced (the wire format did not
change)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import pytest

from quotaflow.events import avro
from quotaflow.events.catalog import EVENTS
from quotaflow.events.envelope import Envelope, UndecodableEvent, from_kafka, to_kafka
from quotaflow.events.payloads import Completed, LedgerEntry, Recorded, Settled, to_record
from quotaflow.events.resources import data_path
from quotaflow.events.status import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    FinishReason,
    LedgerKind,
    LedgerReason,
    OutcomeKind,
    RequestStatus,
    SettlementStatus,
)

REPO = Path(__file__).resolve().parents[2]
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _documented(schema: str, field: str) -> set[str]:
    """The values a schema's string field documents as `a | b | c`."""
    doc = json.loads((data_path("schemas") / schema / "v1.avsc").read_text())
    (f,) = [f for f in doc["fields"] if f["name"] == field]
    return {v.strip() for v in f["doc"].split("|")}


def _check_in(migration: str, column: str) -> set[str]:
    """The values a `CHECK (<column> IN (...))` constraint of a migration allows."""
    sql = (data_path("migrations") / migration).read_text()
    m = re.search(rf"CHECK \({column} IN \(([^)]*)\)\)", sql)
    assert m is not None, (migration, column)
    return set(re.findall(r"'([^']*)'", m.group(1)))


def _values(enum: type[RequestStatus] | type[SettlementStatus] | type[LedgerKind]
            | type[OutcomeKind] | type[LedgerReason] | type[FinishReason]) -> set[str]:
    return {m.value for m in enum}


def test_finish_reasons_hold_the_completed_schemas_documented_ones_and_its_default() -> None:
    doc = json.loads((data_path("schemas") / "completed" / "v2.avsc").read_text())
    (f,) = [f for f in doc["fields"] if f["name"] == "finish_reason"]
    assert set(re.findall(r"(\w+) \(", f["doc"])) == {"stop", "length"}
    # and `cancelled`, which infer writes when the client hung up
    assert _values(FinishReason) == {"stop", "length", "cancelled", f["default"]}
    assert Completed.__dataclass_fields__["finish_reason"].default is FinishReason.UNKNOWN


def test_settlement_statuses_are_the_settled_schemas_statuses() -> None:
    assert _values(SettlementStatus) == _documented("settled", "status")


def test_ledger_kinds_are_the_ledger_schemas_kinds_and_the_tables_check() -> None:
    assert _values(LedgerKind) == _documented("ledger", "kind")
    assert _values(LedgerKind) == _check_in("0001_ledger.sql", "kind")
    assert _check_in("0001_ledger.sql", "ended") == {
        LedgerKind.RESERVATION_SETTLED, LedgerKind.RESERVATION_RELEASED,
        LedgerKind.RESERVATION_EXPIRED}


def test_outcome_kinds_are_the_usage_outcomes_check() -> None:
    assert _values(OutcomeKind) == _check_in("0005_usage_rollups.sql", "kind")


def test_request_statuses_are_open_or_terminal_and_hold_every_ending() -> None:
    assert set(OPEN_STATUSES) | set(TERMINAL_STATUSES) == set(RequestStatus)
    assert not set(OPEN_STATUSES) & set(TERMINAL_STATUSES)
    assert [s for s in RequestStatus if s.terminal] == [
        s for s in RequestStatus if s in TERMINAL_STATUSES]
    assert {s.request_status for s in SettlementStatus} | {RequestStatus.REJECTED} == set(
        TERMINAL_STATUSES)
    assert all(s.request_status == s for s in SettlementStatus)


@pytest.mark.parametrize("path", [
    "infra/migrations/0004_request_redrive.sql",
    "quotaflow/adapters/request_store.py",
    "quotaflow/ledger/audit_records.py",
])
def test_every_status_the_sql_spells_out_is_a_request_status(path: str) -> None:
    # requests.status has no CHECK: the statements that move and read it spell the statuses
    # out, and every single-quoted word in these files is one.
    words = set(re.findall(r"'([a-z_]+)'", (REPO / path).read_text()))
    assert words, path
    assert words <= _values(RequestStatus), (path, words - _values(RequestStatus))


def test_the_ledgers_sql_writes_the_ledger_reasons() -> None:
    sql = (data_path("migrations") / "0002_ledger_functions.sql").read_text()
    # `already_ended` only the in-memory ledger names; the SQL answers a second ending by
    # the first one's outcome or an idempotency conflict, as the memory ledger does first.
    assert {r for r in LedgerReason if f"'{r}'" not in sql} == {LedgerReason.ALREADY_ENDED}
    verdicts = set(re.findall(r"verdict := '([^']+)'", sql))
    assert verdicts and verdicts <= _values(LedgerReason)


SETTLED = Settled("r-1", "acme", SettlementStatus.COMPLETED, 13, 7, 6, 5, 2, "hello", "m",
                  "v1", None, 9)
RECORDED = Recorded("r-1", "acme", RequestStatus.EXPIRED)
ENTRY = LedgerEntry(9, "acme", 3, LedgerKind.RESERVATION_SETTLED, "r-1", "2026-11", 7, 6, AT)
COMPLETED = Completed("r-1", "acme", 13, "hi", 5, 2, "m", "v1", 1.5, FinishReason.LENGTH)


def _ledger_envelope(entry: LedgerEntry) -> Envelope:
    return Envelope(EVENTS["ledger"], "ledger/9", "/quotaflow/ledger", entry.tenant, entry)


@pytest.mark.parametrize("payload, field, enum", [
    (SETTLED, "status", SettlementStatus),
    (RECORDED, "status", RequestStatus),
    (ENTRY, "kind", LedgerKind),
    (COMPLETED, "finish_reason", FinishReason),
])
def test_a_decoded_record_carries_the_enum_member_not_a_bare_string(
        payload: Settled | Recorded | LedgerEntry | Completed, field: str, enum: type) -> None:
    envelope = (_ledger_envelope(payload) if isinstance(payload, LedgerEntry)
                else Envelope.of(payload, "test"))
    message = to_kafka(envelope)
    decoded = from_kafka(message.headers, message.key, message.value).payload
    value = getattr(decoded, field)
    assert type(value) is enum
    assert value is getattr(payload, field)


@pytest.mark.parametrize("payload", [SETTLED, RECORDED, ENTRY, COMPLETED],
                         ids=lambda p: p.event_name)
def test_a_member_is_written_as_the_string_it_replaced(
        payload: Settled | Recorded | LedgerEntry | Completed) -> None:
    record = to_record(payload)
    plain = {k: (v.value if isinstance(v, Enum) else v) for k, v in record.items()}
    assert any(isinstance(v, Enum) for v in record.values())
    name, version = payload.event_name, EVENTS[payload.event_name].version
    assert avro.encode(name, version, record) == avro.encode(name, version, plain)
    assert json.dumps(record, default=str) == json.dumps(plain, default=str)


def test_a_status_no_enum_has_is_undecodable() -> None:
    message = to_kafka(Envelope.of(SETTLED, "test"))
    plain = {**to_record(SETTLED), "status": "teleported"}
    odd = replace(message, value=avro.encode("settled", 1, plain))
    with pytest.raises(UndecodableEvent, match="teleported"):
        from_kafka(odd.headers, odd.key, odd.value)
