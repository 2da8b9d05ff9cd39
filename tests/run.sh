#!/usr/bin/env bash
# tests/run.sh [CHAPTER...]: run the shared suite against each chapter given
# (default: every chapter directory), once per row it has in
# tests/expectations.txt (06-epoll has two: 06-epoll, and 06-epoll+et for its
# edge-triggered mode), then print "N passed, N failed" (and ", N skipped"
# when any) as the last line. Exits non-zero if any test failed.
# SUITE_FILES="tests/protocol.bats tests/cli.bats" runs only those files.
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# == 0)); then
    dirs=([0-9][0-9]-*/)
    dirs=("${dirs[@]%/}")
else
    dirs=("$@")
fi
chapters=()
for dir in "${dirs[@]}"; do
    mapfile -t -O "${#chapters[@]}" chapters < <(awk -v d="$dir" '$1 == d || index($1, d "+") == 1 { print $1 }' tests/expectations.txt)
    [[ ${chapters[-1]:-} == "$dir"* ]] || { echo "tests/expectations.txt has no row for $dir" >&2; exit 2; }
done

# A test that hangs is a failure, not a stuck suite.
export BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-60}
# Sanitizer findings end the program (the suite then sees a dead server).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for chapter in "${chapters[@]}"; do
    echo "# ===== $chapter ====="
    # shellcheck disable=SC2086 # SUITE_FILES is a list of files
    CHAPTER=$chapter bats --tap ${SUITE_FILES:-tests/*.bats} | sed -u "s/^\(not \)\{0,1\}ok [0-9]* /&[$chapter] /" | tee -a "$log" || true
done

skipped=$(grep -c '^ok .* # skip' "$log" || true)
passed=$(($(grep -c '^ok ' "$log" || true) - skipped))
failed=$(grep -c '^not ok ' "$log" || true)
summary="$passed passed, $failed failed"
((skipped == 0)) || summary+=", $skipped skipped"
echo "$summary"
((failed == 0 && passed > 0))
