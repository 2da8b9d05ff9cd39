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
tmp=$(mktemp -d)
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }

# wait_for FILE REGEX: until FILE has a line matching REGEX (at most 10 s).
wait_for() {
    for _ in {1..500}; do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.02; done
    return 1
}

# start_server NAME ARGS...: the chapter's server on a free port; sets port.
start_server() {
    local name=$1
    shift
    echo "\$ $server -p 0 -q $*"
    "$server" -p 0 -q "$@" >"$tmp/$name.ready" 2>"$tmp/$name.log" &
    pids+=($!)
    wait_for "$tmp/$name.ready" '^listening'
    cat "$tmp/$name.ready"
    port=$(sed -n '1s/.*://p' "$tmp/$name.ready")
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
    pids+=($!)
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
    start_server zombies -z
    for _ in 1 2 3; do printf 'quit\n' | timeout 5 "$client" -p "$port" >/dev/null; done
    for _ in {1..100}; do # until the three children have exited
        # shellcheck disable=SC2009 # pgrep cannot select by process state
        (($(ps -o stat= --ppid "${pids[-1]}" | grep -c Z) == 3)) && break
        sleep 0.02
    done
    echo "\$ ps -o pid,ppid,stat,cmd --ppid ${pids[-1]}"
    ps -o pid,ppid,stat,cmd --ppid "${pids[-1]}"
    echo "(stat Z: dead, but kept until the parent calls waitpid(); without -z the parent does)"
}

say "== $chapter: the server =="
start_server main
timeline_scene
sticky_packets_scene
[[ $chapter == 01-* ]] || flood_scene
[[ $chapter != 05-* ]] || zombie_scene

say "== what to notice =="
sed -n '/<!-- notice -->/,/<!-- \/notice -->/{/<!--/d;p}' "$chapter/README.md"
echo
echo "By hand: '$server' in one terminal, '$client' (or 'nc 127.0.0.1 <port>') in others."
echo "Next: read $chapter/README.md; 'make test-${chapter:1:1}' runs this chapter's tests."
