#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests (tests/ui) when it is missing and
# this runs as root with apt-get (as CI does). Never fails: the tests decide what a missing
# browser means (a skip locally, a failure in CI). DOTREC_CHROMIUM names another executable.
[ -n "${DOTREC_CHROMIUM:-}" ] && [ -x "$DOTREC_CHROMIUM" ] && exit 0
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for tests/ui (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >/dev/null 2>&1 || echo "could not install chromium with apt-get" >&2
    command -v chromium >/dev/null && exit 0
fi
echo "chromium is not installed: the browser tests (tests/ui) need it (apt-get install -y chromium)" >&2
exit 0
