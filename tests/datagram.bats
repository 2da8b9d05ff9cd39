#!/usr/bin/env bats
# The datagram contract (07-socketserver-clone --udp, over UDP or a Unix
# datagram socket), driven through the chapter's own client: each line goes
# out as one datagram, each reply comes back as one. The protocol of
# the course map (README.md), less what needs a connection: no greeting, nothing closes
# (quit only says bye), no connection cap. Then the command line: ready
# line, signals, bad arguments. Datagram rows only; stream rows run
# protocol.bats, cli.bats and concurrency.bats instead.

load helpers

USAGE="error usage: sleep <ms> with 0 <= ms <= 10000"

@test "datagrams: prints one ready line" {
    start_server
    run cat "$BATS_TEST_TMPDIR/server.out"
    assert_equal "${#lines[@]}" 1
    assert_output "listening on $ADDRESS"
}

@test "datagrams: echoes each line exactly, UTF-8 included, with no greeting" {
    start_server
    run talk "hello, world" "  spaces  kept  " "你好，世界" "ünïcödé ✓"
    assert_success
    assert_equal "${#lines[@]}" 4
    assert_line --index 0 "hello, world"
    assert_line --index 1 "  spaces  kept  "
    assert_line --index 2 "你好，世界"
    assert_line --index 3 "ünïcödé ✓"
}

@test "datagrams: quit, exit and q answer bye, and the server goes on" {
    local word
    start_server
    for word in quit exit q; do
        # (the client stops at bye, as on a stream)
        run talk "$word"
        assert_success
        assert_output bye
    done
    run talk "still served"
    assert_output "still served"
}

@test "datagrams: sleep <ms> answers 'slept <ms>' after that long" {
    local start
    start_server
    start=$EPOCHREALTIME
    run talk "sleep 300"
    assert_success
    assert_output "slept 300"
    assert is_at_least "$(seconds_since "$start")" 0.3
}

@test "datagrams: sleep with a bad argument is an error, and the exchange goes on" {
    start_server
    run talk "sleep" "sleep abc" "sleep 10001" "sleep -5" "still here"
    assert_success
    assert_output "$(printf '%s\n' "$USAGE" "$USAGE" "$USAGE" "$USAGE" "still here")"
}

@test "datagrams: 4096 bytes are echoed, 4097 get the too-long error, and the server goes on" {
    local line
    line=$(head -c 4096 /dev/zero | tr '\0' 'x')
    start_server
    run talk "$line" "${line}y" "next"
    assert_success
    assert_equal "${#lines[@]}" 3
    assert_line --index 0 "$line"
    assert_line --index 1 "error line too long (max 4096 bytes)"
    assert_line --index 2 "next"
    run talk "another client"
    assert_output "another client"
}

@test "datagrams: a client in 'sleep 1500': the others stall, or are served" {
    start_server
    open_session A
    open_session B
    # B's client is up (and, on a Unix socket, bound) before the clock starts.
    say B warm-up
    hears B '^warm-up$'
    ping_while_a_sleeps
    hears A '^slept 1500$' 5
}

# stops_with SIGNAL: after serving a client, the server exits with status 0
# on SIGNAL, and takes its Unix socket file (if any) with it.
stops_with() {
    start_server
    run talk ping
    assert_output ping
    SERVER_MAY_EXIT=1
    kill "-$1" "$SERVER_PID"
    until_within 5 has_exited "$SERVER_PID" || fail "still running 5 s after SIG$1"
    local status=0
    wait "$SERVER_PID" || status=$?
    assert_equal "$status" 0
    if on_unix; then
        assert [ ! -e "$SOCK" ]
    fi
}

@test "datagrams: SIGTERM: exits with status 0" {
    stops_with TERM
}

@test "datagrams: SIGINT: exits with status 0" {
    stops_with INT
}

@test "datagrams: bad arguments of the server and the client print the usage and exit 2" {
    local args
    for args in "-x" "-p" "-p abc" "-p 65536" "-p -1" "extra" "-H localhost" "--unix"; do
        # shellcheck disable=SC2086 # split the arguments on purpose
        run timeout 5 "$SERVER" --udp $args
        assert_equal "$status" 2
        assert_output --partial "usage: server"
    done
    for args in "-x" "-p" "-p 0" "-p 65536" "extra" "-H localhost" "--unix"; do
        # shellcheck disable=SC2086
        run timeout 5 "$CLIENT" --udp $args
        assert_equal "$status" 2
        assert_output --partial "usage: client"
    done
}
