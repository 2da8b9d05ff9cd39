#!/usr/bin/env bats
# Who gets served while someone else is connected: the tests that tell the
# stages apart. Each one reads this chapter's row of tests/expectations.txt
# and asserts the positive or the negative outcome; 01-blocking is the
# negative control that proves the suite can tell serial from concurrent.
# A pool (clients pool:N) serves N at once: the tests at the end show both
# halves of its limit. Stream rows only (TCP or a Unix stream socket).

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
    if [[ $(expect clients) != serial ]]; then
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
    [[ $(expect clients) != serial ]] || want=1
    [[ -z $(pool_size) ]] || want=$(pool_size) # the others wait in the listen queue
    start_server
    hold many 100
    assert_equal "$(greeted many)" "$want"
}

# greeting_values FIELD NAME: the different values of FIELD=... that NAME's
# greetings show, one a line, sorted.
greeting_values() {
    grep -o "^hello .*" "$BATS_TEST_TMPDIR/$2.out" | grep -o " $1=[^ ]*" | sed 's/.*=//' | sort -u
}

# distinct FIELD: how many different values of FIELD=... the greetings show.
distinct() {
    greeting_values "$1" many | wc -l
}

@test "the greetings show who serves: one process, a thread each, or a process each" {
    local clients=10 pids
    [[ $(expect clients) != serial ]] || clients=1
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
    local outcome before
    outcome=$(expect flood)
    [[ $outcome != - ]] || skip "one client at a time: there is no other client to stall"
    start_server
    before=$(server_rss_kib) # a pool's workers, and a sanitizer's shadow memory in each, are there already
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
        assert [ $(($(server_rss_kib) - before)) -lt $((64 * 1024)) ]
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

# skip_without_cap: skip a test of -m on a row where it caps nothing.
skip_without_cap() {
    [[ $(expect cap) == - ]] || return 0
    [[ -z $(pool_size) ]] || skip "a pool: its size is its cap, and the clients past it wait in the listen queue"
    skip "one client at a time: -m has nothing to cap"
}

@test "past the cap (-m 3), a client gets 'error server busy'; it is served once others leave" {
    skip_without_cap
    start_server -m 3
    hold three 3
    assert_equal "$(greeted three)" 3
    run timeout 10 "$CLIENT" "${TO_SERVER[@]}" </dev/null
    assert_line --index 0 "error server busy"
    release three
    served_again
}

@test "1,100 connections at once with -m 1000: the server stays up, the extras get 'error server busy'" {
    skip_without_cap
    start_server -m 1000
    hold many 1100
    assert_equal "$(greeted many)" 1000
    assert_equal "$(grep -c '^error server busy' "$BATS_TEST_TMPDIR/many.out")" 100
    release many
    served_again
}

@test "with -m 2000, 1,100 connections: select() refuses descriptors past FD_SETSIZE; others serve all" {
    skip_without_cap
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
    [[ $(expect clients) != serial ]] || skip "one client at a time: nothing to pile up"
    [[ -z $(pool_size) ]] || skip "a pool: its workers are made at start (see the pool's tests)"
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
    local want=1 # greeted while all open, where not all are: one at a time, or a pool's N
    [[ -z $(pool_size) ]] || want=$(pool_size)
    if [[ $(expect clients) == concurrent ]]; then
        run timeout 60 "$ROOT/scripts/loadgen" "${TO_ALL[@]}" -c 1000 -n 20 -k 2 -s 100 -t 50
        assert_success
        assert_output --partial "1000 opened, 1000 greeted while all open, 0 failed"
        assert_output --partial "20000 echoed, 0 failed"
    else
        run timeout 20 "$ROOT/scripts/loadgen" "${TO_ALL[@]}" -c 1000 -n 20 -t 3
        assert_failure
        assert_output --partial "1000 opened, $want greeted while all open"
    fi
}

@test "out of descriptors (ulimit -n 64, 100 clients): no spin, and served again once clients leave" {
    local before used hz conn line start i
    [[ $(expect clients) != serial ]] || skip "one client at a time: it never runs out of descriptors"
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

# ------------------------------- a pool of N ---------------------------------

# workers: the server's workers, one id a line, sorted: its threads but main
# (a sanitizer's own thread too, if it has one), or its child processes.
workers() {
    if [[ $(expect served_by) == process ]]; then
        server_children | tr -d ' ' | sort
    else
        find "/proc/$SERVER_PID/task" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -vx "$SERVER_PID" | sort
    fi
}

@test "a pool of N: N clients are served at once; client N+1 is greeted once one leaves, and at once" {
    local n start
    n=$(pool_size)
    [[ -n $n ]] || skip "not a pool: no fixed number of clients served at once"
    start_server
    hold busy $((n - 1))
    assert_equal "$(greeted busy)" $((n - 1))
    open_session A # the Nth client: now every worker is busy
    hears A '^hello'
    open_session B # connected, but in the listen queue: nobody accepts it
    run hears B '^hello' 1
    assert_failure
    say A quit
    hears A '^bye$'
    start=$EPOCHREALTIME # A's worker is free: it accepts B at once
    hears B '^hello' 2
    refute is_at_least "$(seconds_since "$start")" 0.5
    say B "B is served"
    hears B '^B is served$'
}

@test "a pool of N: its N workers exist before the first client, serve every client, and stay" {
    local n before
    n=$(pool_size)
    [[ -n $n ]] || skip "not a pool: a worker is made for each client, or there is none"
    start_server
    talk q >/dev/null # a first client: threads a sanitizer starts lazily belong to the baseline
    before=$(workers)
    if [[ $(expect served_by) == process ]]; then
        assert_equal "$(wc -l <<<"$before")" "$n"
    else
        assert [ "$(wc -l <<<"$before")" -ge "$n" ]
    fi
    hold many 100
    assert_equal "$(greeted many)" "$n"
    # Who served, as the greetings say: tid= (a worker process's pid, too).
    assert_equal "$(greeting_values tid many | wc -l)" "$n" # N workers, a client each
    assert_equal "$(comm -23 <(greeting_values tid many) <(echo "$before"))" "" # all made before
    finish many
    served_again
    assert_equal "$(workers)" "$before" # none ended, none was added
}

# replaced N VICTIM: the pool has N workers again, and VICTIM is not one.
replaced() {
    [[ $(workers | wc -l) == "$1" ]] && ! workers | grep -qx "$2"
}

@test "a pool of processes: a worker that dies is reaped and replaced, and the pool serves on" {
    local n victim
    n=$(pool_size)
    [[ -n $n && $(expect served_by) == process ]] || skip "not a pool of processes"
    start_server
    victim=$(workers | head -1)
    kill -KILL "$victim"
    until_within 2 replaced "$n" "$victim" ||
        fail "after worker $victim died the pool has: $(workers | xargs)"
    hold many "$n"
    assert_equal "$(greeted many)" "$n"
}

# ------------------- a loop that hands slow work to a pool -------------------

# hands_off_sleep: one thread serves every client, and yet a client's
# "sleep" stalls nobody: the loop gives the sleep to worker threads (09),
# or to the kernel, as a timeout on its ring (10).
hands_off_sleep() {
    [[ $(expect served_by) == one && $(expect sleep) == serves ]]
}

# slept NAMES...: how many "slept" replies those sessions have had so far.
slept() {
    local name count=0
    for name in "$@"; do
        count=$((count + $(grep -c '^slept' "$BATS_TEST_TMPDIR/$name.out" || true)))
    done
    echo "$count"
}

# slept_at_least COUNT NAMES...: the sessions have had COUNT "slept" replies.
slept_at_least() {
    local count=$1
    shift
    (($(slept "$@") >= count))
}

@test "a loop with a pool of 2 workers: 3 clients sleeping 1 s at once take about 2 s" {
    local start first name
    hands_off_sleep || skip "no pool for slow work"
    [[ $(expect waits_in) != io_uring ]] || skip "no pool: each sleep is a timeout on the ring (tests/io_uring.bats times three)"
    start_server -w 2
    for name in A B C; do open_session "$name"; done
    for name in A B C; do hears "$name" '^hello'; done
    start=$EPOCHREALTIME
    for name in A B C; do say "$name" "sleep 1000"; done
    # Two workers: two sleeps end after about 1 s, the third waits for a
    # worker and ends after about 2 s.
    until_within 5 slept_at_least 2 A B C
    first=$(seconds_since "$start")
    assert is_at_least "$first" 0.9
    refute is_at_least "$first" 1.5
    assert_equal "$(slept A B C)" 2
    until_within 5 slept_at_least 3 A B C
    assert is_at_least "$(seconds_since "$start")" 1.9
    refute is_at_least "$(seconds_since "$start")" 3.5
}

@test "a loop with a pool: a client's replies keep the order of its lines while its sleep is away" {
    hands_off_sleep || skip "no pool for slow work"
    start_server
    local sent='one\nsleep 300\ntwo\nsleep 0\nthree\nq\n' replies='one\nslept 300\ntwo\nslept 0\nthree\nbye'
    # All in one segment: the lines after a sleep wait in the server's
    # buffer. One byte per segment (-s): they wait in the kernel's.
    run timeout 10 "$PROBE" "${TO_SERVER[@]}" -n 7 -t 8 < <(printf '%b' "$sent")
    assert_success
    assert_equal "$(sed 1d <<<"$output")" "$(printf '%b' "$replies")"
    run timeout 10 "$PROBE" "${TO_SERVER[@]}" -s -n 7 -t 8 < <(printf '%b' "$sent")
    assert_success
    assert_equal "$(sed 1d <<<"$output")" "$(printf '%b' "$replies")"
}

@test "a loop with a pool: a client that resets or closes while its sleep runs costs nothing, and is not answered" {
    local before used hz b
    hands_off_sleep || skip "no pool for slow work"
    start_server
    # A sends "sleep 1000" and, once the server has handed it off, resets.
    run timeout 10 python3 - "$PORT" "$BATS_TEST_TMPDIR/server.err" <<'PY'
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(4096)  # the greeting
s.sendall(b"sleep 1000\n")
deadline = time.monotonic() + 5
while b"sleeps 1000 ms" not in open(sys.argv[2], "rb").read():
    if time.monotonic() > deadline:
        sys.exit("the server never took the sleep")
    time.sleep(0.01)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()  # with SO_LINGER 0: RST
PY
    assert_success
    # B sends "sleep 1000" and closes (FIN) while it runs.
    exec {b}<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'sleep 1000\n' >&"$b"
    wait_for "$BATS_TEST_TMPDIR/server.err" 'sleeps 1000 ms' 2
    exec {b}>&-
    # While the two jobs run, the loop does not spin on the connections gone.
    before=$(server_cpu_ticks)
    sleep 0.5 # the measurement window: CPU used during half a second
    used=$(($(server_cpu_ticks) - before))
    hz=$(getconf CLK_TCK)
    assert [ "$used" -lt $((hz / 10)) ]
    # C comes after them (reusing their memory, perhaps their descriptor),
    # and its own sleep ends after theirs: it hears its answer, not theirs.
    open_session C
    hears C '^hello'
    say C "sleep 700"
    hears C '^slept' 5
    assert_equal "$(grep -vc '^hello' "$BATS_TEST_TMPDIR/C.out")" 1
    hears C '^slept 700$'
    say C ping
    hears C '^ping$'
}
