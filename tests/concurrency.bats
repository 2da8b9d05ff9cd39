#!/usr/bin/env bats
# Who gets served while someone else is connected: the tests that tell the
# stages apart. Each one reads this chapter's row of tests/expectations.txt
# and asserts the positive or the negative outcome; 01-blocking is the
# negative control that proves the suite can tell serial from concurrent.
# Stream rows only (TCP or a Unix stream socket).

load helpers

# hold NAME COUNT: COUNT connections held open in the background (spread
# over every port), until `release NAME`; waits until each got its first
# line, or a serial server's limit showed. NAME.out has those lines.
hold() {
    local seconds=10
    [[ $(expect clients) == concurrent ]] || seconds=2
    in_background "$1" "$PROBE" "${TO_ALL[@]}" -c "$2" -t "$seconds"
    wait_for "$BATS_TEST_TMPDIR/$1.out" '^answered' 1 $((seconds + 20))
}

# greeted NAME: how many of NAME's connections got a greeting.
greeted() {
    grep -c '^hello' "$BATS_TEST_TMPDIR/$1.out" || true
}

@test "a second client while the first stays connected: served now, or only once the first leaves" {
    start_server
    open_session A
    hears A '^hello'
    open_session B
    if [[ $(expect clients) == concurrent ]]; then
        hears B '^hello' 2
        say B "B is served"
        hears B '^B is served$' 2
        say A "A still is"
        hears A '^A still is$' 2
    else
        # B's connect() succeeded (it waits in the listen queue), but no
        # greeting comes while A is connected.
        run hears B '^hello' 1
        assert_failure
        say A quit
        hears A '^bye$'
        hears B '^hello' 3
    fi
}

@test "100 clients connected at once are all greeted while all stay connected" {
    local want=100
    [[ $(expect clients) == concurrent ]] || want=1
    start_server
    hold many 100
    assert_equal "$(greeted many)" "$want"
}

# distinct FIELD: how many different values of FIELD=... the greetings show.
distinct() {
    grep -o "^hello .*" "$BATS_TEST_TMPDIR/many.out" | grep -o " $1=[^ ]*" | sort -u | wc -l
}

@test "the greetings show who serves: one process, a thread each, or a process each" {
    local clients=10 pids
    [[ $(expect clients) == concurrent ]] || clients=1
    start_server
    hold many "$clients"
    assert_equal "$(greeted many)" "$clients"
    assert_equal "$(distinct port)" "$(expect listeners)" # every listener served
    pids=$(grep -o ' pid=[0-9]*' "$BATS_TEST_TMPDIR/many.out" | sort -u)
    case $(expect served_by) in
    one)
        assert_equal "$pids" " pid=$SERVER_PID"
        assert_equal "$(distinct tid)" 1
        ;;
    thread)
        assert_equal "$pids" " pid=$SERVER_PID"
        assert_equal "$(distinct tid)" "$clients"
        ;;
    process)
        assert_equal "$(distinct pid)" "$clients"
        refute grep -q " pid=$SERVER_PID " "$BATS_TEST_TMPDIR/many.out"
        ;;
    *) fail "unknown served_by: $(expect served_by)" ;;
    esac
}

@test "a client that floods without reading: the others stall, or are served" {
    local outcome
    outcome=$(expect flood)
    [[ $outcome != - ]] || skip "one client at a time: there is no other client to stall"
    start_server
    # Up to 100 MiB of 1 KiB lines, never reading a reply; "sent" is printed
    # once it is done, or once the server has taken nothing for a second.
    in_background flood "$PROBE" "${TO_SERVER[@]}" -f 100 -t 20
    wait_for "$BATS_TEST_TMPDIR/flood.out" '^sent' 1 25
    run timeout 10 "$PROBE" "${TO_SERVER[@]}" -n 2 -t 2 <<<"ping"
    if [[ $outcome == stalls ]]; then
        refute_line "ping" # no echo within 2 s: the server is stuck in send()
    else
        assert_line --index 1 "ping"
        # and the flood did not make the server hold its bytes in memory
        assert [ "$(server_rss_kib)" -lt $((64 * 1024)) ]
    fi
}

@test "20 clients that send only 'sleep' and never read: an event loop holds at most 160 KiB each" {
    # "sleep\n" (6 bytes) gets the 46-byte usage error: the largest answer
    # per byte read. A loop that stops reading a client once 64 KiB of
    # replies wait for it holds at most 65,535 + 683 * 46 = 96,953 bytes in
    # a buffer of 128 KiB (nonblocking_io.c); without that rule the replies
    # to megabytes of input would pile up.
    [[ $(expect flood) == serves && $(expect served_by) == one ]] ||
        skip "not an event loop that serves the others during a flood"
    ! built_with_sanitizer || skip "a sanitizer build keeps freed memory in quarantine: RSS is not the server's own"
    start_server
    run timeout 30 python3 - "$SERVER_PID" "$ADDRESS" <<'PY'
import socket, sys, time
pid, address = sys.argv[1], sys.argv[2]
def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
def connect():
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX); s.connect(address[5:])
    else:
        host, port = address.rsplit(":", 1); s = socket.create_connection((host, int(port)))
    s.setblocking(False)
    return s
before = rss_kib()
socks, sent, chunk = [connect() for _ in range(20)], 0, b"sleep\n" * 4096
idle_since = time.monotonic()
while time.monotonic() - idle_since < 1:  # until nothing goes out for a second
    for s in socks:
        try:
            sent += s.send(chunk); idle_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.001)
print(f"sent {sent // 20 // 1024} KiB each; server holds {(rss_kib() - before) // 20} KiB each")
PY
    assert_success
    local sent held
    read -r sent held < <(awk '{ print $2, $7 }' <<<"$output")
    assert [ "$sent" -gt 512 ] # far more than the server may hold: the kernel buffers the rest
    assert [ "$held" -le 160 ]
}

@test "a client in 'sleep 1500': the others stall, or are served" {
    local outcome
    outcome=$(expect sleep)
    [[ $outcome != - ]] || skip "one client at a time: there is no other client to stall"
    start_server
    open_session A
    open_session B
    hears A '^hello'
    hears B '^hello'
    ping_while_a_sleeps
}

@test "past the cap (-m 3), a client gets 'error server busy'; it is served once others leave" {
    [[ $(expect cap) != - ]] || skip "one client at a time: -m has nothing to cap"
    start_server -m 3
    hold three 3
    assert_equal "$(greeted three)" 3
    run timeout 10 "$CLIENT" "${TO_SERVER[@]}" </dev/null
    assert_line --index 0 "error server busy"
    release three
    served_again
}

@test "1,100 connections at once with -m 1000: the server stays up, the extras get 'error server busy'" {
    [[ $(expect cap) != - ]] || skip "one client at a time: -m has nothing to cap"
    start_server -m 1000
    hold many 1100
    assert_equal "$(greeted many)" 1000
    assert_equal "$(grep -c '^error server busy' "$BATS_TEST_TMPDIR/many.out")" 100
    release many
    served_again
}

@test "with -m 2000, 1,100 connections: select() refuses descriptors past FD_SETSIZE; others serve all" {
    [[ $(expect cap) != - ]] || skip "one client at a time: -m has nothing to cap"
    local first_fd want
    [[ $(ulimit -Hn) == unlimited || $(ulimit -Hn) -ge 4096 ]] || skip "needs a hard limit of 4096 descriptors (ulimit -Hn)"
    ulimit -n 4096 # the server must be able to open descriptors past 1024
    start_server -m 2000
    hold many 1100
    first_fd=$(grep -m1 -o 'connect .* (fd [0-9]*)' "$BATS_TEST_TMPDIR/server.err" | grep -o '[0-9]*)$' | tr -d ')')
    want=1100
    [[ $(expect fd_setsize) == - ]] || want=$((1024 - first_fd)) # fds first_fd..1023
    assert_equal "$(greeted many)" "$want"
    assert_equal "$(grep -c '^error server busy' "$BATS_TEST_TMPDIR/many.out")" $((1100 - want))
    release many
    served_again
}

# no_helpers_left BASELINE: back to BASELINE threads, and no child process.
no_helpers_left() {
    [[ $(server_threads) == "$1" && -z $(server_children) ]]
}

@test "100 clients hold a thread or a process each while connected; a second after they leave, none remains" {
    local baseline tid
    [[ $(expect clients) == concurrent ]] || skip "one client at a time: nothing to pile up"
    start_server
    # One client first, and its thread gone: threads started lazily (such
    # as ThreadSanitizer's) then belong to the baseline.
    tid=$(talk q | sed -n 's/.* tid=\([0-9]*\) .*/\1/p')
    until_within 1 test ! -e "/proc/$SERVER_PID/task/$tid" -o "$tid" = "$SERVER_PID"
    baseline=$(server_threads)
    hold many 100
    case $(expect served_by) in
    thread) assert_equal "$(server_threads)" $((baseline + 100)) ;;
    process) assert_equal "$(server_children | wc -l)" 100 ;;
    *) assert_equal "$(server_threads)" "$baseline" ;;
    esac
    finish many # all 100 connections are closed
    until_within 1 no_helpers_left "$baseline"
}

@test "1,000 clients through scripts/loadgen: all greeted while all connected, every echo exact" {
    start_server -m 2000
    if [[ $(expect clients) == concurrent ]]; then
        run timeout 60 "$ROOT/scripts/loadgen" "${TO_ALL[@]}" -c 1000 -n 20 -k 2 -s 100 -t 50
        assert_success
        assert_output --partial "1000 opened, 1000 greeted while all open, 0 failed"
        assert_output --partial "20000 echoed, 0 failed"
    else
        run timeout 20 "$ROOT/scripts/loadgen" "${TO_ALL[@]}" -c 1000 -n 20 -t 3
        assert_failure
        assert_output --partial "1000 opened, 1 greeted while all open"
    fi
}

@test "out of descriptors (ulimit -n 64, 100 clients): no spin, and served again once clients leave" {
    local before used hz conn line start i
    [[ $(expect clients) == concurrent ]] || skip "one client at a time: it never runs out of descriptors"
    SERVER_FD_LIMIT=64 start_server
    on_unix || exec {conn}<>"/dev/tcp/127.0.0.1/$PORT" # connected before the limit
    hold many 100
    before=$(server_cpu_ticks)
    sleep 1 # the measurement window: CPU used during one second
    used=$(($(server_cpu_ticks) - before))
    hz=$(getconf CLK_TCK)
    # Less than 0.3 s of CPU in that second: it did not spin on accept().
    assert [ "$used" -lt $((hz * 3 / 10)) ]
    if ! on_unix; then
        # The client connected before the limit is served at full speed: 20
        # echoes, one at a time, well within a second (a loop that slept
        # 100 ms per turn at the limit, as 02 and 03 once did, takes 2 s).
        read -r -t 5 line <&"$conn" # the greeting
        start=$EPOCHREALTIME
        for i in {1..20}; do
            printf 'ping %d\n' "$i" >&"$conn"
            read -r -t 5 line <&"$conn" && [[ $line == "ping $i" ]] || fail "echo $i: '$line'"
        done
        refute is_at_least "$(seconds_since "$start")" 1
        exec {conn}>&-
    fi
    finish many
    served_again
}
