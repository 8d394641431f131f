"""The per-tenant order check of a chaos run (`quotaflow.chaos.order`), on records and ledger
rows built by hand: each promise it states is broken once here and must be found."""

from __future__ import annotations

from quotaflow.chaos.facts import LedgerRow, TopicRecord
from quotaflow.chaos.order import find_order_breaks


def on(topic: str, tenant: str, ids: list[str], partition: int = 0,
       first_offset: int = 0) -> list[TopicRecord]:
    return [TopicRecord(topic, partition, first_offset + i, tenant, r)
            for i, r in enumerate(ids)]


def decided(tenant: str, ids: list[str], first_seq: int = 1) -> list[LedgerRow]:
    return [LedgerRow(first_seq + i, tenant, "2026-12", "TokensReserved" if i % 2 else
                      "RequestRejected", r, 10) for i, r in enumerate(ids)]


def test_a_pipeline_that_kept_each_tenants_order_has_no_finding() -> None:
    records = (on("admitted", "a", ["r1", "r2", "r3"]) + on("admitted", "b", ["s1"], 1)
               + on("estimated", "a", ["r1", "r2", "r3"], 4) + on("estimated", "b", ["s1"], 5))
    ledger = [LedgerRow(1, "a", "2026-12", "QuotaGranted", None, 100),
              *decided("a", ["r1", "r2"], 2), *decided("b", ["s1"], 4),
              *decided("a", ["r3"], 5)]
    assert find_order_breaks(records, ledger) == []


def test_a_redelivered_record_later_in_the_partition_keeps_its_first_place() -> None:
    records = (on("admitted", "a", ["r1", "r2"]) + on("estimated", "a", ["r1", "r2", "r1"]))
    assert find_order_breaks(records, decided("a", ["r1", "r2"])) == []


def test_a_tenant_whose_records_are_on_two_partitions_is_found() -> None:
    records = on("estimated", "a", ["r1"], 0) + on("estimated", "a", ["r2"], 3, 7)
    assert find_order_breaks(records, []) == [
        "tenant a's records on estimated are on partitions [0, 3]"]


def test_ledger_decisions_out_of_the_order_of_estimated_are_found() -> None:
    records = on("estimated", "a", ["r1", "r2", "r3"])
    found = find_order_breaks(records, decided("a", ["r1", "r3", "r2"]))
    assert found == ["tenant a: ledger decisions and `estimated` diverge at request 2 of 3: "
                     "r3 vs r2"]


def test_estimated_out_of_the_order_of_admitted_is_found() -> None:
    records = on("admitted", "a", ["r1", "r2"]) + on("estimated", "a", ["r2", "r1"])
    assert find_order_breaks(records, decided("a", ["r2", "r1"])) == [
        "tenant a: `estimated` and `admitted` diverge at request 1 of 2: r2 vs r1"]


def test_a_request_ended_by_the_reconciler_without_reserve_is_outside_the_order() -> None:
    # r9 was closed at its deadline before it reached `estimated`: no record to place it by.
    records = on("estimated", "a", ["r1", "r2"])
    assert find_order_breaks(records, decided("a", ["r9", "r1", "r2"])) == []


def test_ledger_events_out_of_ledger_order_on_the_ledger_topic_are_found() -> None:
    records = [TopicRecord("ledger", 2, 0, "a", "r1", 5), TopicRecord("ledger", 2, 1, "a", "r2", 4),
               TopicRecord("ledger", 2, 2, "b", "s1", 6)]
    assert find_order_breaks(records, []) == [
        "tenant a's ledger events are out of ledger order on the ledger topic"]
