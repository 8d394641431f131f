"""Redis clients for long-running processes: bounded waits and retries on a new connection,
to one Redis or to a Redis Cluster, in the clear or over TLS.

The URL says where and how: `redis://` or `rediss://` (TLS), a password as
`rediss://:PASSWORD@host:port/0` (or `user:PASSWORD@` with Redis ACLs), and redis-py's own
query options, among them `ssl_ca_certs=/path/ca.pem` for a server certificate signed by a
private CA (the certificate and its host name are verified). The mode (`QF_REDIS_MODE`) says
whether the URL names one server or any node of a cluster, whose other nodes the client then
discovers; every Lua script keeps the keys of one call in one hash slot (`RedisClient`'s users
name their keys with a hash tag), so the same adapters run on both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry

RedisMode = Literal["standalone", "cluster"]
REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "cluster")

# What the adapters take: they use only commands both clients route (a cluster client sends a
# single-key command or a script call to the node that holds its slot).
RedisClient: TypeAlias = "redis.Redis | RedisCluster"


def connect_redis(url: str, timeout_ms: int = 0,
                  mode: RedisMode = "standalone") -> RedisClient:
    """A client that gives up on a connect or a reply after `timeout_ms` (0: never) and
    retries a command twice on a new connection after a connection error or a timeout;
    a `RedisCluster` when `mode` is "cluster" (the URL names any one node; db 0 only)."""
    timeout = timeout_ms / 1000 if timeout_ms else None
    options: dict[str, Any] = dict(
        socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)
    if mode == "cluster":
        return RedisCluster.from_url(url, **options)
    if mode != "standalone":
        raise ValueError(f"Redis mode must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
    return redis.Redis.from_url(url, **options)


def is_cluster(client: RedisClient) -> bool:
    """Whether `client` talks to a Redis Cluster (a command may span one hash slot only)."""
    return isinstance(client, RedisCluster)


def socket_timeout_s(client: RedisClient) -> float | None:
    """The client's reply timeout in seconds (None: it waits for ever)."""
    kwargs: dict[str, Any] = (client.nodes_manager.connection_kwargs
                              if isinstance(client, RedisCluster)
                              else client.connection_pool.connection_kwargs)
    timeout = kwargs.get("socket_timeout")
    return float(timeout) if timeout else None


def call_script(client: RedisClient, script: Script,
                calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Call `script` once per `(keys, args)` in one pipelined round trip (no MULTI: each call
    is atomic on its own, and on a cluster the calls go to the nodes of their slots); the
    replies in order. The script is called by its hash alone (redis-py's own pipeline would
    ask SCRIPT EXISTS first, a second round trip every time). A call refused because its
    server does not know the script (restarted, flushed, a new node) ran nothing: those calls
    alone are sent again once the script is loaded (on every primary of a cluster), so a
    call that did run is never repeated. The first other error is raised."""
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for i in pending:
            keys, args = calls[i]
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        missing = []
        for i, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
            if attempt == 1 and isinstance(reply, NoScriptError):
                missing.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                replies[i] = reply
        if not missing:
            break
        script.sha = client.script_load(script.script)
        pending = missing
    return replies
