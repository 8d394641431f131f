"""The alert receiver a chaos run starts: a small HTTP server on loopback that verifies each
POST's Standard Webhooks signature with the alerts' secret and keeps every attempt
(webhook-id, body, whether the signature verified, what it answered) for `level_checks`.

It answers the first attempt of each webhook-id 503 and every later one 204, so each
delivery is retried once: the checks then see that a retry keeps its webhook-id and body."""

from __future__ import annotations

import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from quotaflow.alerts import webhooks
from quotaflow.chaos.facts import Receipt

TOLERANCE_S = 300  # Standard Webhooks: a timestamp further than this from now is refused


def verifies(secret: str, webhook_id: str, timestamp: str, body: str, header: str,
             now_s: float) -> bool:
    """Whether `header` (`v1,<base64>`, space-separated when several) holds the signature of
    `body` sent as `webhook_id` at `timestamp`, and the timestamp is within the tolerance."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - sent_at) > TOLERANCE_S:
        return False
    want = webhooks.signature(secret, webhook_id, sent_at, body)
    return any(hmac.compare_digest(want, sig) for sig in header.split())


class Receiver:
    """The server, on a port of its own, until `close`."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="chaos-hooks",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where the alerts POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def receipts(self) -> list[Receipt]:
        """Every attempt so far, in arrival order."""
        with self._lock:
            return list(self._receipts)

    def take(self, webhook_id: str, body: str, ok: bool) -> int:
        """Keep one attempt; the status to answer it."""
        with self._lock:
            seen = any(r.webhook_id == webhook_id for r in self._receipts)
            status = 204 if seen else 503
            self._receipts.append(Receipt(webhook_id, body, ok, status))
        return status

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                webhook_id = self.headers.get("webhook-id", "")
                ok = verifies(receiver.secret, webhook_id,
                              self.headers.get("webhook-timestamp", ""), body,
                              self.headers.get("webhook-signature", ""), time.time())
                self.send_response(receiver.take(webhook_id, body, ok))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the run's report says what arrived

        return Handler
