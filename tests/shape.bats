#!/usr/bin/env bats
# The shape of the chapters, which the lessons rely on: what every chapter
# shares is one file, byte for byte the same wherever it appears, so that
# `diff -u` between two chapters' server.c shows the stage and nothing else;
# each chapter still builds alone; each server.c stays short enough to read
# as its stage. Runs once, not per row (tests/run.sh).

bats_load_library bats-support
bats_load_library bats-assert

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)

# Files that differ from chapter to chapter by design: the stage itself, the
# lesson, the client (its default port), the build (04, 08 and 09 link
# -pthread, 10 liburing).
OWN_FILES=" server.c README.md client.c Makefile "

# The longest each server.c may be: the blocking chapters, whose serving
# code is blocking_io.c, and the event loops, which carry more state; 09 is
# 06's loop and a pool of worker threads (about 200 lines more); 10 is the
# ring, and nonblocking_io.c's rules (output queue, backpressure, lingering
# close) written again in its terms, since that file calls send() and recv();
# 900: the close and the linger's link timeout as ring requests, 0.5x 06's calls per connection.
declare -A MAX_LINES=([01-blocking]=300 [02-select-multiport]=300 [04-thread-per-conn]=300
    [05-fork-per-conn]=300 [08-prethreaded-pool]=300 [03-select-rw-split]=450 [06-epoll]=450
    [09-epoll-workers]=650 [10-io-uring]=900)

@test "a file shared by chapters is byte-for-byte the same in each" {
    local file name first copies=0
    cd "$ROOT"
    for file in [0-9][0-9]-*/*.[ch]; do
        name=${file#*/}
        [[ $OWN_FILES == *" $name "* ]] && continue
        first=$(ls [0-9][0-9]-*/"$name" | head -1)
        cmp "$first" "$file" || fail "$file differs from $first: change both, or neither"
        copies=$((copies + 1))
    done
    assert [ "$copies" -ge 18 ] # setup.c, protocol.h, protocol.c in six chapters at least
}

@test "each chapter builds alone, from a copy of its directory" {
    local dir
    cd "$ROOT"
    for dir in "${!MAX_LINES[@]}"; do
        cp -r "$dir" "$BATS_TEST_TMPDIR/"
        make -s -C "$BATS_TEST_TMPDIR/$dir" clean
        run make -s -C "$BATS_TEST_TMPDIR/$dir"
        assert_success
    done
}

@test "each server.c is short enough to read as its stage" {
    local dir lines
    for dir in "${!MAX_LINES[@]}"; do
        lines=$(wc -l <"$ROOT/$dir/server.c")
        ((lines < MAX_LINES[$dir])) || fail "$dir/server.c: $lines lines, the target is under ${MAX_LINES[$dir]}"
    done
}
