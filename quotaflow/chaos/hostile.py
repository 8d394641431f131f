"""The chaos run's hostile clients (issue 26, rules 7 and 8): what one tenant can do with many
requests at once, or by hanging up, rather than with one bad body (`load.bad_request`).

- `wait-flood`: more open streams than the key's cap (`waits_per_key` a door process): some
  must be 429;
- `get-flood`: more GETs a second than the key's rate (`reads_per_s_per_key` a process): 429s;
- `hangup-mid-wait` / `hangup-mid-stream`: a client that leaves a second into a long answer,
  non-streamed or streamed: billed only the tokens generated before it left;
- `retry-after-5xx`: one call sent with an Idempotency-Key until answered below 500, as a
  client retries: whatever attempts a 5xx voided, at most one of them is billed.

Each returns its `Outcome`: the status the rule expects (429, 499 for a hang-up, the final
answer of the retries) or the first 5xx or silence seen, and the request ids `checks` reads
the ledger for."""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from quotaflow.chaos.facts import Outcome
from quotaflow.chaos.plan import Send
from quotaflow.functions.admit.handler import request_id_for
from quotaflow.runtime.door.openai_api.service import SOURCE

HANG_UP_AFTER_S = 1.0
LONG = 400  # prompt words and max_tokens of a hang-up's call: longer than HANG_UP_AFTER_S


def _call(model: str, words: int, max_tokens: int, stream: bool = False) -> bytes:
    prompt = " ".join(f"w{i}" for i in range(words))
    return json.dumps({"model": model, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def _raw_post(base_url: str, key: str, body: bytes, extra: str = "") -> socket.socket:
    """A POST to the OpenAI route on a socket of its own, its answer not read."""
    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname or "", url.port or 80), timeout=30)
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                  f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n{extra}"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return sock


def _status(sock: socket.socket) -> tuple[int | None, str]:
    """The status line's code and the head of what came, or None when nothing came."""
    try:
        head = sock.recv(4096).decode("latin-1")
    except OSError:
        return None, ""
    parts = head.split(" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), head


def _worst(s: Send, statuses: list[int | None], want: int, ids: tuple[str, ...] = ()
           ) -> Outcome:
    bad = [x for x in statuses if x is None or x >= 500]
    status = bad[0] if bad else (want if want in statuses else statuses[-1])
    return Outcome(s.index, "hostile", status, detail=f"answers {sorted(map(str, statuses))}",
                   bad=s.bad, attempts=ids)


def wait_flood(s: Send, base_url: str, key: str, model: str, cap: int) -> Outcome:
    """`cap` + 4 long streams opened at once and held (`cap`: the key's waits on all the
    door's processes together): the ones over a process's cap are 429."""
    socks = [_raw_post(base_url, key, _call(model, LONG, LONG, stream=True))
             for _ in range(cap + 4)]
    try:
        statuses = [_status(sock)[0] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    return _worst(s, statuses, 429)


def get_flood(s: Send, base_url: str, key: str, rate: int) -> Outcome:
    """3 x `rate` + 60 GETs of /v1/quota on four connections, as fast as they go (`rate`:
    the key's reads a second on all the door's processes together)."""
    url = urlsplit(base_url)

    def reads(n: int) -> list[int | None]:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
        out: list[int | None] = []
        for _ in range(n):
            try:
                conn.request("GET", "/v1/quota", headers={"Authorization": f"Bearer {key}"})
                resp = conn.getresponse()
                resp.read()
                out.append(resp.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                out.append(None)
        conn.close()
        return out

    with ThreadPoolExecutor(4) as pool:
        statuses = [x for part in pool.map(reads, [(3 * rate) // 4 + 15] * 4) for x in part]
    return _worst(s, statuses, 429)


def hang_up(s: Send, base_url: str, key: str, model: str, stream: bool) -> Outcome:
    """A long call (with an Idempotency-Key, so its request id is known) left after a
    second: 499 (the client closed), or what the door answered before."""
    ce_id = f"chaos-{s.bad}-{s.index}"
    sock = _raw_post(base_url, key, _call(model, LONG, LONG, stream),
                     f"Idempotency-Key: {ce_id}\r\n")
    sock.settimeout(HANG_UP_AFTER_S)
    status, _ = _status(sock)  # a stream's headers come first; a wait's answer does not
    time.sleep(HANG_UP_AFTER_S if status is not None else 0.0)
    sock.close()
    rid = request_id_for(s.tenant, SOURCE, ce_id)
    final = status if status is not None and status != 200 else 499
    return Outcome(s.index, "hostile", final, rid, bad=s.bad, attempts=(rid,))


def retry_after_5xx(s: Send, base_url: str, key: str, model: str, budget_s: float) -> Outcome:
    """One call retried with its Idempotency-Key while it is answered 5xx or not at all."""
    ce_id = f"chaos-retry-{s.index}"
    url = urlsplit(base_url)
    statuses: list[int | None] = []
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        try:
            conn.request("POST", "/v1/chat/completions", body=_call(model, 4, 8),
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": ce_id,
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        except (OSError, http.client.HTTPException):
            statuses.append(None)
        finally:
            conn.close()
        if statuses[-1] is not None and statuses[-1] < 500:
            break
        time.sleep(0.5)
    ids = tuple(request_id_for(s.tenant, SOURCE, ce_id if n == 1 else f"{ce_id}#retry-{n}")
                for n in range(1, len(statuses) + 1))
    return Outcome(s.index, "hostile", statuses[-1] if statuses else None,
                   detail=f"answers {statuses}", bad=s.bad, attempts=ids)
