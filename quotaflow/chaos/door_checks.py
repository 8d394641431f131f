"""The chaos verdict's checks of what the door answered: each bad input, valid send and resend
(`door_findings`), and each hostile client of rules 7 and 8 (`hostile_findings`). Pure, like
`checks`, which joins them into the verdict."""

from __future__ import annotations

import re

from quotaflow.chaos.facts import Outcome, Snapshot
from quotaflow.events.status import LedgerKind

INTERNALS = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b|\.py\b|NoneType")


def door_findings(outcomes: list[Outcome]) -> list[str]:
    """Bad input not answered 4xx, or answered naming internals; a valid event refused other
    than for quota, or never answered; an exact resend of an accepted event not given that
    event's request id."""
    first = {o.index: o for o in outcomes if o.kind == "new"}
    out = []
    for o in outcomes:
        if o.kind == "hostile":
            continue  # `hostile_findings`
        if o.kind == "bad":
            if o.status is None or not 400 <= o.status < 500:
                out.append(f"bad input {o.bad} answered {o.status or 'nothing'} {o.detail}")
            elif INTERNALS.search(o.detail):
                out.append(f"bad input {o.bad} answered naming internals: {o.detail}")
        elif o.status is None or o.status >= 500:
            out.append(f"{o.kind} send {o.index} unanswered ({o.status or 'no answer'} "
                       f"{o.detail})")
        elif o.kind == "resend" and o.original in first and first[o.original].status == 202:
            if o.status != 202 or o.request_id != first[o.original].request_id:
                out.append(f"resend {o.index} of accepted send {o.original} answered "
                           f"{o.status} {o.request_id or o.detail}")
        elif o.status != 202 and o.status != 429 and o.kind != "resend":
            out.append(f"valid {o.kind} send {o.index} refused {o.status} {o.detail}")
    return out


FLOODS = ("wait-flood", "get-flood")


def hostile_findings(snap: Snapshot, outcomes: list[Outcome]) -> list[str]:
    """Each hostile client (`chaos.hostile`) answered as rule 7 and 8 say: a flood over the
    key's cap or rate gets 429s and never a 5xx or silence; a request whose client hung up is
    billed less than it reserved (only the tokens generated before); of a call's attempts
    retried after 5xx answers, at most one is billed."""
    settled: dict[str, list[int]] = {}
    reserved: dict[str, int] = {}
    for ev in snap.ledger:
        if ev.request_id is None:
            continue
        if ev.kind == LedgerKind.RESERVATION_SETTLED and ev.amount > 0:
            settled.setdefault(ev.request_id, []).append(ev.amount)
        elif ev.kind == LedgerKind.TOKENS_RESERVED:
            reserved[ev.request_id] = ev.amount
    out = []
    for o in (o for o in outcomes if o.kind == "hostile"):
        if o.status is None or o.status >= 500:
            out.append(f"hostile {o.bad} answered {o.status or 'nothing'} {o.detail}")
        elif o.bad in FLOODS and o.status != 429:
            out.append(f"hostile {o.bad} was never limited (no 429): {o.detail}")
        elif o.bad.startswith("hangup") and o.request_id in settled and (
                len(settled[o.request_id]) > 1
                or settled[o.request_id][0] >= reserved.get(o.request_id, 0)):
            out.append(f"hostile {o.bad}: request {o.request_id} billed "
                       f"{settled[o.request_id]} of {reserved.get(o.request_id)} reserved, "
                       "past its client's hang-up")
        billed = [rid for rid in o.attempts if rid in settled]
        if o.bad == "retry-after-5xx" and (len(billed) > 1 or any(
                len(settled[rid]) > 1 for rid in billed)):
            out.append(f"hostile {o.bad}: one call billed {len(billed)} times ({o.detail})")
    return out
