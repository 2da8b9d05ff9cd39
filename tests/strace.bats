#!/usr/bin/env bats
# What `make strace-N` shows, checked: one client's session with this row's
# server, traced by scripts/strace-session.sh (the tool the lessons name),
# holds the whole session in the task that serves it (the row's served_by),
# the wait the stage is about (its waits_in), what a client that never
# reads does to the loop (its flood), and it is what the lesson quotes.
# TCP rows only (the scenario speaks TCP). Not on sanitizer builds: the
# sanitizers make calls of their own (and ThreadSanitizer a thread).

load helpers

setup_file() {
    built_with_sanitizer && return 0
    # Where the stage cannot run (10's io_uring, refused here), the session
    # fails with the server's reason, and every test skips with it (setup).
    STRACE_OUT=$BATS_FILE_TMPDIR "$ROOT/scripts/strace-session.sh" -s "$CHAPTER" 2>"$BATS_FILE_TMPDIR/session.err" ||
        grep -q 'io_uring is not available here' "$BATS_FILE_TMPDIR/session.err" ||
        { cat "$BATS_FILE_TMPDIR/session.err" >&2; return 1; }
}

setup() {
    local unavailable
    ! built_with_sanitizer || skip "a sanitizer build makes system calls of its own"
    unavailable=$(grep -o 'server: io_uring is not available here.*' "$BATS_FILE_TMPDIR/session.err") && skip "$unavailable"
    SESSION=$BATS_FILE_TMPDIR/$CHAPTER.session
}

# The task that serves the client, as the session names it.
serving_task() {
    case $(expect served_by) in
    one) echo main ;;
    thread) echo "thread 1" ;;
    process) echo "child 1" ;;
    esac
}

# calls_of TASK [SESSION]: the calls TASK made, without the task column.
calls_of() {
    awk -v task="$1" 'substr($0, 1, 10) ~ "^" task " *$" { print substr($0, 11) }' "${2:-$SESSION}"
}

@test "strace: the whole session, from accept to close, in the task that serves it" {
    local task acceptor=main
    task=$(serving_task)
    [[ $(expect waits_in) != pool-accept ]] || acceptor=$task # a pool's worker accepts for itself
    if [[ $(expect waits_in) == io_uring ]]; then
        # The kernel accepts, receives, sends and closes, as the requests on
        # the ring ask: none of those calls is the server's. What is left of
        # the session: the greeting's questions, and the shutdown (on the
        # ring, io_uring would hand it to a worker thread). The session's
        # server runs with -q: no log, so no getpeername, nor getsockname
        # for the port it would name (the greeting's is the listener's).
        run calls_of main
        refute_line --regexp '^(getpeername|getsockname)\('
        assert_line 'gettid() = <main>'
        refute_line --regexp '^(accept4?|recvfrom|recv|read|sendto|send|write|close)\('
    else
        run calls_of "$acceptor"
        assert_line --regexp '^accept4?\(.*\) = [0-9]+$'
        run calls_of "$task"
        assert_line --regexp "^sendto\([0-9]+, \"hello chapter=$CHAPTER_DIR pid=<[a-z0-9 ]+> tid=<$task> "
        assert_line --regexp '^(recvfrom|read)\([0-9]+, "one\\n", '
        assert_line --regexp '^sendto\([0-9]+, "two\\n", '
        assert_line --regexp '^sendto\([0-9]+, "three\\n", '
        assert_line --regexp '^sendto\([0-9]+, "bye\\n", '
    fi
    assert_line --regexp '^shutdown\([0-9]+, SHUT_WR\)'
    [[ $(expect waits_in) == io_uring ]] || assert_line --regexp '^close\([0-9]+\) = 0$'
    # Who made the serving task, and nobody else served: no new task for one
    # task; for a thread each, clone3 with CLONE_THREAD; for a process each,
    # a clone without it (fork), and the parent reaps the child. A pool's
    # workers exist before the session: no task is made in it, and none but
    # main and the worker that serves shows up.
    run calls_of main
    if [[ $(expect waits_in) == pool-accept ]]; then
        refute grep -E '^.{10}(clone|clone3|fork|vfork)\(' "$SESSION"
        refute grep -vE "^(main|$task) " "$SESSION"
        return
    fi
    case $(expect served_by) in
    one) refute grep -E '^(thread|child) ' "$SESSION" ;;
    thread)
        assert_line --regexp '^clone3\(\{flags=[A-Z_|]*CLONE_THREAD.* = <thread 1>$'
        refute grep -E '^child ' "$SESSION"
        ;;
    process)
        assert_line --regexp '^clone\(.* = <child 1>$'
        refute_line --regexp '^clone.*CLONE_THREAD'
        assert_line --regexp '^wait4\(.* = <child 1>$'
        refute grep -E '^thread ' "$SESSION"
        ;;
    esac
}

# waits_before_reads WAIT: every read of a line is announced by a WAIT call
# since the previous one (the loop learns who is ready, then reads).
waits_before_reads() {
    calls_of main | awk -v wait="$1" '
        $0 ~ "^(" wait ")\\(" { ready = 1 }
        /^recvfrom\([0-9]+, "[^"]/ { if (!ready) { print "read without a wait first: " $0; bad = 1 } ready = 0 }
        END { exit bad }'
}

# eagain_per_wakeup: how the session's wake-ups (epoll_wait) that brought
# a line ended: with the reads that followed closed by exactly one recvfrom
# answered EAGAIN (edge-triggered: read until the socket is empty), or not.
eagain_per_wakeup() {
    calls_of main | awk '
        function tally() { if (lines) { if (eagain == 1) ended++; else other++ } lines = eagain = 0 }
        /^epoll_wait\(/ { tally(); wakeups++ }
        /^recvfrom\([0-9]+, "[^"]/ { lines++ }
        /^recvfrom.* = -1 EAGAIN/ { eagain++ }
        END { tally(); printf "wake-ups %d, reads that ended in one EAGAIN %d, other endings %d\n", wakeups, ended, other }'
}

# between FROM TO: the session's lines from the first one holding FROM to
# the next one holding TO (fixed strings).
between() {
    awk -v from="$1" -v to="$2" 'index($0, from) { on = 1 } on { print } on && index($0, to) { exit }' "$SESSION"
}

@test "strace: the session shows the stage's wait (waits_in)" {
    run calls_of main
    case $(expect waits_in) in
    accept)
        # Blocks in accept; no select, poll or epoll in the main task but
        # the lingering close's poll on the client's own socket.
        assert_line --index 0 --regexp '^accept\('
        refute_line --regexp '^(pselect6|select|epoll_wait)\('
        refute_line --regexp '^poll\(\[\{fd=3, '
        assert_line --regexp '^accept\(3, .* = \? \(still waiting\)$'
        ;;
    select)
        assert_line --index 0 --regexp '^pselect6\(.* = 1 \(in \[3\]\)$'
        run waits_before_reads pselect6
        assert_success
        ;;
    epoll | epoll-et)
        assert_line --index 0 --regexp '^epoll_wait\('
        run waits_before_reads epoll_wait
        assert_success
        # Interest is set once, when the client arrives: no epoll_ctl per
        # message, from the first echo to the last.
        run between '"one\\n"' '"three\\n"'
        assert_success
        refute_output --partial epoll_ctl
        run eagain_per_wakeup
        if [[ $(expect waits_in) == epoll-et ]]; then
            assert_output 'wake-ups 7, reads that ended in one EAGAIN 4, other endings 0'
        else # level-triggered: one read per wake-up is enough
            assert_output 'wake-ups 7, reads that ended in one EAGAIN 0, other endings 4'
        fi
        ;;
    pool-accept)
        # main only waits, in pause() (threads) or in wait4() for a worker
        # process to end; the worker's accept, in progress when the session
        # began, comes first, and the worker is in accept again at its end.
        assert_equal "${#lines[@]}" 1
        assert_line --index 0 --regexp '^(pause|wait4)\(.* = \? \(still waiting\)$'
        run calls_of "$(serving_task)"
        assert_line --index 0 --regexp '^accept\(3, .* = [0-9]+$'
        assert_line --index $((${#lines[@]} - 1)) --regexp '^accept\(3, .* = \? \(still waiting\)$'
        refute_line --regexp '^(pselect6|select|epoll_wait)\('
        refute_line --regexp '^poll\(\[\{fd=3, '
        ;;
    io_uring)
        # Each turn is one io_uring_enter: it submits the requests the last
        # turn queued (its second argument) and waits for one completion (its
        # third). The kernel makes the calls the others make: no accept,
        # recv, send or wait of the server's own. The greeting and each of
        # the three echoes leave in one enter with the next recv: 2; bye
        # with the lingering recv and its link timeout: 3.
        assert_line --index 0 --regexp '^io_uring_enter\([0-9]+, 0, 1, IORING_ENTER_GETEVENTS, '
        refute_line --regexp '^(accept4?|recvfrom|recv|read|sendto|send|write|epoll_wait|epoll_ctl|pselect6|poll)\('
        assert_equal "$(grep -c '^io_uring_enter([0-9]*, 2, 1, ' <<<"$output")" 4
        assert_equal "$(grep -c '^io_uring_enter([0-9]*, 3, 1, ' <<<"$output")" 1
        ;;
    poll)
        # serve_forever polls the listener and its wake-up pipe, then accepts.
        assert_line --index 0 --regexp '^poll\(\[\{fd=[0-9]+, events=POLLIN\}, '
        assert_line --index 1 --regexp '^accept4\('
        ;;
    *) fail "unknown waits_in in tests/expectations.txt: $(expect waits_in)" ;;
    esac
}

@test "strace: a client that never reads: a loop's send gets EAGAIN and it serves on; a blocking send waits" {
    [[ $(expect flood) != - ]] || skip "one client at a time: nobody else is there to stall"
    SCENARIO=flood STRACE_OUT=$BATS_TEST_TMPDIR "$ROOT/scripts/strace-session.sh" -s "$CHAPTER"
    local flood=$BATS_TEST_TMPDIR/$CHAPTER.flood.session task
    task=$(serving_task)
    if [[ $(expect waits_in) == io_uring ]]; then
        # No EAGAIN ever reaches the loop: the send the socket has no room
        # for waits in the kernel, and the recv chained behind it (a reply
        # and the next recv, submitted together: 2) waits with it, so the
        # client is not read from until it reads, or leaves.
        refute grep -E 'sendto|EAGAIN' "$flood"
        run calls_of main "$flood"
        assert_line --regexp '^io_uring_enter\([0-9]+, 2, 1, IORING_ENTER_GETEVENTS, '
    elif [[ $(expect served_by) == one && $(expect flood) == serves ]]; then
        # The socket's buffer is full: the kernel answers EAGAIN instead of
        # blocking, the rest stays queued, and the loop waits again.
        run grep -m1 -A2 'sendto.* = -1 EAGAIN' "$flood"
        assert_line --regexp '^main +(pselect6|epoll_wait)\('
    else
        # A blocking send: no EAGAIN ever; the send that filled the buffer
        # returns only when the client leaves (reset). In 02 the loop waits
        # with it; with a thread or a process each, only that task does.
        refute grep 'sendto.* = -1 EAGAIN' "$flood"
        run calls_of "$task" "$flood"
        assert_line --regexp '^sendto\(.* = -1 (ECONNRESET|EPIPE) '
    fi
}

@test "strace: one task serves everyone: a client's sleep is slept in it, handed to a worker thread, or a timeout on the ring" {
    [[ $(expect served_by) == one ]] || skip "a task per client: its sleep stalls nobody else whoever sleeps it"
    SCENARIO=sleep STRACE_OUT=$BATS_TEST_TMPDIR "$ROOT/scripts/strace-session.sh" -s "$CHAPTER"
    local slept=$BATS_TEST_TMPDIR/$CHAPTER.sleep.session
    run calls_of main "$slept"
    if [[ $(expect waits_in) == io_uring ]]; then
        # Nobody sleeps: the sleep is a timeout on the ring, submitted alone
        # (1: no reply yet, no recv while it runs), and the loop waits in
        # io_uring_enter for it as for any completion. No thread either.
        refute_line --regexp '^(clock_)?nanosleep\('
        assert_line --regexp '^io_uring_enter\([0-9]+, 1, 1, IORING_ENTER_GETEVENTS, '
        refute grep -E '^thread ' "$slept"
        return
    fi
    assert_line --regexp '^sendto\([0-9]+, "slept 100\\n", '
    if [[ $(expect sleep) == serves ]]; then
        # The loop never sleeps: a worker does, then adds 1 to the eventfd,
        # and the loop, woken by it in epoll_wait, reads it back and answers.
        refute_line --regexp '^(clock_)?nanosleep\('
        assert_line --regexp '^read\([0-9]+, "\\1\\0\\0\\0\\0\\0\\0\\0", 8\) = 8$'
        run calls_of "thread 1" "$slept"
        assert_line --regexp '^(clock_)?nanosleep\(.*tv_nsec=100000000\}'
        assert_line --regexp '^write\([0-9]+, "\\1\\0\\0\\0\\0\\0\\0\\0", 8\) = 8$'
    else
        # The loop itself sleeps, and every other client waits with it.
        assert_line --regexp '^(clock_)?nanosleep\(.*tv_nsec=100000000\}'
        refute grep -E '^thread ' "$slept"
    fi
}

# by_task SESSION: its lines grouped by task (each task's order kept),
# every number an N, and left out: waits that timed out and reaping that
# found nobody (07 wakes every poll_interval: how many times a session
# sees that depends on the clock, not on the client).
by_task() {
    grep -vE '(poll|restart_syscall|epoll_wait|pselect6)\(.* = 0( |$)|wait4\(.* = 0$' "$1" |
        sed 's/[0-9][0-9]*/N/g' | awk '{ print substr($0, 1, 10) "\t" NR "\t" $0 }' |
        sort -t "$(printf '\t')" -k1,1 -k2,2n | cut -f3-
}

@test "strace: the lesson quotes this session, as the tool prints it" {
    local readme=$ROOT/$CHAPTER_DIR/README.md
    sed -n "/^<!-- session $CHAPTER -->\$/,/^<!-- \/session -->\$/p" "$readme" | grep -v '^<!--\|^```' >"$BATS_TEST_TMPDIR/quoted"
    [[ -s $BATS_TEST_TMPDIR/quoted ]] || fail "$CHAPTER_DIR/README.md has no <!-- session $CHAPTER --> block"
    run diff <(by_task "$BATS_TEST_TMPDIR/quoted") <(by_task "$SESSION")
    assert_success
}
