"""Who is calling: the bearer key of the Authorization header, checked against the
`TenantDirectory`, a valid key remembered for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from quotaflow.ports import Principal, TenantDirectory
from quotaflow.runtime.problem import Problem

CACHE_S = 10.0  # a revoked key keeps working this long
CACHE_MAX = 10_000


def _unauthorized(detail: str, challenge: str = "Bearer") -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def bearer_key(authorization: str) -> str:
    """The API key of an `Authorization: Bearer <key>` header, or a 401 naming what is wrong."""
    if not authorization:
        raise _unauthorized("missing Authorization: Bearer <api key>")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("Authorization must be 'Bearer <api key>'")
    return key.strip()


class Authenticator:
    """Authenticates keys against `directory`, remembering valid ones for `cache_s`."""

    def __init__(self, directory: TenantDirectory, cache_s: float = CACHE_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.cache_s = cache_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Principal]] = {}

    def principal(self, authorization: str) -> Principal:
        """The caller's principal, or a 401 Problem."""
        api_key = bearer_key(authorization)
        now = self._monotonic()
        hit = self._cache.get(api_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.directory.authenticate(api_key)
        if found is None:
            raise _unauthorized("the API key is not valid or was revoked",
                                'Bearer error="invalid_token"')
        # Threads share the cache: single dict operations are atomic, a lost entry is harmless.
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[api_key] = (now + self.cache_s, found)
        return found
