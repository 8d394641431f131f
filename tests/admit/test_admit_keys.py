"""API keys on real PostgreSQL (database `qf_test_admit_keys`, Redis db 6): `quotaflow key
create|list|revoke` run as the operator runs them (a key's own rate limit listed with it), and
a key revoked through the command line is refused by a running door within 2 s (its cache
lifetime is `Settings.auth_cache_ms`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.services import fresh_database, redis_base

DATABASE, REDIS_DB = "qf_test_admit_keys", 6


@pytest.fixture(scope="module")
def settings() -> Settings:
    redis_url = f"{redis_base()}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    return replace(Settings(), postgres_url=fresh_database(DATABASE), redis_url=redis_url)


@pytest.fixture(scope="module")
def cli(settings: Settings) -> Any:
    env = {**os.environ, "POSTGRES_URL": settings.postgres_url,
           "REDIS_URL": settings.redis_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "quotaflow", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    return run


@pytest.fixture(scope="module")
def door(settings: Settings) -> Iterator[str]:
    """A door serving HTTP from a thread, as gunicorn would from one process."""
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.extensions["quotaflow"]["resources"].close()


def status_with(door: str, key: str) -> int:
    """The status of reading an unknown request with `key`: 404 once authenticated."""
    req = urllib.request.Request(f"{door}/v1/requests/{uuid.uuid4()}",
                                 headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_key_create_list_and_revoke_from_the_command_line(cli: Any) -> None:
    made = cli("tenant", "create", "keys-cli", "--tokens", "100")
    assert made.returncode == 0, made.stdout + made.stderr
    first = made.stdout.splitlines()[-1]
    second_run = cli("key", "create", "keys-cli")
    assert second_run.returncode == 0, second_run.stdout + second_run.stderr
    second = second_run.stdout.splitlines()[-1]
    third = cli("tenant", "key", "keys-cli").stdout.splitlines()[-1]
    ids = [k.split("_")[1] for k in (first, second, third)]
    assert all(k.startswith("qf_") for k in (first, second, third)) and len(set(ids)) == 3

    revoked = cli("key", "revoke", ids[1])
    assert revoked.returncode == 0 and f"revoked key {ids[1]}" in revoked.stdout
    listed = cli("key", "list", "keys-cli")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ids
    assert [r[2] != "-" for r in rows] == [False, True, False]
    for key in (first, second, third):
        assert key.split("_", 2)[2] not in listed.stdout


def test_a_key_created_with_its_own_rate_limit_is_listed_with_it(cli: Any) -> None:
    made = cli("tenant", "create", "keys-rated", "--tokens", "100", "--rate-limit", "50")
    assert made.returncode == 0, made.stdout + made.stderr
    rated = cli("key", "create", "keys-rated", "--rate-limit", "2")
    assert rated.returncode == 0, rated.stdout + rated.stderr
    ids = [run.stdout.splitlines()[-1].split("_")[1] for run in (made, rated)]
    listed = cli("key", "list", "keys-rated")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {ids[0]: "tenant's", ids[1]: "2"}


@pytest.mark.parametrize("args, message", [
    (("key", "create", "nobody"), "no tenant 'nobody'"),
    (("key", "list", "nobody"), "no tenant 'nobody'"),
    (("key", "revoke", "0123456789ab"), "no key '0123456789ab'"),
])
def test_key_commands_name_what_does_not_exist_and_exit_2(cli: Any, args: tuple[str, ...],
                                                          message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2 and message in done.stdout, done.stdout + done.stderr


def test_a_key_revoked_from_the_command_line_is_refused_within_2_s(cli: Any, door: str) -> None:
    made = cli("tenant", "create", "keys-revoked", "--tokens", "100")
    assert made.returncode == 0, made.stdout + made.stderr
    key = made.stdout.splitlines()[-1]
    assert status_with(door, key) == 404  # authenticated: no such request
    revoked = cli("key", "revoke", key.split("_")[1])
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    done = time.monotonic()
    while (status := status_with(door, key)) == 404 and time.monotonic() - done < 5:
        time.sleep(0.05)
    assert status == 401
    assert time.monotonic() - done < 2.0
