"""The `TokenStream` port on Redis: a stream per request and a cancellation key.

    qf:stream:<request_id>   XADD entries  {seq, delta}  with id 0-<seq>
                             then the end  {done: 1, finish_reason, prompt_tokens,
                                            completion_tokens}  with id 1-0
    qf:cancel:<request_id>   "1" while the request is cancelled

Why Redis streams: entries are ordered and addressed by id, so a reader (the door's SSE
relay) reads on after the last id it sent and a reconnecting client resumes with no gap and no
duplicate; XREAD BLOCK wakes the reader as soon as infer appends; and Redis is already deployed
beside the projection. Ids derive from sequence numbers because Redis refuses an XADD whose id
is not above the stream's last: a redelivered batch adds nothing twice, and nothing lands after
the end. MAXLEN and a time to live refreshed on every write bound what a stream can hold and
make an abandoned one disappear; a cancellation key expires on its own.

One `publish` is one pipelined round trip: every XADD and EXPIRE of the decode step, and an
MGET of the watched requests' cancellation keys (on a Redis Cluster, where those keys lie in
different slots, one GET each in the same pipeline)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import redis

from quotaflow.adapters.redis_client import (
    RedisClient,
    RedisMode,
    connect_redis,
    is_cluster,
    socket_timeout_s,
)
from quotaflow.events.status import FinishReason
from quotaflow.model.base import StreamEnd, TokenDelta
from quotaflow.model.token_stream import END_ID, START, StreamEntry, delta_id

PREFIX = "qf:"
STREAM_TTL_S = 900  # after the last write: time for a slow or reconnecting reader
CANCEL_TTL_S = 900  # longer than a request stays in infer
MAXLEN = 20_000  # entries per stream (deltas are at most the completion tokens)
_READ_MARGIN_MS = 250  # a blocking read returns this much before the socket would time out


def stream_key(request_id: str) -> str:
    return f"{PREFIX}stream:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}cancel:{request_id}"


def _already_there(error: Exception) -> bool:
    return isinstance(error, redis.ResponseError) and "equal or smaller" in str(error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(request_id: str, entry_id: Any, raw: dict[Any, Any]) -> StreamEntry:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if fields.get("done") == "1":
        return StreamEntry(_text(entry_id), end=StreamEnd(
            request_id, FinishReason(fields["finish_reason"]), int(fields["prompt_tokens"]),
            int(fields["completion_tokens"])))
    return StreamEntry(_text(entry_id), delta=TokenDelta(request_id, int(fields["seq"]),
                                                         fields["delta"]))


class RedisTokenStream:
    """The `TokenStream` over one Redis client (redis-py clients are thread-safe)."""

    def __init__(self, client: RedisClient, stream_ttl_s: int = STREAM_TTL_S,
                 cancel_ttl_s: int = CANCEL_TTL_S, maxlen: int = MAXLEN) -> None:
        self.redis = client
        self.stream_ttl_s = stream_ttl_s
        self.cancel_ttl_s = cancel_ttl_s
        self.maxlen = maxlen

    @classmethod
    def connect(cls, url: str, timeout_ms: int = 0,
                mode: RedisMode = "standalone") -> RedisTokenStream:
        return cls(connect_redis(url, timeout_ms, mode))

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        """XADD each delta and end, refresh the streams' TTL, read the watched cancel keys."""
        pipe = self.redis.pipeline(transaction=False)
        touched: dict[str, None] = {}
        for d in deltas:
            key = stream_key(d.request_id)
            pipe.xadd(key, {"seq": d.seq, "delta": d.text}, id=delta_id(d.seq),
                      maxlen=self.maxlen, approximate=True)
            touched[key] = None
        for e in ends:
            key = stream_key(e.request_id)
            pipe.xadd(key, {"done": 1, "finish_reason": e.finish_reason,
                            "prompt_tokens": e.prompt_tokens,
                            "completion_tokens": e.completion_tokens}, id=END_ID,
                      maxlen=self.maxlen, approximate=True)
            touched[key] = None
        for key in touched:
            pipe.expire(key, self.stream_ttl_s)
        ids = list(dict.fromkeys(watch))
        one_get = is_cluster(self.redis)
        if ids and one_get:
            for i in ids:
                pipe.get(cancel_key(i))
        elif ids:
            pipe.mget([cancel_key(i) for i in ids])
        if not (touched or ids):
            return set()
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not _already_there(reply):
                raise reply
        flags = (replies[len(replies) - len(ids):] if one_get else replies[-1]) if ids else []
        return {i for i, flag in zip(ids, flags, strict=True) if flag is not None}

    def cancel(self, request_id: str) -> None:
        self.redis.set(cancel_key(request_id), 1, ex=self.cancel_ttl_s)

    def cancelled(self, request_ids: Collection[str]) -> set[str]:
        return self.publish(watch=request_ids)

    def read(self, request_id: str, after_id: str = START, block_ms: int = 0,
             count: int = 256) -> list[StreamEntry]:
        """XREAD after `after_id`; a wait is cut short of the client's socket timeout, so a
        caller loops on [] rather than failing."""
        timeout = socket_timeout_s(self.redis)
        if block_ms > 0 and timeout:
            block_ms = max(1, min(block_ms, int(timeout * 1000) - _READ_MARGIN_MS))
        reply: Any = self.redis.xread({stream_key(request_id): after_id}, count=count,
                                      block=block_ms if block_ms > 0 else None)
        # RESP2's reply: [[key, [(id, fields), ...]]], or nothing when the wait ran out.
        return [_entry(request_id, entry_id, raw)
                for _key, entries in (reply or []) for entry_id, raw in entries]
