#!/usr/bin/env bash
# Sets up (infra/local/setup.sh), builds the model once (cached), starts the whole pipeline on
# local processes, creates a demo tenant, answers a real prompt, prints the answer and the billed
# tokens, then keeps serving on http://127.0.0.1:8080 until Ctrl-C.
# Extra arguments go to `quotaflow demo` (see `.venv/bin/quotaflow demo --help`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/local/setup.sh
exec .venv/bin/quotaflow demo "$@"
