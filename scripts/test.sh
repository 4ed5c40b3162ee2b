#!/usr/bin/env bash
# Set everything up and run the whole test suite (SQLite always, PostgreSQL when reachable;
# with CI=true an unreachable PostgreSQL fails the run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/ensure-postgres.sh
bash scripts/ensure-chromium.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
