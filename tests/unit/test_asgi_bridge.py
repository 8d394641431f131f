"""`asgi_bridge.WsgiOnThreads`, driven as an ASGI server drives it: the body limit before the
body is buffered, the response in chunks, a disconnect as the response's early `close()`, and
the disconnect flag a waiting handler reads."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, request

from quotaflow.runtime.asgi_bridge import DISCONNECTED, WsgiOnThreads
from quotaflow.runtime.door.openai_api.streaming import HangupBody

Message = dict[str, Any]


def scope(method: str = "POST", path: str = "/", headers: Iterable[tuple[str, str]] = ()
          ) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "query_string": b"",
            "root_path": "", "server": ("127.0.0.1", 8080), "client": ("10.0.0.9", 40000),
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


def serve(app: Any, scope_: dict[str, Any], inbox: list[Message],
          hang_up: Callable[[list[Message]], bool] = lambda _sent: False,
          limit: int = 100) -> tuple[list[Message], int]:
    """The messages sent, and how many times receive() was awaited for the body. After the
    inbox, receive() waits (the client is there) until `hang_up(sent)` says it left."""
    sent: list[Message] = []
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        if inbox:
            reads += 1
            return inbox.pop(0)
        while not hang_up(sent):
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    bridge = WsgiOnThreads(app, threads=4, max_body_bytes=limit)
    try:
        asyncio.run(bridge(scope_, receive, send))
    finally:
        bridge.close()
    return sent, reads


def echo_app() -> Flask:
    app = Flask("echo")

    @app.post("/")
    def echo() -> Response:
        return Response(request.get_data() + b"|" + request.remote_addr.encode())

    return app


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_body_over_the_limit_by_its_content_length_is_refused_before_a_byte_is_read() -> None:
    sent, reads = serve(echo_app(), scope(headers=[("content-length", "101")]),
                        [{"type": "http.request", "body": b"x" * 101}])
    assert reads == 0
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/problem+json"
    assert json.loads(body_of(sent))["status"] == 413


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True},
              {"type": "http.request", "body": b"x" * 60, "more_body": True},
              {"type": "http.request", "body": b"x" * 60, "more_body": False}]
    sent, reads = serve(echo_app(), scope(), chunks)
    assert reads == 2  # the third part is never read
    assert sent[0]["status"] == 413


def test_a_chunked_body_within_the_limit_reaches_the_app_whole() -> None:
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"cd", "more_body": False}]
    sent, _ = serve(echo_app(), scope(), chunks)
    assert sent[0]["status"] == 200
    assert body_of(sent) == b"abcd|10.0.0.9"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_disconnect_closes_the_streamed_body_before_its_end_which_is_the_hangup() -> None:
    hung_up = threading.Event()

    def beats() -> Iterator[bytes]:
        while True:
            yield b": keep-alive\n\n"

    app = Flask("stream")

    @app.get("/")
    def stream() -> Response:
        return Response(HangupBody(beats(), hung_up.set), mimetype="text/event-stream")

    sent, _ = serve(app, scope("GET"), [{"type": "http.request", "body": b""}],
                    hang_up=lambda sent: len(sent) >= 3)
    assert hung_up.is_set()
    assert sent[0]["status"] == 200
    assert all(m.get("more_body", True) for m in sent)  # never ended as if complete


def test_a_handler_still_waiting_sees_the_client_has_gone() -> None:
    app = Flask("wait")
    saw: list[bool] = []

    @app.post("/")
    def wait() -> Response:
        gone: threading.Event = request.environ[DISCONNECTED]
        saw.append(gone.wait(10))
        return Response("late")

    sent, _ = serve(app, scope(), [{"type": "http.request", "body": b""}],
                    hang_up=lambda _sent: True)
    assert saw == [True]
    assert sent == []  # nothing is sent to a client that left
