#!/usr/bin/env bash
# Set everything up and run the main job: import the data named by DATA_SOURCE (a local path, or
# a GroupLens name such as ml-100k, downloaded once; offline, a generated set stands in and the
# import says so), train a model, and serve the API on HOST:PORT. The database is DATABASE_URL,
# by default a SQLite file under data/; settings may also come from a .env file.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
dotrec=.venv/bin/dotrec
$dotrec db upgrade
$dotrec import --generated-if-offline
$dotrec train --plot
exec $dotrec serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
