#!/usr/bin/env bash
# Set everything up, check the code with ruff, then run the test suite (CPU only; Triton kernels run in its
# interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the linter and the formatter first: seconds, and a failure says exactly what to change
"${PYTHON:-python3}" -m ruff check .
"${PYTHON:-python3}" -m ruff format --check .
exec "${PYTHON:-python3}" -m pytest "$@"
