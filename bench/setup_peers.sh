#!/usr/bin/env bash
# The peers' own environment (scikit-surprise, implicit, cornac), kept apart from dotrec's: bench/.venv-peers.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv-peers/bin/python ] || "$python" -m venv .venv-peers
.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check scikit-surprise numpy pandas
# The ranking peers of bench/bench_ranking.py: implicit's ALS and cornac's BPR (no torch: keep it so)
.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check implicit cornac threadpoolctl scipy
if .venv-peers/bin/python -m pip list 2>/dev/null | grep -qi -e '^nvidia' -e '^torch '; then
    echo "warning: torch or CUDA packages came into bench/.venv-peers; the peers need neither" >&2
fi
