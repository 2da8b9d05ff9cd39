#!/usr/bin/env bash
# scripts/demo.sh CHAPTER: the guided demo behind `make chapter-N`.
#
# Starts the chapter's server on a free port, then three clients at the same
# moment, each asking for one second of slow work ("sleep 1000"). Every line
# a client receives is printed with the time it arrived, so the timeline
# shows how this stage serves them: one after another, all at once, or
# greeted at once but their slow work queued. Then the scenes that matter
# for this stage (02: a client on each of three ports, first; a client that
# never reads; 05: zombies; 06: level- against edge-triggered under strace,
# then a busy client's round trip beside up to 2,000 idle ones, on 03 and
# on 06; 07: the mix-ins; 08: a pool of three workers, threads then
# processes, and a fourth client that waits for one; 09: a pool of two
# workers for three sleeps while a fourth client pings, then the hand-off
# under strace), and the chapter's own notes (its README's "What to notice"
# block). Finishes by itself, in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
chapter=${1:?usage: scripts/demo.sh CHAPTER-DIRECTORY}
server=$chapter/server client=$chapter/client
source scripts/common.sh

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }

# 02 is "one select() over several ports": its demo gives it three.
listen=(-p 0)
[[ $chapter != 02-* ]] || listen=(-p 0 -p 0 -p 0)

# start_server ARGS...: the chapter's server on free ports (one per -p 0 in
# listen); sets pid, port (the first) and ports (all, comma-separated).
# launch waits for the first ready line only, so the others are awaited here.
start_server() {
    echo "\$ $server ${listen[*]} -q $*"
    launch "$server" "${listen[@]}" -q "$@"
    wait_for "$tmp/ready" '^listening' $((${#listen[@]} / 2)) ||
        { echo "$server: fewer ready lines than listeners" >&2; return 1; }
    cat "$tmp/ready"
    ports=$(sed -n 's/^listening on .*://p' "$tmp/ready" | paste -sd, -)
}

# since START: seconds elapsed since START (an $EPOCHREALTIME).
since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

# stamped START WHO: every line read, printed with the seconds since START
# and the number of the client that received it, WHO.
stamped() {
    local line
    while IFS= read -r line; do
        printf '  %5ss  client %s  %s\n' "$(since "$1")" "$2" "$line"
    done
}

# clients_at_once N: N clients connect at the same moment, each sends
# "sleep 1000" then "quit"; every line they receive is printed with the
# time it came.
clients_at_once() {
    echo "   time   who       received"
    local start=$EPOCHREALTIME who clients=()
    for ((who = 1; who <= $1; who++)); do
        {
            printf 'sleep 1000\nquit\n' | timeout 20 "$client" -p "$port" 2>/dev/null | stamped "$start" "$who"
        } &
        clients+=($!)
    done
    wait "${clients[@]}"
}

timeline_scene() {
    say "== three clients connect at the same moment; each sends 'sleep 1000', then 'quit' =="
    clients_at_once 3
}

sticky_packets_scene() {
    say "== sticky packets: TCP keeps bytes, not message boundaries =="
    echo "Two lines sent in ONE segment still get two replies:"
    printf '%s\n' "\$ printf 'one\\ntwo\\n' | scripts/probe -p $port -n 3"
    printf 'one\ntwo\n' | timeout 10 scripts/probe -p "$port" -n 3 | sed 's/^/    /'
    echo "One line sent ONE BYTE PER SEGMENT still gets one reply:"
    printf '%s\n' "\$ printf 'one line, many segments\\n' | scripts/probe -s -p $port -n 2"
    printf 'one line, many segments\n' | timeout 10 scripts/probe -s -p "$port" -n 2 | sed 's/^/    /'
}

flood_scene() {
    say "== a client sends and sends, and never reads its replies; another client pings =="
    local keep start
    mkfifo "$tmp/flood.in"
    scripts/probe -p "$port" -f 100 -t 10 <"$tmp/flood.in" >"$tmp/flood.out" 2>/dev/null &
    launched+=($!)
    exec {keep}>"$tmp/flood.in" # the flooder holds its connection until this closes
    wait_for "$tmp/flood.out" '^sent'
    echo "flooder: $(cat "$tmp/flood.out") (then the server took no more for a second)"
    start=$EPOCHREALTIME
    if printf 'ping\n' | timeout 5 scripts/probe -p "$port" -n 2 -t 2 2>/dev/null | grep -q '^ping$'; then
        echo "ping: answered after $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }') ms"
    else
        echo "ping: NO answer within 2 s: the whole server is stuck in send() to the flooder"
    fi
    exec {keep}>&-
}

# zombies N: the server has N zombie children (ended, not reaped).
zombies() {
    # shellcheck disable=SC2009 # pgrep cannot select by process state
    (($(ps -o stat= --ppid "$pid" | grep -c Z) == $1))
}

zombie_scene() {
    say "== without reaping (-z), every child that ended stays a zombie =="
    start_server -z
    for _ in 1 2 3; do printf 'quit\n' | timeout 5 "$client" -p "$port" >/dev/null; done
    poll_until zombies 3 || true # ps below shows what there is
    echo "\$ ps -o pid,ppid,stat,cmd --ppid $pid"
    ps -o pid,ppid,stat,cmd --ppid "$pid"
    echo "(stat Z: dead, but kept until the parent calls waitpid(); without -z the parent does)"
}

# 02: one select() watches three listening sockets. One client on each
# port, all connected at once: the greetings carry the same pid and tid and
# end in three different ports.
multiport_scene() {
    say "== one select() over three listening ports: a client on each, at the same moment =="
    echo "\$ scripts/probe -p $ports -c 3      (one connection per port; their first lines:)"
    timeout 10 scripts/probe -p "$ports" -c 3 -t 2 </dev/null | sed 's/^/    /'
    echo "(one process, one thread, three ports: the listeners are just more descriptors in the same select())"
}

# 06: the echo of "two", level-triggered (the default) and edge-triggered
# (-e), as strace sees it (scripts/strace-session.sh). An edge is reported
# once, so the ET server reads until recv() says EAGAIN: one more call per
# wake-up. Needs strace, which needs no root to trace its own child.
trigger_scene() {
    say "== level- against edge-triggered: the same echo, as strace sees it =="
    if ! command -v strace >/dev/null; then
        echo "(strace is not installed: 'make strace-6' installs it, or 'sudo apt-get install strace'; scene skipped)"
        return
    fi
    local row session
    for row in 06-epoll 06-epoll+et; do
        session=$tmp/strace/$row.session
        if ! STRACE_OUT=$tmp/strace scripts/strace-session.sh -s "$row" 2>"$tmp/strace.err"; then
            echo "(strace could not trace the server here: $(tail -1 "$tmp/strace.err"); scene skipped)"
            return
        fi
        echo "\$ scripts/strace-session.sh $row      (the echo of \"two\":)"
        awk '/recvfrom\(.*"two\\n"/ { print prev; on = 1 } on { print } on && /sendto\(.*"two\\n"/ { exit }
             { prev = $0 }' "$session" | sed 's/^/    /'
        echo "  the whole session: $(grep -c . "$session") system calls, $(grep -c 'recvfrom(.* = -1 EAGAIN' "$session" || true) of them a recvfrom() answered EAGAIN"
    done
    echo "(ET reports new bytes once: the server must read until EAGAIN, or it may never hear of the rest."
    echo " LT reports the socket again while bytes remain, so one recvfrom() per wake-up is enough.)"
}

# fit_idle WANTED: raise the soft limit on descriptors (ulimit -n) so that a
# server and the load generator can each hold WANTED clients and some to
# spare; if the hard limit is too low for that, fewer. Sets idle.
fit_idle() {
    local hard soft need=$(($1 + 100))
    hard=$(ulimit -Hn) soft=$(ulimit -Sn)
    idle=$1
    if [[ $hard != unlimited ]] && ((hard < need)); then
        need=$hard idle=$((hard - 100))
        echo "(the hard limit on descriptors, ulimit -Hn, is $hard: $idle idle clients instead of $1)"
    fi
    if [[ $soft != unlimited ]] && ((soft < need)); then
        ulimit -Sn "$need"
        echo "(ulimit -n raised from $soft to $need for the servers: each client is a descriptor in each)"
    fi
}

# no_clients PID: server PID holds no connection, only its listening socket,
# so the next measure starts from the same descriptors.
no_clients() {
    (($(find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l) == 1))
}

# round_trip PORT IDLE: one busy client's median round trip in us while IDLE
# other clients sit connected (scripts/loadgen greets them all first, then
# the busy one sends 2,000 lines, each after the last one's echo); or
# "N refused" when the server turned N of them away.
round_trip() {
    local csv failed p50
    csv=$(timeout 30 scripts/loadgen -p "$1" -c 1 -n 2000 -i "$2" -t 20 -C 2>"$tmp/loadgen.err") || true
    IFS=, read -r _ _ _ _ _ _ _ _ failed _ _ p50 _ <<<"$csv"
    if [[ $failed == 0 ]]; then echo "$p50 us"; else echo "${failed:-?} of $(($2 + 1)) refused"; fi
}

# ratio A B: A / B as "13.4x" when both are round trips ("214 us"), else "-".
ratio() {
    if [[ $1 == *" us" && $2 == *" us" ]]; then
        awk -v a="${1% us}" -v b="${2% us}" 'BEGIN { printf "%.1fx", a / (b > 0 ? b : 1) }'
    else
        echo -
    fi
}

# table_row IDLE 03 06 RATIO: one line of epoll_scene's table, in columns.
table_row() {
    printf '    %12s   %-22s %-14s %s\n' "$@"
}

# race_row IDLE: one row of epoll_scene's table: the busy client's round
# trip on 03 (sel_port) and on 06 (ep_port) with IDLE idle clients, and
# how many times slower 03 is; sets ep_result (06's cell). Each run starts
# once the last one's clients are gone, from the same descriptors.
race_row() {
    local a b
    poll_until no_clients "$sel_pid" || true
    poll_until no_clients "$ep_pid" || true
    a=$(round_trip "$sel_port" "$1")
    [[ $a != *refused ]] || cp "$tmp/loadgen.err" "$tmp/refused" # how 03 turned them away
    b=$(round_trip "$ep_port" "$1")
    ep_result=$b
    table_row "$1" "$a" "$b" "$(ratio "$a" "$b")"
}

# say_refusals: what 03 told the clients it refused, and why, from its log;
# with no more clients than FD_SETSIZE allows, that it refused none.
say_refusals() {
    if [[ ! -s $tmp/refused ]]; then
        echo "(03 refused nobody: that many clients fit below descriptor 1024)"
        return
    fi
    echo "03 turned clients away with: $(grep -m1 -o 'greeting was .*' "$tmp/refused")"
    echo "03's log says why, $(grep -c 'descriptor past FD_SETSIZE' "$tmp/server.log") times: refused a connection: descriptor past FD_SETSIZE"
}

# 06 against 03: a busy client's round trip with 0, then 1,000, then 2,000
# idle clients connected. select() scans every descriptor on every turn,
# epoll_wait() returns only the ready ones; and select() cannot watch a
# descriptor past 1023 (FD_SETSIZE), so 03 refuses those clients.
epoll_scene() {
    say "== where epoll wins: idle clients cost select() on every turn, and it stops at 1024 =="
    make -s --no-print-directory -C 03-select-rw-split >/dev/null ||
        { echo "(03-select-rw-split does not build: scene skipped)"; return; }
    fit_idle 2000
    launch 03-select-rw-split/server -p 0 -m $((idle * 2)) # not -q: it logs why it refuses
    sel_port=$port sel_pid=$pid
    launch 06-epoll/server -p 0
    ep_port=$port ep_pid=$pid
    echo "One busy client sends 2,000 lines, each after the last one's echo, while other clients sit idle"
    echo "(scripts/loadgen -p PORT -c 1 -n 2000 -i IDLE: every client must be greeted first). Median round trip:"
    echo "(03 runs with -m $((idle * 2)): its cap of 1,000 clients out of the way, only FD_SETSIZE limits it)"
    table_row "idle clients" "03 (select)" "06 (epoll)" "03 / 06"
    race_row 0
    race_row $((idle / 2))
    race_row "$idle"
    say_refusals
    [[ $ep_result != *" us" ]] ||
        echo "06 greeted all $((idle + 1)) clients, and answered the busy one in $ep_result (median)."
    stop "$sel_pid"
    stop "$ep_pid"
}

# 08: a pool of 3 workers, threads then processes (-f): they wait in
# accept() before any client comes; four clients at once, each asking for
# a second of slow work: three are served at once, the fourth greeted only
# when one of them leaves, by a worker already seen.
pool_scene() {
    local kind args
    for kind in threads processes; do
        args=(-p 0 -q -t 3)
        [[ $kind == threads ]] || args+=(-f)
        say "== a pool of 3 worker $kind: they wait in accept() before any client comes =="
        echo "\$ $server ${args[*]}"
        launch "$server" "${args[@]}"
        if [[ $kind == threads ]]; then
            echo "\$ ps -L -o pid,lwp,wchan:22 -p $pid      (main, then one line per thread)"
            ps -L -o pid,lwp,wchan:22 -p "$pid" | sed 's/^/    /'
        else
            echo "\$ ps -o pid,ppid,wchan:22 -p $pid --ppid $pid      (the parent, then its children)"
            ps -o pid,ppid,wchan:22 -p "$pid" --ppid "$pid" | sed 's/^/    /'
        fi
        echo "Four clients at once, each 'sleep 1000', three workers:"
        clients_at_once 4
        stop "$pid"
    done
    echo "(one client's greeting comes at 1 s, from a worker whose client just left, and its"
    echo " 'slept 1000' at 2 s. Nobody refused it: it waited in the listen queue, connected.)"
}

# 09: the pool's limit, and the loop meanwhile: two workers, three clients
# asking for a second of slow work at the same moment, and a fourth client
# that pings 0.2 s later. Then "sleep 100" under strace: where it runs.
workers_scene() {
    say "== a pool of 2 workers: three clients 'sleep 1000' at once; a fourth pings 0.2 s later =="
    start_server -w 2
    local start=$EPOCHREALTIME
    {
        sleep 0.2 # by then the three sleeps are in the pool, or waiting for a worker
        printf 'ping\nquit\n' | timeout 5 "$client" -p "$port" 2>/dev/null | stamped "$start" 4
    } &
    clients_at_once 3
    wait $!
    stop "$pid"
    echo "(two sleeps end at 1 s, the third waits for a worker and ends at 2 s: 2 workers, 2 sleeps"
    echo " at a time. The ping is answered at once: the loop never sleeps.)"
    say "== 'sleep 100' under strace: the loop hands it to a worker, the eventfd brings it back =="
    if ! command -v strace >/dev/null; then
        echo "(strace is not installed: 'make strace-9' installs it, or 'sudo apt-get install strace'; scene skipped)"
        return
    fi
    if ! SCENARIO=sleep STRACE_OUT=$tmp/strace scripts/strace-session.sh -s "$chapter" 2>"$tmp/strace.err"; then
        echo "(strace could not trace the server here: $(tail -1 "$tmp/strace.err"); scene skipped)"
        return
    fi
    echo "\$ SCENARIO=sleep scripts/strace-session.sh $chapter      (from the line to its answer:)"
    awk '/recvfrom\(.*"sleep 100\\n"/ { on = 1 } on { print } on && /sendto\(.*"slept 100\\n"/ { exit }' \
        "$tmp/strace/$chapter.sleep.session" | sed 's/^/    /'
    echo "(main is the loop, thread 1 a worker. The futex calls are the lock and the condition"
    echo " variable; write(3) adds 1 to the eventfd, which wakes main's epoll_wait.)"
}

# 10: the same load on 06 and 10, each under strace -c from its start:
# 06 makes a recvfrom and a sendto per echo, whatever the load; 10 makes
# io_uring_enter calls only, a few per hundred echoes when each turn finds
# many completions (strace slows every call, so turns find more here).
calls_scene() {
    say "== 100 busy clients, 100,000 echoes, under strace -c: 06's calls against 10's =="
    if ! command -v strace >/dev/null; then
        echo "(strace is not installed: 'make strace-10' installs it, or 'sudo apt-get install strace'; scene skipped)"
        return
    fi
    make -s -C 06-epoll
    echo "\$ scripts/syscalls-per-echo.sh 06-epoll $chapter"
    scripts/syscalls-per-echo.sh 06-epoll "$chapter" | sed 's/^/    /'
    echo "(06: a recvfrom and a sendto for every echo. 10: the kernel made those calls, asked"
    echo " through the ring; each io_uring_enter handed it a turn's requests and took back every"
    echo " completion since the last one.)"
}

# 07: one library, three mix-ins. Each server holds three clients at once;
# their greetings say who serves them (pid, tid).
mixins_scene() {
    say "== one library, three mix-ins: three clients connected at the same moment =="
    local mode
    for mode in --sync --threading --forking; do
        launch "$server" -p 0 -q "$mode"
        echo "\$ $server -p 0 $mode      (then 3 clients at once; their first lines:)"
        timeout 10 scripts/probe -p "$port" -c 3 -t 1 </dev/null | sed 's/^/    /'
        stop "$pid"
    done
}

# 07: the Python program of a source article and its C twin, same input.
twins_scene() {
    say "== the article's Python server and its C twin, given the same lines =="
    command -v python3 >/dev/null || { echo "(python3 is not installed: scene skipped)"; return; }
    local twin
    for twin in "python3 $chapter/examples/stream_handler.py" "$chapter/examples/stream_handler"; do
        # shellcheck disable=SC2086 # the twin is a command line
        launch $twin -p 0
        printf '$ %s -p 0     (then: hello, exit)\n' "$twin"
        printf 'hello\nexit\n' | timeout 10 scripts/probe -p "$port" -n 3 -t 2 | sed 's/^/    /'
        stop "$pid"
    done
}

# 07: how fast a server stops. Python's loop sees shutdown() only when its
# poll() times out; the C loop is woken by a byte on its self-pipe.
shutdown_scene() {
    say "== stopping: the C loop wakes at once, Python's at its next poll_interval =="
    launch "$server" -p 0 -q --poll-interval 5
    local start=$EPOCHREALTIME
    stop "$pid"
    echo "C: 'server --poll-interval 5' exited $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }') ms after SIGTERM"
    if command -v python3 >/dev/null; then python3 "$chapter/examples/shutdown_latency.py" 2; fi
}

say "== $chapter: the server =="
start_server
[[ $chapter != 02-* ]] || multiport_scene
timeline_scene
sticky_packets_scene
[[ $chapter == 01-* ]] || flood_scene
[[ $chapter != 05-* ]] || zombie_scene
[[ $chapter != 08-* ]] || pool_scene
[[ $chapter != 09-* ]] || workers_scene
[[ $chapter != 10-* ]] || calls_scene
if [[ $chapter == 06-* ]]; then
    trigger_scene
    epoll_scene
fi
if [[ $chapter == 07-* ]]; then
    mixins_scene
    twins_scene
    shutdown_scene
fi

say "== what to notice =="
sed -n '/<!-- notice -->/,/<!-- \/notice -->/{/<!--/d;p}' "$chapter/README.md"
echo
echo "By hand: '$server' in one terminal, '$client' in others (scripts/probe when you need control over the bytes)."
echo "Next: read $chapter/README.md; 'make test-$((10#${chapter%%-*}))' runs this chapter's tests."
