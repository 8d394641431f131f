"""Freeing the in-flight slots of ended requests (`quotaflow.runtime.door.limits` caps a key's
requests in flight). Each place that writes a terminal status frees the slots after it: record,
the door's void, and settle's sweep for the requests it ends past their deadline. A release
lost to a crash between the two is made up by the slot's own deadline
(`Settings.inflight_slot_ttl_s`)."""

from __future__ import annotations

from collections.abc import Sequence

from quotaflow.ports import InflightSlots


def release_slots(slots: InflightSlots | None, ended: Sequence[tuple[str, str]]) -> None:
    """Free the in-flight slots of the ended (tenant, request id)s, one call per tenant."""
    if slots is None:
        return
    by_tenant: dict[str, list[str]] = {}
    for tenant, request_id in ended:
        by_tenant.setdefault(tenant, []).append(request_id)
    for tenant, request_ids in by_tenant.items():
        slots.release(tenant, request_ids)
