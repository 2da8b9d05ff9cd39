#!/usr/bin/env bash
# tests/run.sh [CHAPTER...]: run the shared suite against each chapter given
# (default: every chapter directory), then print "N passed, N failed" (and
# ", N skipped" when any) as the last line. Exits non-zero if any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if (($# == 0)); then
    chapters=([0-9][0-9]-*/)
    chapters=("${chapters[@]%/}")
else
    chapters=("$@")
fi

# A test that hangs is a failure, not a stuck suite.
export BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-60}
# Sanitizer findings end the program (the suite then sees a dead server).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for chapter in "${chapters[@]}"; do
    echo "# ===== $chapter ====="
    CHAPTER=$chapter bats --tap tests/*.bats | sed -u "s/^\(not \)\{0,1\}ok [0-9]* /&[$chapter] /" | tee -a "$log" || true
done

skipped=$(grep -c '^ok .* # skip' "$log" || true)
passed=$(($(grep -c '^ok ' "$log" || true) - skipped))
failed=$(grep -c '^not ok ' "$log" || true)
summary="$passed passed, $failed failed"
((skipped == 0)) || summary+=", $skipped skipped"
echo "$summary"
((failed == 0 && passed > 0))
