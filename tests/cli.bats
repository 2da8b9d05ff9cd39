#!/usr/bin/env bats
# The command lines of the course map (README.md): ready lines, logs, signals, exit codes.
# Stream rows only (TCP or a Unix stream socket); tests/datagram.bats checks
# the command lines of datagram rows.

load helpers

@test "prints one ready line per listening socket" {
    start_server
    run cat "$BATS_TEST_TMPDIR/server.out"
    assert_equal "${#lines[@]}" "$(expect listeners)"
}

@test "logs connects and disconnects to stderr" {
    local peer='127\.0\.0\.1:[0-9]*'
    on_unix && peer='unix:[^ ]*' # what the server knows of a Unix client
    start_server
    talk q >/dev/null
    wait_for "$BATS_TEST_TMPDIR/server.err" "disconnect $peer"
    assert grep -q "[^s]connect $peer" "$BATS_TEST_TMPDIR/server.err"
}

@test "-q silences the connect and disconnect log" {
    start_server -q
    talk q >/dev/null
    SERVER_MAY_EXIT=1
    stop_pid "$SERVER_PID" # once it has exited, its log is complete
    assert grep -q 'stopping' "$BATS_TEST_TMPDIR/server.err"
    refute grep -q 'connect' "$BATS_TEST_TMPDIR/server.err"
}

# stops_with SIGNAL: the server exits with status 0 on SIGNAL, even while a
# client is connected. Where each client has its own process, that process
# goes on serving its client to the end; a pool of processes stops its
# workers and reaps them before it exits.
stops_with() {
    local status=0 children child
    start_server
    open_session A
    hears A '^hello'
    children=$(server_children)
    SERVER_MAY_EXIT=1
    kill "-$1" "$SERVER_PID"
    until_within 5 has_exited "$SERVER_PID" || fail "still running 5 s after SIG$1"
    wait "$SERVER_PID" || status=$?
    assert_equal "$status" 0
    if [[ $(expect served_by) == process && -n $(pool_size) ]]; then
        for child in $children; do
            ! kill -0 "$child" 2>/dev/null || fail "worker $child outlived the server: $(ps -o pid=,stat= -p "$child")"
        done
    elif [[ $(expect served_by) == process ]]; then
        say A "still served"
        hears A '^still served$'
    fi
}

@test "SIGTERM: exits with status 0" {
    stops_with TERM
}

@test "SIGINT: exits with status 0" {
    stops_with INT
}

@test "SIGPIPE: replies to a client that has gone do not kill the server" {
    # A client asks for slow work and one more line, and leaves during the
    # sleep. The first reply reaches a closed socket, whose kernel answers
    # with a reset; sending the next one raises SIGPIPE, whose default
    # action ends the process (with a thread per client, the whole server).
    start_server
    in_background P "$PROBE" "${TO_SERVER[@]}" -t 10
    printf 'sleep 300\nafter\n' >&"${SESSION_FD[P]}"
    release P # probe sends what it read, then reads the replies
    wait_for "$BATS_TEST_TMPDIR/server.err" 'sleeps 300 ms'
    kill "${SESSION_PID[P]}"
    wait_for "$BATS_TEST_TMPDIR/server.err" 'disconnect' 1 5
    run talk "still here"
    assert_line --index 1 "still here"
}

@test "a stderr nobody reads: the server goes on serving, and SIGTERM stops it" {
    # The server's stderr is a pipe whose reader never reads: it is full
    # after 64 KiB of log. A server that waits for room there freezes (and
    # its SIGTERM handler, writing "stopping", with it).
    local fifo=$BATS_TEST_TMPDIR/err.fifo wrapper=$BATS_TEST_TMPDIR/to-fifo hold
    skip_unless_it_runs
    mkfifo "$fifo"
    exec {hold}<>"$fifo" # a reader that never reads
    printf '#!/bin/sh\nexec "$@" 2>"%s"\n' "$fifo" >"$wrapper"
    chmod +x "$wrapper"
    SERVER_WRAPPER=$wrapper start_server
    # 1,500 sessions log about 130 KiB: connect, disconnect (and more).
    run timeout 30 "$ROOT/scripts/loadgen" "${TO_SERVER[@]}" -c 1 -r -n 1500 -t 25
    assert_success
    run talk "still here"
    assert_line --index 1 "still here"
    SERVER_MAY_EXIT=1
    kill -TERM "$SERVER_PID"
    until_within 2 has_exited "$SERVER_PID" || fail "still running 2 s after SIGTERM"
    exec {hold}<&-
}

@test "server: bad arguments print the usage and exit 2" {
    local args
    for args in "-x" "-p" "-p abc" "-p 65536" "-p -1" "-m 0" "-m many" "extra" "-H localhost"; do
        # shellcheck disable=SC2086 # split the arguments on purpose
        run timeout 5 "$SERVER" $args
        assert_equal "$status" 2
        assert_output --partial "usage: server"
    done
}

@test "server: an address in use is a clear error, exit 1" {
    local in_use
    if on_unix; then
        # The server takes over a stale socket file (one nobody listens on
        # any more), so what is in use here is a path that holds a file.
        echo "not a socket" >"$SOCK"
        in_use=unix:$SOCK
        run timeout 5 "$SERVER" --unix "$SOCK"
        assert_equal "$(cat "$SOCK")" "not a socket" # left alone
    else
        start_server
        in_use=$ADDRESS
        run timeout 5 "$SERVER" -p "$PORT"
    fi
    assert_equal "$status" 1
    assert_output --partial "cannot listen on $in_use: Address already in use"
}

@test "client: cannot connect is a clear error, exit 1" {
    local reason="Connection refused"
    on_unix && reason="No such file or directory" # the server removed its socket
    start_server
    SERVER_MAY_EXIT=1
    stop_pid "$SERVER_PID" # its port is now closed, its socket file gone
    run timeout 5 "$CLIENT" "${TO_SERVER[@]}"
    assert_equal "$status" 1
    assert_output "client: cannot connect to $ADDRESS: $reason"
}

@test "client: bad arguments print the usage and exit 2" {
    local args
    for args in "-x" "-p" "-p 0" "-p 65536" "extra" "-H localhost"; do
        # shellcheck disable=SC2086
        run timeout 5 "$CLIENT" $args
        assert_equal "$status" 2
        assert_output --partial "usage: client"
    done
}

@test "client: prints the greeting, then one reply per line, and exits 0 at end of input" {
    start_server
    run bash -c "printf 'one\ntwo\n' | timeout 10 '$CLIENT' ${TO_SERVER[*]@Q}"
    assert_success
    assert_equal "${#lines[@]}" 3
    assert_line --index 2 "two"
}
