#!/usr/bin/env bash
# scripts/ensure-deps.sh PACKAGE...: make sure these Debian packages' tools
# are here; install the missing ones with apt-get (as root, or with sudo),
# or stop and print the exact command to run. Nothing is installed twice.
set -euo pipefail
BATS_LIB_PATH=${BATS_LIB_PATH:-}

# is_present PACKAGE: what the course uses from PACKAGE is already here.
is_present() {
    local dir
    case $1 in
    bats-support | bats-assert)
        for dir in ${BATS_LIB_PATH//:/ } /usr/lib/bats /usr/local/lib/bats; do
            [[ -f $dir/$1/load.bash ]] && return 0
        done
        return 1
        ;;
    gnuplot-nox) command -v gnuplot >/dev/null ;;
    libuv1-dev) [[ -f /usr/include/uv.h ]] ;;
    libevent-dev) [[ -f /usr/include/event2/bufferevent.h ]] ;;
    liburing-dev) [[ -f /usr/include/liburing.h ]] ;;
    linux-perf) command -v perf >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
    esac
}

missing=()
for package in "$@"; do
    is_present "$package" || missing+=("$package")
done
((${#missing[@]} > 0)) || exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if ! command -v apt-get >/dev/null; then
    echo "Missing: ${missing[*]}. Install them with your package manager (Debian names)." >&2
    exit 1
fi
if ((EUID == 0)); then
    sudo=()
elif sudo -n true 2>/dev/null || { [[ -t 0 ]] && command -v sudo >/dev/null; }; then
    sudo=(sudo)
else
    echo "Missing: ${missing[*]}. Please run:" >&2
    echo "    sudo apt-get update && sudo ${install[*]}" >&2
    exit 1
fi
echo "Installing ${missing[*]} ..." >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" "${install[@]}" >/dev/null
