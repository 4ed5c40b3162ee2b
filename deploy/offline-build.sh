#!/usr/bin/env bash
# Build the dotrec image where neither the build nor its containers can reach a package index:
# the wheelhouse of deploy/wheelhouse.sh is served on 127.0.0.1:WHEELHOUSE_PORT for as long as
# the build runs, and the build (on the host's network, so that it reaches 127.0.0.1) installs
# from it alone: the Dockerfile's WHEELHOUSE_URL makes every pip there --no-index.
#
#   deploy/offline-build.sh                          docker build -t $DOTREC_IMAGE (dotrec:local)
#   deploy/offline-build.sh docker compose build     any command, with WHEELHOUSE_URL and
#   deploy/offline-build.sh docker-compose build     BUILD_NETWORK=host exported: the compose
#                                                    file passes both to its build
# Settings (environment): WHEELHOUSE (the folder; default that of deploy/wheelhouse.sh, which is
# run first to fill it), WHEELHOUSE_PORT (8731: fixed, because the URL is part of the build's
# cache key), PYTHON_IMAGE (the base image), DOTREC_IMAGE (the tag), PYTHON (for the server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-python3}
port=${WHEELHOUSE_PORT:-8731}

die() { echo "offline-build: $*" >&2; exit 1; }

wheelhouse=$(bash "$here/wheelhouse.sh" ${WHEELHOUSE:+"$WHEELHOUSE"}) || die "the wheelhouse could not be prepared"
if "$python" -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$port" 2>/dev/null; then
    die "127.0.0.1:$port is taken; set WHEELHOUSE_PORT to a free port"
fi

log=$(mktemp)
"$python" -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" >"$log" 2>&1 &
server=$!
stop_server() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -f "$log"
}
trap stop_server EXIT
for _ in $(seq 50); do
    "$python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$port/" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || die "the wheel server did not start: $(cat "$log")"
    sleep 0.1
done

export WHEELHOUSE_URL="http://127.0.0.1:$port/"
export BUILD_NETWORK=host
if [ $# -eq 0 ]; then
    set -- docker build --network host --target runtime \
        --build-arg "WHEELHOUSE_URL=$WHEELHOUSE_URL" \
        --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}" \
        -t "${DOTREC_IMAGE:-dotrec:local}" "$repo"
fi
"$@"
