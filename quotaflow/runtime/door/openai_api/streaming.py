"""Server-sent event bodies over a `Relay`'s events, and noticing a client that hung up.

Under gunicorn (and werkzeug) a response body is iterated by the worker thread that writes it;
when a write fails because the client is gone, the server stops iterating and calls the body's
`close()`. `HangupBody.close` before the end is therefore a hang-up, and the OpenAI door then
cancels the request: infer stops it within a few tokens and only what was generated is
charged. A quiet stream sends an SSE comment every blocking read, so a hang-up is noticed
between tokens too. Each stream holds one server thread while it runs, blocked in Redis (the
GIL released), for at most the relay's `total_s`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from quotaflow.events.status import RequestStatus
from quotaflow.runtime.door.openai_api import shapes
from quotaflow.runtime.door.openai_api.errors import SERVER, OpenAIError
from quotaflow.runtime.door.openai_api.relay import Delta, Ended, Event, Quiet, TimedOut
from quotaflow.runtime.handling import client_reason


class HangupBody:
    """A response body that calls `on_hangup` when closed before it was iterated to its end."""

    def __init__(self, parts: Iterator[bytes], on_hangup: Callable[[], None] | None) -> None:
        self.parts = parts
        self.on_hangup = on_hangup
        self.finished = False
        self.closed = False

    def __iter__(self) -> HangupBody:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.parts)
        except StopIteration:
            self.finished = True
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        close = getattr(self.parts, "close", None)
        if close is not None:
            close()
        if not self.finished and self.on_hangup is not None:
            self.on_hangup()


def timed_out() -> OpenAIError:
    return OpenAIError(504, "the request did not end in time; it was cancelled, charged at most "
                       "the tokens generated (nothing without an Idempotency-Key)", SERVER,
                       "timeout")


def openai_chunks(a: shapes.Answer, events: Iterable[Event], *,
                  ended_error: Callable[[Ended], OpenAIError],
                  usage_of: Callable[[Ended], dict[str, int]],
                  cancel: Callable[[], None]) -> Iterator[bytes]:
    """A completion's chunks: the deltas in order, the finish reason, the usage chunk when
    asked for, then `[DONE]`; an error object instead when the request did not complete."""
    first = a.kind == "chat"
    if first:
        yield shapes.sse(shapes.chunk(a, "", first=True))
    for event in events:
        if isinstance(event, Quiet):
            yield shapes.KEEP_ALIVE
        elif isinstance(event, Delta):
            yield shapes.sse(shapes.chunk(a, event.text))
        elif isinstance(event, TimedOut):
            cancel()
            yield shapes.sse(timed_out().body())
            return
        elif isinstance(event, Ended):
            if event.status != RequestStatus.COMPLETED:
                yield shapes.sse(ended_error(event).body())
                return
            yield shapes.sse(shapes.chunk(a, None, event.finish_reason))
            if a.include_usage:
                yield shapes.sse(shapes.usage_chunk(a, usage_of(event)))
            yield shapes.sse("[DONE]")
            return


def request_events(events: Iterable[Event]) -> Iterator[bytes]:
    """`GET /v1/requests/{id}/events`: `delta` events with the entry id (what Last-Event-ID
    resumes after), then one `end` event with the status, finish reason and token counts."""
    for event in events:
        if isinstance(event, Quiet):
            yield shapes.KEEP_ALIVE
        elif isinstance(event, Delta):
            yield shapes.sse({"text": event.text}, "delta", event.entry_id)
        elif isinstance(event, TimedOut):
            yield shapes.sse({"status": "timeout", "detail": "the request did not end while "
                              "this stream was open; connect again to read on"}, "end")
            return
        elif isinstance(event, Ended):
            usage: dict[str, int | None] = {"prompt_tokens": event.prompt_tokens,
                                            "completion_tokens": event.completion_tokens}
            body: dict[str, object] = {"status": event.status,
                                       "finish_reason": event.finish_reason, "usage": usage}
            if event.view is not None:
                reason = event.view.reason
                body["reason"] = None if reason is None else client_reason(reason)
                usage["charged_tokens"] = event.view.charged_tokens
            yield shapes.sse(body, "end")
            return


def prepend(first: Event | None, rest: Iterator[Event]) -> Iterator[Event]:
    """`rest` with `first` (an event already taken from it) put back in front."""
    return chain([] if first is None else [first], rest)
