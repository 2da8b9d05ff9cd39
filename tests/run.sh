#!/usr/bin/env bash
# tests/run.sh [CHAPTER...]: run the shared suite against each chapter given
# (default: every chapter directory, then every reference server), once per
# row it has in tests/expectations.txt (06-epoll has two: 06-epoll, and
# 06-epoll+et for its edge-triggered mode; 07-socketserver-clone one per
# combination), then print "N passed, N failed" (and ", N skipped" when any)
# as the last line. Exits non-zero if any test failed. A reference server of
# scripts/reference/ is named like a chapter: tests/run.sh libevent.
#
# Which files run depends on the row's transport: a stream row (tcp, unix)
# runs the stream contract, protocol.bats, cli.bats and concurrency.bats, a
# chapter's tcp row also strace.bats (the traced session speaks TCP; the
# reference servers have no stage and no lesson to check there); a datagram
# row (udp, unixgram) runs datagram.bats. A chapter's own file
# (tests/socketserver.bats for 07, tests/io_uring.bats for 10), when it exists, runs once: with the row
# named after the chapter alone (07-socketserver-clone, not +forking).
# Files about the course as a whole (the chapters' shared files, the test
# tools, the lessons' commands) run once, after the rows, when no chapter is
# named.
# SUITE_FILES="tests/protocol.bats tests/cli.bats" runs only those files,
# each with the rows it applies to; EXCLUDE="python-socketserver" leaves
# out those chapters or reference servers (and their modes), and
# EXCLUDE="06-epoll+et" that one row.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rows.sh

STREAM_FILES=(tests/cli.bats tests/concurrency.bats tests/protocol.bats)
TCP_FILES=(tests/strace.bats)
DATAGRAM_FILES=(tests/datagram.bats)
ONCE_FILES=(tests/shape.bats tests/tools.bats tests/lessons.bats)
# Files that test one chapter beyond the shared contract: chapter -> file.
declare -A OWN_FILE=([07-socketserver-clone]=tests/socketserver.bats [10-io-uring]=tests/io_uring.bats)

if (($# == 0)); then
    dirs=([0-9][0-9]-*/)
    dirs=("${dirs[@]%/}")
    mapfile -t -O "${#dirs[@]}" dirs < <(reference_names)
else
    dirs=("$@")
fi
chapters=()
for dir in "${dirs[@]}"; do
    mapfile -t -O "${#chapters[@]}" chapters < <(rows_of "$dir")
    [[ ${chapters[-1]:-} == "$dir"* ]] || { echo "tests/expectations.txt has no row for $dir" >&2; exit 2; }
done
for skip in ${EXCLUDE:-}; do # a row, or a chapter or reference server with all its modes
    for i in "${!chapters[@]}"; do
        [[ ${chapters[i]} != "$skip" && ${chapters[i]} != "$skip+"* ]] || unset "chapters[i]"
    done
done

# wanted FILE: SUITE_FILES is unset, or names FILE (compared by file name).
wanted() {
    local file
    [[ -n ${SUITE_FILES:-} ]] || return 0
    for file in $SUITE_FILES; do
        [[ ${file##*/} == "${1##*/}" ]] && return 0
    done
    return 1
}

# set_files ROW: FILES = the files ROW runs, as the top of this file says.
set_files() {
    local transport dir=${1%%+*} all file
    transport=$(row_value "$1" transport)
    case $transport in
    tcp)
        all=("${STREAM_FILES[@]}")
        [[ ! -d $dir ]] || all+=("${TCP_FILES[@]}") # a chapter's row, not a reference's
        ;;
    unix) all=("${STREAM_FILES[@]}") ;;
    udp | unixgram) all=("${DATAGRAM_FILES[@]}") ;;
    *) echo "tests/expectations.txt: $1 has no known transport ('$transport')" >&2; exit 2 ;;
    esac
    file=${OWN_FILE[$dir]:-}
    if [[ $1 == "$dir" && -n $file && -f $file ]]; then all+=("$file"); fi
    FILES=()
    for file in "${all[@]}"; do
        if wanted "$file"; then FILES+=("$file"); fi
    done
}

# A test that hangs is a failure, not a stuck suite.
export BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-60}
# Sanitizer findings end the program (the suite then sees a dead server).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for chapter in "${chapters[@]}"; do
    set_files "$chapter"
    ((${#FILES[@]} > 0)) || continue # SUITE_FILES left nothing for this row
    echo "# ===== $chapter ====="
    CHAPTER=$chapter bats --tap "${FILES[@]}" | sed -u "s/^\(not \)\{0,1\}ok [0-9]* /&[$chapter] /" | tee -a "$log" || true
done

if (($# == 0)); then
    for file in "${ONCE_FILES[@]}"; do
        if [[ ! -f $file ]] || ! wanted "$file"; then continue; fi
        echo "# ===== ${file#tests/} ====="
        bats --tap "$file" | sed -u "s/^\(not \)\{0,1\}ok [0-9]* /&[${file#tests/}] /" | tee -a "$log" || true
    done
fi

skipped=$(grep -c '^ok .* # skip' "$log" || true)
passed=$(($(grep -c '^ok ' "$log" || true) - skipped))
failed=$(grep -c '^not ok ' "$log" || true)
summary="$passed passed, $failed failed"
((skipped == 0)) || summary+=", $skipped skipped"
echo "$summary"
((failed == 0 && passed > 0))
