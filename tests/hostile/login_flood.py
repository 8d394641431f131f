"""A bounded flood of random well-formed API keys against `GET /v1/quota`, as a separate
process (so that it does not share the door's interpreter lock): `python -m
tests.hostile.login_flood URL RATE SECONDS [SOURCE_ADDRESS]`. It paces `RATE` requests a second
over a few keep-alive connections for `SECONDS` (so at most RATE x SECONDS requests, loopback
only) and prints one JSON line: requests sent, seconds taken, and the count of each status."""

from __future__ import annotations

import http.client
import json
import secrets
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

CONNECTIONS = 8


def flood(url: str, rate: float, seconds: float, source: str = "127.0.0.1") -> dict[str, object]:
    """Send random keys at `rate` a second for `seconds`; what came back."""
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "loopback only"
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.monotonic()

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10,
                                          source_address=(source, 0))
        for i in range(n, total, CONNECTIONS):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            key = f"qf_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
            try:
                conn.request("GET", "/v1/quota", headers={"Authorization": f"Bearer {key}"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            with lock:
                statuses[status] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"sent": sum(statuses.values()), "seconds": round(time.monotonic() - start, 3),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


if __name__ == "__main__":
    print(json.dumps(flood(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]),
                           *sys.argv[4:5])), flush=True)
