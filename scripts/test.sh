#!/usr/bin/env bash
# Set up, then lint and run the whole test suite (offline; real data in ../shared/data when
# present). Arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "[test] ruff check"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
