#!/usr/bin/env bash
# Set up a virtual environment in .venv with dotrec and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "dotrec needs Python 3.11 or newer (found $("$python" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

# torch first, as the CPU build: a wheel pip already knows about (find-links, a local mirror),
# else the PyTorch CPU index. Plain PyPI would bring several GB of CUDA libraries.
torch_pin=$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    "${pip[@]}" install --quiet --no-index --no-deps "$torch_pin" 2>/dev/null \
        || "${pip[@]}" install --quiet "$torch_pin" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
"${pip[@]}" install --quiet -e '.[dev]'
if "${pip[@]}" list 2>/dev/null | grep -qi '^nvidia'; then
    echo "warning: CUDA packages were installed; torch should be the CPU build" >&2
fi
