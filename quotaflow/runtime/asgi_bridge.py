"""ASGI over a WSGI app, as the Knative entry needs it: each request on its own thread of a pool
sized to the Service's `containerConcurrency`, the body refused before it is buffered when it
is over the limit, the response streamed chunk by chunk, and a client's disconnect closing the
response iterator.

Why not asgiref's `WsgiToAsgi`: it runs every request of a process on one shared thread
(`sync_to_async(thread_sensitive=True)`), so a pod set for 100 concurrent requests served one
at a time. Why not a2wsgi's `WSGIMiddleware` (a bounded pool too): it never watches `receive()`
for `http.disconnect`, and hypercorn drops what is sent after a disconnect without an error,
so a hung-up stream ran on to its end; it also leaves `wsgi.input_terminated` unset, which
makes werkzeug read a chunked body as empty.

A disconnect is what gunicorn's hang-up is to the local door: the iterator's `close()` before
its end (`streaming.HangupBody`), which cancels the request. The thread notices it after the
chunk it is producing, and a quiet stream produces a keep-alive every blocking read. A call
that has not returned its response yet (a non-streamed chat waiting for its answer) sees it
through `environ[DISCONNECTED]`, a `threading.Event`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("quotaflow.knative")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

DISCONNECTED = "quotaflow.disconnected"  # environ key: set once the client has gone


class ClientGone(Exception):
    """The client disconnected while the response was being sent."""


async def send_problem(send: Send, status: int, title: str, detail: str) -> None:
    """An RFC 9457 problem answer, the shape every door error has."""
    body = json.dumps({"title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class WsgiOnThreads:
    """`app` as an ASGI app: up to `threads` requests at once, bodies up to `max_body_bytes`."""

    def __init__(self, app: WsgiApp, threads: int, max_body_bytes: int) -> None:
        self.app = app
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"only http scopes are served, not {scope['type']}")
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        loop = asyncio.get_running_loop()
        gone = threading.Event()
        environ = wsgi_environ(scope, body)
        environ[DISCONNECTED] = gone

        async def watch() -> None:
            # After the body, an ASGI server's receive() waits until the client disconnects.
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await loop.run_in_executor(self.pool, self._run, environ, loop, send, gone)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once a 413 is answered (or the client left): refused from
        its content-length before a byte is read, else counted as it arrives."""
        limit = self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(send, 413, "Request too large",
                               f"body is {int(declared)} bytes; the limit is {limit}")
            return None
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_problem(send, 413, "Request too large",
                                   f"body exceeds the limit of {limit} bytes")
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _run(self, environ: dict[str, Any], loop: asyncio.AbstractEventLoop, send: Send,
             gone: threading.Event) -> None:
        """On a pool thread: call the app and send its response, one chunk at a time."""

        async def sending(message: Message) -> None:
            await send(message)

        def deliver(message: Message) -> None:
            if gone.is_set():
                raise ClientGone
            asyncio.run_coroutine_threadsafe(sending(message), loop).result()

        headers: list[tuple[bytes, bytes]] = []
        status: list[int] = []
        started = False  # http.response.start sent: it goes with the first chunk

        def start_response(line: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            status[:] = [int(line.split(" ", 1)[0])]
            headers[:] = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                          for k, v in response_headers]
            return write

        def write(chunk: bytes) -> None:
            nonlocal started
            if not started:
                deliver({"type": "http.response.start", "status": status[0],
                         "headers": headers})
                started = True
            if chunk:
                deliver({"type": "http.response.body", "body": chunk, "more_body": True})

        try:
            result = self.app(environ, start_response)
        except Exception:
            log.exception("the app failed before answering")
            if not gone.is_set():
                asyncio.run_coroutine_threadsafe(send_problem(
                    send, 500, "Internal Server Error", "the function failed; it is logged"),
                    loop).result()
            return
        try:
            for chunk in result:
                write(chunk)  # the headers go with the first chunk, even an empty one
            write(b"")
            deliver({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # before its end: a hang-up (streaming.HangupBody)


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI http scope and its (whole) body."""
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name == "CONTENT_LENGTH":
            continue  # the body's real length, set above
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
