#!/usr/bin/env bats
# Chapter 10's own tests, beyond the shared contract (tests/run.sh runs them
# with the row 10-io-uring): the one thread stays one thread under load (no
# io-wq workers), a sleep is a timer of its own for each client, and where
# io_uring is refused the server says so and exits 1.

load helpers

# io_wq_workers: the server's threads that are io_uring's workers, one name
# a line. The kernel names them iou-wrk-PID; they appear when a request
# cannot be done at once and cannot wait by polling (a regular file read,
# say, or one marked IOSQE_ASYNC), and it is handed to a kernel thread.
io_wq_workers() {
    grep -h '^iou-wrk' /proc/"$SERVER_PID"/task/*/comm 2>/dev/null || true
}

# watch_for_workers PID: until PID ends, note every io-wq worker seen, in
# workers.seen, every 20 ms.
watch_for_workers() {
    while kill -0 "$1" 2>/dev/null; do
        io_wq_workers >>"$BATS_TEST_TMPDIR/workers.seen"
        sleep 0.02
    done
}

@test "under load (100 busy connections, sleeps, churn), no io-wq worker thread: sockets and timers never leave the ring's thread" {
    local busy churn
    start_server -q -m 2000
    : >"$BATS_TEST_TMPDIR/workers.seen"
    # 100 connections, 4 lines in flight each, 5% of them "sleep 10"; and
    # beside them, connections that come, quit and linger, 10 at a time.
    timeout 50 "$ROOT/scripts/loadgen" "${TO_SERVER[@]}" -c 100 -n 2000 -k 4 -s 200 -S 5 -t 45 \
        >"$BATS_TEST_TMPDIR/busy.out" 2>&1 &
    busy=$!
    timeout 50 "$ROOT/scripts/loadgen" "${TO_SERVER[@]}" -c 10 -r -n 2000 -t 45 \
        >"$BATS_TEST_TMPDIR/churn.out" 2>&1 &
    churn=$!
    STARTED+=("$busy" "$churn")
    watch_for_workers "$busy"
    wait "$busy" || fail "loadgen (busy): $(cat "$BATS_TEST_TMPDIR/busy.out")"
    wait "$churn" || fail "loadgen (churn): $(cat "$BATS_TEST_TMPDIR/churn.out")"
    io_wq_workers >>"$BATS_TEST_TMPDIR/workers.seen" # idle workers stay for seconds
    assert_equal "$(sort -u "$BATS_TEST_TMPDIR/workers.seen" | xargs)" ""
    assert_equal "$(server_threads)" 1
}

@test "three clients sleeping 1 s at once take about 1 s: each sleep is a timeout of its own, no pool to wait for" {
    local start name
    start_server
    for name in A B C; do open_session "$name"; done
    for name in A B C; do hears "$name" '^hello'; done
    start=$EPOCHREALTIME
    for name in A B C; do say "$name" "sleep 1000"; done
    for name in A B C; do hears "$name" '^slept 1000$' 5; done
    assert is_at_least "$(seconds_since "$start")" 0.9
    refute is_at_least "$(seconds_since "$start")" 1.5
}

@test "where io_uring is refused (a seccomp filter, as in Docker's default profile): the server says why and exits 1" {
    local without=$ROOT/scripts/without-io-uring
    [[ -x $without ]] || skip "build the tools first (make -C scripts)"
    "$without" true 2>"$BATS_TEST_TMPDIR/filter.err" ||
        skip "no seccomp filter can be installed here: $(cat "$BATS_TEST_TMPDIR/filter.err")"
    run timeout 5 "$without" "$SERVER" -p 0
    assert_equal "$status" 1
    assert_output "server: io_uring is not available here: Operation not permitted (a kernel older than 6.1, kernel.io_uring_disabled, or a seccomp filter)"
}
