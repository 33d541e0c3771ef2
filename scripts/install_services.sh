#!/usr/bin/env bash
# Install the real services the tests run against (today: redis-server), when missing.
#
# Idempotent and quiet: a no-op when redis-server is already on PATH. As root it installs the
# Debian package; otherwise it says what to run and exits 0, so that the Redis tests skip
# with that reason instead of failing the whole run.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install_services: redis-server is missing and this is not root;" \
        "the Redis online store tests will be skipped." \
        "Install it with: sudo apt-get install -y redis-server" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_services: redis-server is missing and apt-get is not available;" \
        "install redis-server with this system's package manager." \
        "The Redis online store tests will be skipped." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Quiet on success; the whole apt output on failure.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_services: installing redis-server failed (see above)" >&2
    exit 1
fi
# The package may start a system-wide instance on 6379; the tests start their own on a free
# port, so it does no harm, but it is not needed either.
command -v redis-server >/dev/null
echo "install_services: installed $(redis-server --version | cut -d' ' -f3)"
