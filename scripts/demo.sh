#!/usr/bin/env bash
# scripts/demo.sh CHAPTER: the guided demo behind `make chapter-N`.
#
# Starts the chapter's server on a free port, then three clients at the same
# moment, each asking for one second of slow work ("sleep 1000"). Every line
# a client receives is printed with the time it arrived, so the timeline
# shows how this stage serves them: one after another, all at once, or
# greeted at once but their slow work queued. Then the scenes that matter
# for this stage (a client that never reads; zombies), and the chapter's own
# notes (its README's "What to notice" block). Finishes by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
chapter=${1:?usage: scripts/demo.sh CHAPTER-DIRECTORY}
server=$chapter/server client=$chapter/client
source scripts/common.sh

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }

# start_server ARGS...: the chapter's server on a free port; sets pid, port.
start_server() {
    echo "\$ $server -p 0 -q $*"
    launch "$server" -p 0 -q "$@"
    cat "$tmp/ready"
}

# since START: seconds elapsed since START (an $EPOCHREALTIME).
since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

timeline_scene() {
    say "== three clients connect at the same moment; each sends 'sleep 1000', then 'quit' =="
    echo "   time   who       received"
    local start=$EPOCHREALTIME who clients=()
    for who in 1 2 3; do
        {
            printf 'sleep 1000\nquit\n' | timeout 20 "$client" -p "$port" 2>/dev/null |
                while IFS= read -r line; do
                    printf '  %5ss  client %s  %s\n' "$(since "$start")" "$who" "$line"
                done
        } &
        clients+=($!)
    done
    wait "${clients[@]}"
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

zombie_scene() {
    say "== without reaping (-z), every child that ended stays a zombie =="
    start_server -z
    for _ in 1 2 3; do printf 'quit\n' | timeout 5 "$client" -p "$port" >/dev/null; done
    for _ in {1..100}; do # until the three children have exited
        # shellcheck disable=SC2009 # pgrep cannot select by process state
        (($(ps -o stat= --ppid "$pid" | grep -c Z) == 3)) && break
        sleep 0.02
    done
    echo "\$ ps -o pid,ppid,stat,cmd --ppid $pid"
    ps -o pid,ppid,stat,cmd --ppid "$pid"
    echo "(stat Z: dead, but kept until the parent calls waitpid(); without -z the parent does)"
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
timeline_scene
sticky_packets_scene
[[ $chapter == 01-* ]] || flood_scene
[[ $chapter != 05-* ]] || zombie_scene
if [[ $chapter == 07-* ]]; then
    mixins_scene
    twins_scene
    shutdown_scene
fi

say "== what to notice =="
sed -n '/<!-- notice -->/,/<!-- \/notice -->/{/<!--/d;p}' "$chapter/README.md"
echo
echo "By hand: '$server' in one terminal, '$client' (or 'nc 127.0.0.1 <port>') in others."
echo "Next: read $chapter/README.md; 'make test-${chapter:1:1}' runs this chapter's tests."
