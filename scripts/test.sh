#!/usr/bin/env bash
# Set everything up, then run the test suite (CPU only; Triton kernels run in its interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
