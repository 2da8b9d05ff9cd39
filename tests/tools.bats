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

# ----------------------- scripts/framing (lesson 01) ------------------------

FRAMING=$ROOT/scripts/framing

@test "framing: only the length prefix recovers every message, binary included" {
    run timeout 10 "$FRAMING"
    assert_success
    # delimiter: the '\n' inside the binary message cuts it in two, and
    # every message after it is found one place late
    assert_output --partial "
delimiter: each message, then '\\n'
  64 bytes on the wire for 59 bytes of messages; received:
  1  \"hello\"                                 ok
  2  \"sleep 1000\"                            ok
  3  \"bin\"                                   wrong: never sent
  4  \"\\0ary\"                                 wrong: never sent
  5  \"a message longer than one record\"      wrong: sent as message 4
  6  \"quit\"                                  wrong: sent as message 5
  2 of 5 messages recovered exactly (6 found)
"
    # fixed length: the binary message fits its record; the long one is cut
    assert_output --partial "
fixed length: records of 16 bytes, padded with NULs
  80 bytes on the wire for 59 bytes of messages; received:
  1  \"hello\"                                 ok
  2  \"sleep 1000\"                            ok
  3  \"bin\\n\\0ary\"                            ok
  4  \"a message longer\"                      wrong: never sent
  5  \"quit\"                                  ok
  4 of 5 messages recovered exactly
"
    assert_output --partial "
length prefix: 4 bytes, big-endian, then the message
  79 bytes on the wire for 59 bytes of messages; received:
  1  \"hello\"                                 ok
  2  \"sleep 1000\"                            ok
  3  \"bin\\n\\0ary\"                            ok
  4  \"a message longer than one record\"      ok
  5  \"quit\"                                  ok
  5 of 5 messages recovered exactly"
}

@test "framing: where the stream is cut changes nothing the decoders find" {
    local seed first
    first=$(timeout 10 "$FRAMING" -s 1 | tail -n +3)
    for seed in 2 3 17 99 12345 4294967295; do
        run timeout 10 "$FRAMING" -s "$seed"
        assert_success
        assert_line --index 1 "in pieces of 1 to 7 bytes, one send() each (seed $seed). Sent:"
        [[ $(tail -n +3 <<<"$output") == "$first" ]] || fail "seed $seed: the decoders found other messages"
    done
    # -v shows the receiver's recv()s: the pieces really are small
    run timeout 10 "$FRAMING" -v
    assert_success
    assert_line --regexp '^     recv\(\) = [1-7]: '
    refute_line --regexp '^     recv\(\) = ([89]|[1-9][0-9]+): '
}

@test "framing: bad arguments exit 2" {
    run timeout 10 "$FRAMING" -s x
    assert_failure 2
    run timeout 10 "$FRAMING" -s 4294967296
    assert_failure 2
    run timeout 10 "$FRAMING" extra
    assert_failure 2
}

# segments_per_round SECTION: the "segments" column of framing -n's rounds
# in SECTION (on or off: Nagle's algorithm), one number a line.
segments_per_round() {
    awk -v want="Nagle $1" 'index($0, want) { inside = 1; next }
        /^$/ { inside = 0 }
        inside && $3 == "ms" { print $4 }' <<<"$output"
}

@test "framing -n: Nagle glues small writes; TCP_NODELAY sends each at once" {
    run timeout 10 "$FRAMING" -n
    assert_success
    local on off
    on=$(segments_per_round on)
    off=$(segments_per_round off)
    (($(wc -l <<<"$on") == 6 && $(wc -l <<<"$off") == 6)) || fail "not 6 rounds each: $output"
    # with TCP_NODELAY, one segment per write, every round
    [[ $(sort -u <<<"$off") == 10 ]] || fail "TCP_NODELAY: not 10 segments per round: $output"
    # with Nagle, once ACKs are delayed, the 10 writes leave in 2 segments
    [[ $(sort -n <<<"$on" | head -1) -le 2 ]] || fail "Nagle glued no round into 2 segments: $output"
}
