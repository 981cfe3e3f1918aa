#!/usr/bin/env bash
# Create (or refresh) the project virtualenv .venv with the exact pins in constraints.txt.
# Idempotent: skips pip when pyproject.toml and constraints.txt have not changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "geoscout needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
STAMP=.venv/.geoscout-installed
WANT="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[setup] installing geoscout and pinned dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi
# Persistent Dagster instance: the project-local .dagster_home unless DAGSTER_HOME is set;
# either way the project's dagster.yaml goes there when the home has none (never overwritten).
if [ -z "${DAGSTER_HOME:-}" ]; then
  mkdir -p .dagster_home
  ln -sf ../dagster.yaml .dagster_home/dagster.yaml
  echo "[setup] Dagster instance: $ROOT/.dagster_home (export DAGSTER_HOME=$ROOT/.dagster_home" \
       "before dagster dev / dg dev to see geoscout's runs)"
else
  mkdir -p "$DAGSTER_HOME"
  if [ ! -e "$DAGSTER_HOME/dagster.yaml" ]; then
    cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
    echo "[setup] wrote $DAGSTER_HOME/dagster.yaml"
  fi
fi
