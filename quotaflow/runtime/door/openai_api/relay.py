"""Follow one request to its end: its token deltas from the `TokenStream`, in order, then how it
ended. Both doors render these events: the OpenAI door as completion chunks, the CloudEvents
door (`GET /v1/requests/{id}/events`) as its own server-sent events.

A reader keeps the id of the last entry it handled and reads on after it, so nothing is missed
or sent twice, and a reconnecting client resumes after the id it last saw. The stream holds no
end when infer failed, the request was rejected before infer, or it was not streamed: the
request record then says how it ended, and the relay looks at it whenever the stream has been
quiet for a while. Every wait is bounded: a blocking read is cut short of the socket timeout,
and the whole relay ends at `Timing.total_s`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from quotaflow.events.status import TERMINAL_STATUSES, FinishReason, RequestStatus
from quotaflow.model.token_stream import START, id_key
from quotaflow.ports import RequestStore, RequestView, StreamEnd, TokenStream
from quotaflow.runtime.timeouts import DOOR_LONGEST_WAIT_S

TERMINAL = TERMINAL_STATUSES


@dataclass(frozen=True)
class Timing:
    """How the relay waits: each blocking read, how often a quiet stream's record is looked
    at (more often before the first token, when a rejection is likeliest), and in all."""

    block_ms: int = 1000
    check_first_s: float = 0.1
    check_s: float = 2.0
    total_s: float = float(DOOR_LONGEST_WAIT_S)  # under Knative's timeoutSeconds


@dataclass(frozen=True)
class Delta:
    """New text; `entry_id` is what a client resumes after."""

    entry_id: str
    text: str


@dataclass(frozen=True)
class Ended:
    """How the request ended: by the stream's end entry (`status` completed), or by its record
    when the stream has none (`finish_reason` derived, `view` set)."""

    status: RequestStatus
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int
    view: RequestView | None = None


@dataclass(frozen=True)
class Quiet:
    """Nothing new for one blocking read: a renderer may send a keep-alive (which is also how
    a hung-up client is noticed between tokens)."""


@dataclass(frozen=True)
class TimedOut:
    """The relay ran for `Timing.total_s` without an end."""


Event = Delta | Ended | Quiet | TimedOut


def finish_reason(view: RequestView, max_tokens: int | None) -> FinishReason | None:
    """A finished request's OpenAI finish reason, from its record: "length" when it used all
    of `max_tokens`, else "stop"; None when `max_tokens` is not known."""
    if max_tokens is None:
        return None
    return (FinishReason.LENGTH if (view.completion_tokens or 0) >= max_tokens
            else FinishReason.STOP)


def from_end(end: StreamEnd) -> Ended:
    return Ended(RequestStatus.COMPLETED, end.finish_reason, end.prompt_tokens,
                 end.completion_tokens)


def from_view(view: RequestView, max_tokens: int | None) -> Ended:
    return Ended(view.status, finish_reason(view, max_tokens), view.prompt_tokens or 0,
                 view.completion_tokens or 0, view)


class Relay:
    """The events of request `request_id` of `tenant` after entry `after_id`."""

    def __init__(self, stream: TokenStream | None, requests: RequestStore, tenant: str,
                 request_id: str, after_id: str = START, max_tokens: int | None = None,
                 timing: Timing | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        id_key(after_id)  # ValueError for a malformed id, before anything is read
        self.stream = stream
        self.requests = requests
        self.tenant = tenant
        self.request_id = request_id
        self.after_id = after_id
        self.max_tokens = max_tokens
        self.timing = timing or Timing()
        self.monotonic = monotonic
        self.ended: Ended | None = None
        self.text = ""  # what the client has, for a record's output to be continued after
        self.text_known = True

    def events(self) -> Iterator[Event]:
        """Deltas in order, then one `Ended` (or `TimedOut`); `Quiet` while waiting."""
        t = self.timing
        started = self.monotonic()
        checked = started
        seen_delta = False
        if self.after_id != START:
            self.text = self._text_until(self.after_id)
            self.text_known = bool(self.text)
        while True:
            now = self.monotonic()
            if now - started >= t.total_s:
                yield TimedOut()
                return
            entries = (self.stream.read(self.request_id, self.after_id, t.block_ms)
                       if self.stream is not None else [])
            for entry in entries:
                self.after_id = entry.entry_id
                if entry.end is not None:
                    self.ended = from_end(entry.end)
                    yield self.ended
                    return
                if entry.delta is not None:
                    seen_delta = True
                    self.text += entry.delta.text
                    yield Delta(entry.entry_id, entry.delta.text)
            if entries:
                continue
            if self.stream is None:
                time.sleep(min(t.check_first_s, t.block_ms / 1000))
            now = self.monotonic()
            if now - checked >= (t.check_s if seen_delta else t.check_first_s):
                checked = now
                ended = self._ended_by_record()
                if ended is not None:
                    yield from ended
                    return
            yield Quiet()

    def _ended_by_record(self) -> list[Event] | None:
        view = self.requests.fetch(self.tenant, self.request_id)
        if view is None or view.status not in TERMINAL:
            return None
        if self.stream is not None and self.stream.read(self.request_id, self.after_id):
            return None  # infer ended the stream just now: read it on
        out: list[Event] = []
        output = view.output or ""
        if (view.status == RequestStatus.COMPLETED and self.text_known
                and output.startswith(self.text) and output != self.text):
            # Not streamed (or infer died before its end entry): the record has the rest.
            out.append(Delta(self.after_id, output[len(self.text):]))
            self.text = output
        self.ended = from_view(view, self.max_tokens)
        return [*out, self.ended]


    def _text_until(self, until: str) -> str:
        """The text of the deltas up to entry `until`: what a resuming client already has."""
        text, at, last = "", START, id_key(until)
        while self.stream is not None:
            entries = self.stream.read(self.request_id, at, 0, 256)
            for entry in entries:
                if id_key(entry.entry_id) > last:
                    return text
                at = entry.entry_id
                text += entry.delta.text if entry.delta is not None else ""
            if len(entries) < 256:
                break
        return text


def first_event(events: Iterator[Event], wait_s: float,
                monotonic: Callable[[], float] = time.monotonic) -> Event | None:
    """The first event that is not `Quiet`, waiting up to about `wait_s`; None if none came."""
    started = monotonic()
    for event in events:
        if not isinstance(event, Quiet):
            return event
        if monotonic() - started >= wait_s:
            return None
    return None


def charged_view(requests: RequestStore, tenant: str, request_id: str, wait_s: float,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 gone: Callable[[], bool] = lambda: False) -> RequestView | None:
    """The request's record once it has ended (what the ledger charged), polling with backoff
    for up to `wait_s`, or until `gone()` (the client hung up); None if it did not end. The
    backoff stops at 25 ms: at 200 ms a request that ended 150 ms after it was stored was
    answered at 310 ms (the pipeline takes 100-150 ms one request at a time; BENCHMARKS.md, the
    latency real Kafka allows)."""
    deadline = monotonic() + wait_s
    pause = 0.005
    while True:
        view = requests.fetch(tenant, request_id)
        if view is not None and view.status in TERMINAL:
            return view
        if monotonic() >= deadline or gone():
            return None
        sleep(pause)
        pause = min(pause * 2, 0.025)
