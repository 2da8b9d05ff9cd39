#!/usr/bin/env bats
# The wire protocol of the course map (README.md): the same contract for every chapter,
# driven through the chapter's own client, and through scripts/probe where a
# test needs control over the bytes and segments on the wire. Stream rows
# only (TCP or a Unix stream socket); datagrams have tests/datagram.bats.

load helpers

setup() {
    start_server
}

# probe ARGS...: scripts/probe on this server; stdin is what it sends,
# stdout what it received (its own complaints go to probe.err).
probe() {
    timeout 10 "$PROBE" "${TO_SERVER[@]}" "$@" 2>>"$BATS_TEST_TMPDIR/probe.err"
}

@test "greets with chapter, pid, tid and local port" {
    run talk
    assert_success
    # port=unix on a Unix socket, which has no port
    assert_output --regexp "^hello chapter=$CHAPTER_DIR pid=[0-9]+ tid=[0-9]+ port=$GREETING_PORT\$"
}

@test "echoes a line exactly" {
    run talk "hello, world" "  spaces  kept  "
    assert_success
    assert_line --index 1 "hello, world"
    assert_line --index 2 "  spaces  kept  "
}

@test "echoes UTF-8 untouched" {
    run talk "你好，世界" "ünïcödé ✓"
    assert_success
    assert_line --index 1 "你好，世界"
    assert_line --index 2 "ünïcödé ✓"
}

@test "echoes binary bytes, NUL and 0xff included" {
    # bash variables cannot hold NUL, so compare hex dumps.
    local bytes='a\000b\001\377\tz\n'
    run bash -c "printf '$bytes' | timeout 10 '$CLIENT' ${TO_SERVER[*]@Q} | tail -n +2 | od -An -tx1"
    assert_success
    assert_output "$(printf "$bytes" | od -An -tx1)"
}

@test "drops the \\r of a \\r\\n line ending" {
    run bash -c "printf 'abc\r\n' | timeout 10 '$CLIENT' ${TO_SERVER[*]@Q} | tail -n +2 | od -An -c"
    assert_output "$(printf 'abc\n' | od -An -c)"
}

@test "quit, exit and q: bye, then the server closes" {
    local word
    for word in quit exit q; do
        # probe reads until the server closes; "never" must not be echoed.
        run probe <<<"$(printf '%s\nnever' "$word")"
        assert_success
        assert_line --index 1 "bye"
        refute_line "never"
        assert_equal "${#lines[@]}" 2
    done
}

@test "sleep <ms> answers 'slept <ms>' after that long" {
    local start=$EPOCHREALTIME
    run talk "sleep 300"
    assert_success
    assert_line --index 1 "slept 300"
    assert [ "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print (b - a >= 0.3) }')" = 1 ]
}

@test "sleep with a bad argument is an error, and the connection stays" {
    local usage="error usage: sleep <ms> with 0 <= ms <= 10000"
    run talk "sleep" "sleep " "sleep abc" "sleep 10001" "sleep -5" "sleep 99999999999999999999" "still here"
    assert_success
    for i in 1 2 3 4 5 6; do assert_line --index "$i" "$usage"; done
    assert_line --index 7 "still here"
}

@test "sleep takes its value in decimal, leading zeros and all" {
    run talk "sleep 000005" "sleep 0000000000000000000000001"
    assert_success
    assert_line --index 1 "slept 5"
    assert_line --index 2 "slept 1"
}

@test "framing: several lines in one segment get one reply each" {
    run probe -n 4 <<<"$(printf 'one\ntwo\nthree')"
    assert_success
    assert_line --index 1 "one"
    assert_line --index 2 "two"
    assert_line --index 3 "three"
}

@test "framing: a line split over many segments is still one line" {
    run probe -s -n 2 <<<"one byte per segment"
    assert_success
    assert_line --index 1 "one byte per segment"
}

@test "a line of exactly 4096 bytes is echoed" {
    local line
    line=$(head -c 4096 /dev/zero | tr '\0' 'x')
    run talk "$line"
    assert_success
    assert_line --index 1 "$line"
}

@test "a line over 4096 bytes: an error, the connection closes, the next client is served" {
    local size
    # 4097 is one byte over; with 4 MiB the client is still sending when the
    # server gives up, and the error must reach it all the same.
    for size in 4097 4194304; do
        run probe < <(head -c "$size" /dev/zero | tr '\0' 'x'; echo)
        assert_success # probe saw the server close the connection
        assert_line --index 1 "error line too long (max 4096 bytes)"
        assert_equal "${#lines[@]}" 2
    done
    run talk "next"
    assert_line --index 1 "next"
}

@test "a client that resets in the middle of a line costs only its connection" {
    run probe -r < <(printf 'half a li')
    assert_success
    run talk "after the reset"
    assert_success
    assert_line --index 1 "after the reset"
}

@test "half-close: the replies still arrive, then the server closes" {
    run probe -w < <(printf 'one\ntwo\n')
    assert_success # EOF came: the server closed after answering
    assert_line --index 1 "one"
    assert_line --index 2 "two"
    assert_equal "${#lines[@]}" 3
}

@test "quit with input unread: every reply, bye, then EOF, no reset" {
    # probe -L: 200 kB of lines and quit without reading, more lines after
    # quit, then read to the end. A server that close()s with those lines
    # unread (or gets them after its close) makes its kernel send RST,
    # dropping the replies still queued: that is what every chapter did
    # before its lingering close (read and discard until the client's EOF,
    # then close), and this test failed on each of them.
    run probe -L
    assert_success
    assert_output "received 200004 of 200004 bytes, bye: yes, end: EOF"
}

@test "a burst of 100,000 lines in one go: every one echoed, in order" {
    # About 600 KB arrive faster than one read takes them: the server must
    # keep reading what is left (edge-triggered epoll gets no second
    # notice), and its replies take many partial writes.
    run bash -c "seq 100000 | timeout 20 '$PROBE' ${TO_SERVER[*]@Q} -w -t 15 | tail -n +2 | cmp - <(seq 100000)"
    assert_success
}
