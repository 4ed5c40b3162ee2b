#!/usr/bin/env bash
# The peers' own environment (scikit-surprise), kept apart from dotrec's: bench/.venv-peers.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv-peers/bin/python ] || "$python" -m venv .venv-peers
.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check scikit-surprise numpy pandas
