#!/usr/bin/env bats
# The lessons' commands, run as a reader would run them: every ```sh block
# of a README.md that follows a line `<!-- unattended -->` (the two may be
# indented alike, inside a list item) runs here, from
# the repository's root, as one bash script with `set -euo pipefail`, and
# must succeed within two minutes. A block is marked so when it needs no
# second terminal and no typing; a lesson whose commands drift from the
# code fails here. Whatever a block leaves running is stopped afterwards
# (it runs in a process group of its own). Runs once, not per row
# (tests/run.sh). Not on sanitizer builds: the commands rebuild the
# chapters with the plain flags, as a reader's would.

bats_load_library bats-support
bats_load_library bats-assert

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
# A lesson runs several commands, a demo or a trace each: more than the
# suite's minute per test.
BATS_TEST_TIMEOUT=600

setup() {
    ! grep -qs -- -fsanitize "$ROOT"/[0-9][0-9]-*/.build-flags ||
        skip "a sanitizer build: the lessons' commands would rebuild without it"
}

# blocks FILE: each unattended block of FILE, its lines joined, one block
# per NUL-terminated record. A block may be indented (inside a list item):
# its indentation is taken off its lines.
blocks() {
    awk '/^ *<!-- unattended -->$/ { marked = 1; next }
         marked && /^ *```sh$/ { inside = 1; marked = 0; block = ""; indent = index($0, "`") - 1; next }
         inside && /^ *```$/ { printf "%s%c", block, 0; inside = 0; next }
         inside { block = block substr($0, indent + 1) "\n"; next }
         { marked = 0 }' "$1"
}

# run_block TEXT: TEXT as a bash script from the root, in a process group of
# its own, stopped with everything it started once it ends or times out.
run_block() {
    local status=0
    (cd "$ROOT" && exec setsid timeout 120 bash -euo pipefail -c "$1") >"$BATS_TEST_TMPDIR/out" 2>&1 &
    local pid=$!
    wait "$pid" || status=$?
    pkill -TERM -g "$pid" 2>/dev/null || true # the group setsid made, with the same id
    return "$status"
}

# check_lesson FILE: every unattended block of FILE succeeds; FILE has one.
check_lesson() {
    local block count=0
    while IFS= read -r -d '' block; do
        count=$((count + 1))
        run_block "$block" ||
            fail "$(printf 'this block of %s failed:\n%s\nits output, last lines:\n%s' "$1" "$block" "$(tail -20 "$BATS_TEST_TMPDIR/out")")"
    done < <(blocks "$ROOT/$1")
    ((count > 0)) || fail "$1 has no <!-- unattended --> block"
}

@test "lesson 01: its unattended commands run" { check_lesson 01-blocking/README.md; }
@test "lesson 02: its unattended commands run" { check_lesson 02-select-multiport/README.md; }
@test "lesson 03: its unattended commands run" { check_lesson 03-select-rw-split/README.md; }
@test "lesson 04: its unattended commands run" { check_lesson 04-thread-per-conn/README.md; }
@test "lesson 05: its unattended commands run" { check_lesson 05-fork-per-conn/README.md; }
@test "lesson 06: its unattended commands run" { check_lesson 06-epoll/README.md; }
@test "lesson 07: its unattended commands run" { check_lesson 07-socketserver-clone/README.md; }
@test "lesson 08: its unattended commands run" { check_lesson 08-prethreaded-pool/README.md; }
@test "lesson 09: its unattended commands run" { check_lesson 09-epoll-workers/README.md; }
@test "lesson 10: its unattended commands run" { check_lesson 10-io-uring/README.md; }
@test "the course map: its unattended commands run" { check_lesson README.md; }
