#!/usr/bin/env bash
# Set up a virtual environment in .venv with dotrec and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "dotrec needs Python 3.11 or newer (found $("$python" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch is pinned in pyproject.toml to the CPU build; pip keeps it unless the pin changes.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^nvidia'; then
    echo "warning: CUDA packages were installed; torch should resolve to the CPU wheel" >&2
fi
