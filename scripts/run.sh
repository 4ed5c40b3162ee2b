#!/usr/bin/env bash
# Set everything up and run the main job on SQLite: import the data named by DATA_SOURCE
# (a local path, or a GroupLens name such as ml-100k, downloaded once; offline, a generated
# set stands in and the import says so), train a model, and serve the API on HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export DATABASE_URL=${DATABASE_URL:-sqlite:///data/dotrec.db}
dotrec=.venv/bin/dotrec
$dotrec db upgrade
$dotrec import "${DATA_SOURCE:-ml-100k}"
$dotrec train --plot
exec $dotrec serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
