#!/usr/bin/env bash
# Install the real services and programs the tests run against, when missing:
#   redis-server  the Redis online store tests
#   chromium      the browser tests of the HTML reports and the console (driven by Playwright)
#   postgresql    the serving API's tests on PostgreSQL (each test session runs its own
#                 throw-away server; the packaged cluster is left alone)
#
# Idempotent and quiet: a no-op when every program is already there. As root it installs the
# missing Debian packages in one apt-get call; otherwise it says what to run and exits 0, so
# that the tests that need them skip with that reason instead of failing the whole run.
set -euo pipefail

# program on PATH -> Debian package, and the tests that skip without it
declare -A PACKAGE=([redis-server]=redis-server [chromium]=chromium [initdb]=postgresql)
declare -A NEEDED_BY=(
    [redis-server]="the Redis online store tests"
    [chromium]="the browser tests (HTML reports, console)"
    [initdb]="the serving API tests on PostgreSQL"
)

present() {  # a program on PATH, or PostgreSQL's server programs where Debian puts them
    command -v "$1" >/dev/null 2>&1 && return 0
    [[ "$1" == initdb ]] && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
for program in redis-server chromium initdb; do
    present "$program" || missing+=("$program")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

packages=()
for program in "${missing[@]}"; do
    packages+=("${PACKAGE[$program]}")
done

skipped() {  # a reason, then the skip notice for each missing program
    local program
    for program in "${missing[@]}"; do
        echo "install_services: $program is missing ($1); ${NEEDED_BY[$program]} will be skipped." >&2
    done
}

if [[ "$(id -u)" -ne 0 ]]; then
    skipped "not root"
    echo "install_services: install with: sudo apt-get install -y ${packages[*]}" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    skipped "no apt-get"
    echo "install_services: install ${packages[*]} with this system's package manager." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# Quiet on success; the whole apt output on failure.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_services: installing ${packages[*]} failed (see above)" >&2
    exit 1
fi
# The redis package may start a system-wide instance on 6379, and the postgresql package
# creates a cluster (left down where there is no init system); the tests start their own
# servers on free ports, so these do no harm, but they are not needed either.
for program in "${missing[@]}"; do
    present "$program"
done
echo "install_services: installed ${packages[*]}"
