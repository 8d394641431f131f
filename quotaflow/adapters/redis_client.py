"""Redis clients for long-running processes: bounded waits and retries on a new connection."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect_redis(url: str, timeout_ms: int = 0) -> redis.Redis:
    """A client that gives up on a connect or a reply after `timeout_ms` (0: never) and
    retries a command twice on a new connection after a connection error or a timeout."""
    timeout = timeout_ms / 1000 if timeout_ms else None
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)
