#!/usr/bin/env bash
# A wheelhouse for an offline image build: every wheel the Dockerfile installs, downloaded on
# this host with pip for the image's platform (CPython 3.11, manylinux x86_64): the CPU build of
# torch at pyproject.toml's pin, the other dependencies of pyproject.toml, and the build backend
# `pip install .` needs. Safe to run again: wheels already in the folder are not downloaded again.
#   deploy/wheelhouse.sh [DIR]        (default: $XDG_CACHE_HOME/dotrec/wheelhouse, ~/.cache/...)
# Prints the folder. deploy/offline-build.sh serves it to the build.
# Settings (environment): PYTHON (python3, 3.11 or newer, with pip), TORCH_INDEX_URL (where the
# CPU torch wheel is when pip's own configuration has none; the PyTorch CPU index),
# WHEELHOUSE_ARCH (x86_64), WHEELHOUSE_GLIBC (36: glibc 2.36 is Debian bookworm's).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/dotrec/wheelhouse}
python=${PYTHON:-python3}
arch=${WHEELHOUSE_ARCH:-x86_64}
glibc=${WHEELHOUSE_GLIBC:-36}

die() { echo "wheelhouse: $*" >&2; exit 1; }

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "needs Python 3.11 or newer as \$PYTHON (found: $("$python" --version 2>&1))"
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
# The same list the Dockerfile installs: pyproject's dependencies and its build requirements.
"$python" - "$repo/pyproject.toml" >"$requirements" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))
EOF
torch_pin=$(grep -m1 '^torch==' "$requirements") || die "pyproject.toml pins no torch==VERSION"

# A folder already filled for this very list and platform is used as it is: pip would only find
# every file there again, after asking the index about each.
stamp="$dir/.complete-$( { cat "$requirements"; echo "$arch $glibc"; } | sha256sum | cut -c1-16)"
if [ -e "$stamp" ]; then
    echo "$dir"
    exit 0
fi

# Every manylinux tag the image's glibc runs, newest first: pip takes a --platform literally.
platforms=()
for minor in $(seq "$glibc" -1 5); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
pip=("$python" -m pip --disable-pip-version-check download --quiet --dest "$dir"
    --only-binary=:all: "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311)

# torch first, as the CPU build: a wheel pip already knows about (find-links, a local mirror),
# else the PyTorch CPU index. PyPI's torch for Linux would bring several GB of CUDA libraries.
if ! "${pip[@]}" --no-index --no-deps "$torch_pin" 2>/dev/null; then
    "${pip[@]}" --no-deps --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" "$torch_pin" \
        || die "no CPU wheel of $torch_pin found (set TORCH_INDEX_URL or pip's find-links)"
fi
# Then everything else; the folder is a find-links source, so torch resolves to the wheel above.
"${pip[@]}" --find-links "$dir" -r "$requirements" || die "pip download failed"

cuda=$(find "$dir" -maxdepth 1 -iname 'nvidia*' -printf '%f\n')
[ -z "$cuda" ] || die "CUDA wheels in $dir (a non-CPU torch came in): $cuda"
ls "$dir"/torch-*+cpu-*.whl >/dev/null 2>&1 || die "no +cpu torch wheel in $dir"
touch "$stamp"
echo "$dir"
