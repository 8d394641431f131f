#!/usr/bin/env bash
# Sets up (infra/local/setup.sh) and runs the whole test suite, slow tests included.
# Tests start what they need: Kafka (a 3-node Apache Kafka cluster, Tansu where Java is absent),
# S3 (moto), and PostgreSQL/Redis when none is reachable on 127.0.0.1. Extra arguments go to the
# second pytest run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/local/setup.sh
echo "[test] ruff, mypy --strict"
.venv/bin/ruff check .
.venv/bin/mypy
# The unit tests promise to need no PostgreSQL, Redis or Kafka: where this machine can make a
# network namespace of its own (root, or unprivileged user namespaces), they run in one with
# nothing reachable, so a test that quietly used a service fails here.
if unshare -n true 2>/dev/null; then
  echo "[test] unit tests, with no network"
  unshare -n -- .venv/bin/pytest -q tests/unit
else
  echo "[test] unit tests (no network namespace available here: services stay reachable)"
  .venv/bin/pytest -q tests/unit
fi
echo "[test] contract, integration, end-to-end and deploy tests"
exec .venv/bin/pytest --ignore=tests/unit "$@"
