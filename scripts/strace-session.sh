#!/usr/bin/env bash
# scripts/strace-session.sh [-s] ROW [SERVER-ARGS...]: one client's session
# with a chapter's server, whole, as strace saw it: `make strace-N`.
#
# ROW is a chapter (04 or 04-thread-per-conn) or a chapter in one of its modes,
# named as in tests/expectations.txt (06-epoll+et); the server runs with that
# row's arguments, or with SERVER-ARGS when given (make strace-6 MODE=-e).
#
# The scenario (SCENARIO=echo, the default), always the same:
#   1. the server starts under `strace -f` (every thread and child traced);
#   2. a warm-up client connects, sends "one" and "quit", and leaves; its
#      session carries the first-time costs (the first thread's malloc
#      arena, for one), which are in the raw trace but not in the session;
#   3. the session: the chapter's own client connects, reads the greeting,
#      sends "one", "two" and "three", each after the reply to the last,
#      then "quit", reads "bye" and closes;
#   4. SIGTERM, and how the server stops.
# Before and after the session, the script waits until the server is back
# to waiting (one task, no child process, no socket but its listeners), then
# sends it SIGWINCH: a signal a program ignores unless it asks for it, which
# strace still shows (a traced process hears every signal), and which only
# makes the call the server waits in start again. The two SIGWINCH lines
# are the session's bounds in the trace.
#
# SCENARIO=flood: the session's client is `scripts/probe -f 16`, which sends
# lines of 1 KiB and never reads a reply, until 16 MiB are sent or the
# server stops taking them for a second, then leaves (chapter 03's lesson).
# SCENARIO=sleep: the chapter's client sends "sleep 100", then "quit": where
# the slow work runs (chapter 09's lesson: in a worker thread).
#
# Writes out/strace/NAME.trace (strace's own output), out/strace/NAME.session
# and out/strace/NAME.stop (made comparable by scripts/strace-session.awk),
# where NAME is the row (ROW.flood for the flood); then prints the session
# and the stop (-s: prints nothing, for scripts/strace-compare.sh and the
# tests). STRACE_OUT=DIR writes them to DIR instead of out/strace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
quiet=
if [[ ${1:-} == -s ]]; then quiet=1; shift; fi
(($# > 0)) || { echo "usage: scripts/strace-session.sh [-s] ROW [SERVER-ARGS...]" >&2; exit 2; }
row=$(resolve_row "$1")
shift
dir=${row%%+*}
if (($# > 0)); then
    args=("$@")
    row=$(row_named "$dir" "$@")
else
    read -ra args <<<"$(row_args "$row")"
fi
transport=$(row_value "$row" transport || echo tcp) # a row of its own args is TCP
[[ $transport == tcp ]] ||
    { echo "strace-session.sh: $row is served over $transport; this scenario speaks TCP" >&2; exit 2; }
scenario=${SCENARIO:-echo}
[[ $scenario =~ ^(echo|flood|sleep)$ ]] || { echo "strace-session.sh: SCENARIO is echo, flood or sleep" >&2; exit 2; }
[[ $scenario == echo ]] || row+=".$scenario"
[[ -x $dir/server ]] || { echo "strace-session.sh: build $dir first (make -C $dir)" >&2; exit 1; }
out=${STRACE_OUT:-out/strace}
mkdir -p "$out"
trace=$out/$row.trace

# tasks: the server's thread count and its child processes (zombies too).
tasks() {
    awk '/^Threads:/ { print $2 }' "/proc/$server/status"
    ps -o pid= --ppid "$server" | sort || true # (ps fails when there is none)
}

# asleep: every thread of the server and of its children sleeps in a call
# (state S); none is between two calls, as a pool's worker is after a
# client's close and before its next accept.
asleep() {
    local pid
    for pid in $(process_family "$server"); do
        awk '$3 != "S" { exit 1 }' "/proc/$pid/task/"*/stat 2>/dev/null || return 1
    done
}

# settled: the server is waiting again: the threads and child processes it
# had once ready (a pool's workers, or none), no socket but its listeners,
# and every task asleep.
settled() {
    local sockets
    [[ $(tasks) == "$ready_tasks" ]] || return 1
    sockets=$(find "/proc/$server/fd" -lname 'socket:*' 2>/dev/null | wc -l)
    ((sockets == listeners)) && asleep
}

# mark N: once the server has settled, a SIGWINCH, the trace's Nth; returns
# when the trace shows it, so that nothing the script does next comes before.
mark() {
    poll_until settled || { echo "strace-session.sh: $row did not go back to waiting within 10 s" >&2; exit 1; }
    kill -WINCH "$server"
    wait_for "$trace" '--- SIGWINCH' "$1" ||
        { echo "strace-session.sh: the trace of $row does not show marker $1" >&2; exit 1; }
}

# flood: probe sends until the server stops taking its lines, says "sent",
# and holds the connection until its stdin (a pipe held here) closes.
flood() {
    local keep
    mkfifo "$tmp/flood.in"
    timeout 20 scripts/probe -p "$port" -f 16 -t 10 <"$tmp/flood.in" >"$tmp/flood.out" &
    exec {keep}>"$tmp/flood.in"
    wait_for "$tmp/flood.out" '^sent' || { echo "strace-session.sh: the flood did not end" >&2; exit 1; }
    exec {keep}>&-
    wait $!
}

session() {
    local client=(timeout 10 "$dir/client" -p "$port")
    case $1 in
    warm-up) printf 'one\nquit\n' | "${client[@]}" >/dev/null ;;
    echo) printf 'one\ntwo\nthree\nquit\n' | "${client[@]}" >/dev/null ;;
    sleep) printf 'sleep 100\nquit\n' | "${client[@]}" >/dev/null ;;
    flood) flood ;;
    esac
}

# show SESSION: print it; a long one (the flood) folded to its first lines,
# the first call answered EAGAIN with what surrounds it, and its last lines.
show() {
    awk 'NR == FNR { n++; if (!eagain && / = -1 EAGAIN/) eagain = FNR; next }
         n <= 60 || FNR <= 12 || FNR > n - 8 || (eagain && FNR >= eagain - 4 && FNR <= eagain + 4) {
             if (FNR > shown + 1) printf "          ... %d lines ...\n", FNR - shown - 1
             print; shown = FNR }' "$1" "$1"
}

# As many free ports as the row has listeners (02 listens on three).
listeners=$(row_value "$dir" listeners)
ports=()
for ((i = 0; i < listeners; i++)); do ports+=(-p 0); done
launch strace -f -qq -s 80 -o "$trace" "$dir/server" "${ports[@]}" -q "${args[@]}"
wait_for "$tmp/ready" '^listening' "$listeners" || { echo "strace-session.sh: $row: too few ready lines" >&2; exit 1; }
server=$(ps -o pid= --ppid "$pid" | tr -d ' ') # strace started the server as its child
launched+=("$server")
ready_tasks=$(tasks) # a server prints its ready line once its workers run (2 threads under ThreadSanitizer)
session warm-up
mark 1
session "$scenario"
mark 2
stop "$server"
wait "$pid" || true

awk -v part=session -f scripts/strace-session.awk "$trace" >"$out/$row.session"
awk -v part=stop -f scripts/strace-session.awk "$trace" >"$out/$row.stop"
[[ -z $quiet ]] || exit 0

echo "One session of $row, as strace -f saw it ($scenario scenario: scripts/strace-session.sh says what it is):"
echo "(pids are roles, ports PORT, pointers ADDR; the raw trace is $trace)"
echo
show "$out/$row.session"
echo
echo "How it stopped, from the SIGTERM to the exit:"
cat "$out/$row.stop"
