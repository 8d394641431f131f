#!/usr/bin/env bash
# Sets up (infra/local/setup.sh) and runs the whole test suite, slow tests included.
# Tests start what they need: a Kafka-protocol broker (Tansu), S3 (moto), and PostgreSQL/Redis
# when none is reachable on 127.0.0.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/local/setup.sh
echo "[test] ruff, mypy --strict, pytest"
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
