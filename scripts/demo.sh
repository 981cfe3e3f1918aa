#!/usr/bin/env bash
# Set up, then run the main job on the embedded demo world (no keys, no network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
exec .venv/bin/geoscout demo "$@"
