#!/usr/bin/env bats
# The course's tools against peers that misbehave: scripts/probe must give
# up at -t whatever the peer does, and the chapter's client must show what a
# server said when it refuses a client or a line. The peers are small Python
# servers (start_peer), or 01-blocking's server; the clients tested are
# 01-blocking's (02-06 hold the same file) and 07's. Runs once, not per row.

# start_server starts this chapter's server; the tools do not depend on it.
CHAPTER=01-blocking
bats_require_minimum_version 1.5.0 # run --separate-stderr
load helpers

# slow_reader: read stdin slowly (64 KiB every 10 ms) and throw it away.
# probe then spends its time writing to stdout, and a peer that sends fast
# keeps probe's socket readable all the time.
slow_reader() {
    python3 -c '
import sys, time
while sys.stdin.buffer.read1(65536):
    time.sleep(0.01)'
}

# probe_read_slowly ARGS...: probe against the peer, its stdout read by
# slow_reader; returns probe's status (its complaints go to stderr).
probe_read_slowly() {
    timeout 10 "$PROBE" -p "$PEER_PORT" "$@" | slow_reader
    return "${PIPESTATUS[0]}"
}

# ----------------------------- probe -c (D2) -------------------------------

@test "probe -c gives up at -t on a half line from a silent peer" {
    start_peer 'c.sendall(b"hel"); time.sleep(60)'
    run timeout 10 "$PROBE" -p "$PEER_PORT" -c 1 -t 1 </dev/null
    assert_success
    assert_output "answered 0 of 1"
}

@test "probe -c waits for the rest of a half line without spinning" {
    start_peer 'c.sendall(b"hel"); time.sleep(60)'
    # bash's time: probe's user and system CPU seconds
    run bash -c 'TIMEFORMAT="%U %S"; time timeout 10 "$0" -p "$1" -c 1 -t 1 </dev/null >/dev/null' \
        "$PROBE" "$PEER_PORT"
    assert_success
    # a busy loop would burn about the whole second
    refute is_at_least "$(awk '{ print $1 + $2 }' <<<"$output")" 0.3
}

@test "probe -c reports a peer that closes mid-line" {
    start_peer 'c.sendall(b"hel"); c.close(); time.sleep(60)'
    run timeout 10 "$PROBE" -p "$PEER_PORT" -c 1 -t 5 </dev/null
    assert_success
    assert_output "(closed mid-line: hel)
answered 1 of 1"
}

@test "probe -c prints a first line that comes in two parts" {
    start_peer 'c.sendall(b"hel"); time.sleep(0.3); c.sendall(b"lo\n"); time.sleep(60)'
    run timeout 10 "$PROBE" -p "$PEER_PORT" -c 1 -t 5 </dev/null
    assert_success
    assert_output "hello
answered 1 of 1"
}

# -------------------------- probe's exchange (D2, D3) -----------------------

@test "probe stops reading at -t from a peer that never stops sending" {
    start_peer 'while True: c.sendall((b"x" * 99 + b"\n") * 1000)'
    run probe_read_slowly -t 1 </dev/null
    assert_failure 3
    assert_output --partial "timed out"
}

@test "probe stops sending at -t to a peer that talks but never reads" {
    head -c 16M /dev/zero | tr '\0' x >"$BATS_TEST_TMPDIR/16m"
    start_peer 'while True: c.sendall((b"x" * 99 + b"\n") * 1000)'
    run probe_read_slowly -w -t 1 <"$BATS_TEST_TMPDIR/16m"
    assert_failure 3
    assert_output --partial "timed out after sending"
    refute_output --partial "probe: send:"
}

@test "probe -r exits 3 when the send times out" {
    head -c 16M /dev/zero | tr '\0' x >"$BATS_TEST_TMPDIR/16m"
    start_peer 'time.sleep(60)'
    run probe_read_slowly -r -t 1 <"$BATS_TEST_TMPDIR/16m"
    assert_failure 3
    assert_output --partial "timed out after sending"
}

# ------------------------- the chapter's client (D4) ------------------------

# long_line_answered CLIENT: CLIENT sends a 10 MiB line; the server rejects it
# while CLIENT is still sending. CLIENT must print the server's answer and
# say that the server closed, with no stale errno.
long_line_answered() {
    { head -c 10M /dev/zero | tr '\0' x; echo; } >"$BATS_TEST_TMPDIR/10m"
    start_server -q
    run --separate-stderr timeout 10 "$ROOT/$1" -p "$PORT" <"$BATS_TEST_TMPDIR/10m"
    assert_failure 1
    assert_line --index 1 "error line too long (max 4096 bytes)"
    [[ $stderr == *"closed"* ]] || fail "stderr does not say the server closed: $stderr"
    [[ $stderr != *"Inappropriate ioctl"* ]] || fail "stale errno on stderr: $stderr"
}

@test "01 client shows the server's answer to a 10 MiB line" {
    long_line_answered 01-blocking/client
}

@test "07 client shows the server's answer to a 10 MiB line" {
    long_line_answered 07-socketserver-clone/client
}

# ------------------------- the chapter's client (D10) -----------------------

# refusal_shown CLIENT: a server that answers "error server busy" instead of
# a greeting. CLIENT prints its words and exits 1, even with nothing to send.
refusal_shown() {
    start_peer 'c.sendall(b"error server busy\n"); c.close(); time.sleep(60)'
    run --separate-stderr timeout 10 "$ROOT/$1" -p "$PEER_PORT" </dev/null
    assert_failure 1
    assert_output "error server busy"
    [[ $stderr == *"refused"* ]] || fail "stderr does not say we were refused: $stderr"
}

@test "01 client exits 1 when refused instead of greeted" {
    refusal_shown 01-blocking/client
}

@test "07 client exits 1 when refused instead of greeted" {
    refusal_shown 07-socketserver-clone/client
}
