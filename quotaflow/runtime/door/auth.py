"""Who is calling: the bearer key of the Authorization header, checked against the
`TenantDirectory`.

A looked-up key is trusted for `cache_s` (`Settings.auth_cache_ms`): that bounds how long a
revoked key keeps working in one process. Failed authentications cost no query each:
- a malformed key is refused by its form alone;
- a key that failed is remembered as failed for `cache_s`;
- failed lookups are throttled by who sends them and what they aim at, never by one budget
  for everyone (one was: a flood of random keys from one client kept every new key out):
  each client address (an IPv6 one by its /64) may have `failures_per_s` keys a second
  looked up that then fail, and so may each key id (the public part of a key: guessing the
  secret of one key from many addresses is bounded too); the whole process looks up at most
  `failures_per_s_total` such keys a second, which bounds what a flood costs PostgreSQL.
  Past a budget a key not known to be valid is answered 429 with Retry-After, not 401: the
  door did not look it up, so it may be valid, and a client told 401 would drop a good key
  where one told 429 waits and retries. A key that was valid in the last hour is looked up
  whatever the budgets, so a flood does not lock out the tenants whose keys the process has
  seen; a key created during a flood from one address is served at once from any other.

What is left: a flood spread over more addresses than `failures_per_s_total /
failures_per_s` can spend the process's budget, and then a key this process has never seen
waits (429, Retry-After: 1) until the flood eases; keys it has seen are still served. So can
guesses at the secret of one known key id, for that key alone, on a process that has not yet
seen it valid."""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from quotaflow.adapters.api_keys import api_key_parts
from quotaflow.ports import Principal, TenantDirectory
from quotaflow.runtime.problem import Problem

FAILURES_PER_S = 10.0  # per client address and per key id
TOTAL_FAILURES_PER_S = 200.0  # per process: what a flood may cost PostgreSQL a second
KNOWN_S = 3600.0  # how long a key once valid may still be looked up past the budget
LOOKUP_WAIT_S = 30.0  # how long a request waits on another thread's lookup of its key
CACHE_MAX = 10_000
BUDGETS_MAX = 10_000  # client addresses and key ids with a budget of their own, each
V = TypeVar("V")


def _unauthorized(detail: str, challenge: str = "Bearer") -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def _invalid() -> Problem:
    return _unauthorized("the API key is not valid or was revoked",
                         'Bearer error="invalid_token"')


def bearer_key(authorization: str) -> str:
    """The API key of an `Authorization: Bearer <key>` header, or a 401 naming what is wrong."""
    if not authorization:
        raise _unauthorized("missing Authorization: Bearer <api key>")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("Authorization must be 'Bearer <api key>'")
    return key.strip()


class FailureBudget:
    """A token bucket of failed lookups: `rate` a second, at most `rate` at once."""

    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self.rate = rate
        self._monotonic = monotonic
        self._tokens = rate
        self._at = monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one lookup from the budget; False when none is left."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def give_back(self) -> None:
        """The lookup taken succeeded: it does not count."""
        with self._lock:
            self._tokens = min(self.rate, self._tokens + 1)


class Budgets:
    """A `FailureBudget` per name (client address or key id), for the `most` names used last:
    a name forgotten gets a full budget back, which costs at most one budget's lookups."""

    def __init__(self, rate: float, monotonic: Callable[[], float],
                 most: int = BUDGETS_MAX) -> None:
        self.rate = rate
        self._monotonic = monotonic
        self._most = most
        self._budgets: OrderedDict[str, FailureBudget] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> FailureBudget:
        with self._lock:
            budget = self._budgets.get(name)
            if budget is None:
                budget = self._budgets[name] = FailureBudget(self.rate, self._monotonic)
                if len(self._budgets) > self._most:
                    self._budgets.popitem(last=False)
            else:
                self._budgets.move_to_end(name)
            return budget


def client_of(address: str) -> str:
    """The name `address` is throttled under: itself, or for IPv6 its /64 (what one host is
    usually given, so one host cannot take a fresh budget per address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Authenticator:
    """Authenticates keys against `directory`, trusting a lookup for `cache_s`."""

    def __init__(self, directory: TenantDirectory, cache_s: float = 1.0,
                 failures_per_s: float = FAILURES_PER_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 failures_per_s_total: float = TOTAL_FAILURES_PER_S) -> None:
        self.directory = directory
        self.cache_s = cache_s
        self._monotonic = monotonic
        self.budget = FailureBudget(max(failures_per_s_total, failures_per_s), monotonic)
        self.by_client = Budgets(failures_per_s, monotonic)
        self.by_key_id = Budgets(failures_per_s, monotonic)
        # By a digest of the key, so that no secret stays in memory. Threads share these
        # maps: single dict operations are atomic, and a lost entry costs one lookup.
        self._valid: dict[bytes, tuple[float, Principal]] = {}  # (looked up at, principal)
        self._failed: dict[bytes, float] = {}  # failed lookup's time
        # Lookups in flight, by digest: concurrent requests with the same uncached key wait
        # for one lookup instead of each making its own (and each taking from the failure
        # budget: a burst of one valid key on a fresh process was answered 429).
        self._inflight: dict[bytes, Future[Principal]] = {}
        self._lock = threading.Lock()

    def principal(self, authorization: str, address: str = "") -> Principal:
        """The caller's principal, or a 401 (429 past a failure budget) Problem. `address` is
        the client's (the peer of the connection): its failures are throttled apart."""
        api_key = bearer_key(authorization)
        parts = api_key_parts(api_key)
        if parts is None:
            raise _invalid()
        digest = hashlib.sha256(api_key.encode()).digest()
        now = self._monotonic()
        valid = self._valid.get(digest)
        if valid is not None and now - valid[0] < self.cache_s:
            return valid[1]
        failed = self._failed.get(digest)
        if failed is not None and now - failed < self.cache_s:
            raise _invalid()
        with self._lock:
            pending = self._inflight.get(digest)
            if pending is None:
                mine: Future[Principal] = Future()
                self._inflight[digest] = mine
        if pending is not None:  # another thread is looking this key up: its answer is ours
            return pending.result(LOOKUP_WAIT_S)
        try:
            found = self._look_up(api_key, digest, now, valid,
                                  (self.by_client[client_of(address)],
                                   self.by_key_id[parts[0]], self.budget))
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(found)
            return found
        finally:
            with self._lock:
                del self._inflight[digest]

    def _look_up(self, api_key: str, digest: bytes, now: float,
                 valid: tuple[float, Principal] | None,
                 budgets: tuple[FailureBudget, ...]) -> Principal:
        known = valid is not None and now - valid[0] < KNOWN_S
        taken: list[FailureBudget] = []
        if not known:
            for budget in budgets:
                if not budget.take():
                    for back in taken:
                        back.give_back()
                    raise _throttled(budget, budgets)
                taken.append(budget)
        # A lookup that fails (the directory down or slow) keeps what it took, as a failed
        # authentication does: were it given back, a flood during a database blip would reach
        # the database with every request, each answered 503 (a quarter of a 1,000/s flood
        # was, under load), instead of the budget's few a second and 429 for the rest.
        found = self.directory.authenticate(api_key)
        if found is None:
            self._valid.pop(digest, None)
            _remember(self._failed, digest, now)
            raise _invalid()
        for back in taken:
            back.give_back()
        _remember(self._valid, digest, (now, found))
        return found


def _throttled(spent: FailureBudget, budgets: tuple[FailureBudget, ...]) -> Problem:
    whose = ("this client address has", "this key id has", "this server has")[
        budgets.index(spent)]
    return Problem(429, "Too many failed authentications",
                   f"{whose} sent too many invalid API keys; unchecked keys are refused for a "
                   "moment: send the request again", slug="auth-throttled",
                   headers={"Retry-After": "1"})


def _remember(cache: dict[bytes, V], digest: bytes, value: V) -> None:
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[digest] = value
