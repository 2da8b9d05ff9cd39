#!/usr/bin/env bash
# scripts/demo.sh CHAPTER: the guided demo behind `make chapter-N`.
#
# Starts the chapter's server on a free port, then three clients at the same
# moment, each asking for one second of slow work ("sleep 1000"). Every line
# a client receives is printed with the time it arrived, so the timeline
# shows how this stage serves them: one after another, all at once, or
# greeted at once but their slow work queued. Then the chapter's own notes
# (its README's "What to notice" block). Finishes by itself in a few seconds.
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

say "== $chapter: the server =="
echo "\$ $server -p 0 -q"
"$server" -p 0 -q >"$tmp/ready" 2>"$tmp/log" &
pids+=($!)
for _ in {1..250}; do grep -q '^listening' "$tmp/ready" && break; sleep 0.02; done
cat "$tmp/ready"
port=$(sed -n '1s/.*://p' "$tmp/ready")

say "== three clients connect at the same moment; each sends 'sleep 1000', then 'quit' =="
echo "   time   who       received"
start=$EPOCHREALTIME
for who in 1 2 3; do
    {
        printf 'sleep 1000\nquit\n' | timeout 20 "$client" -p "$port" 2>/dev/null |
            while IFS= read -r line; do
                awk -v a="$start" -v b="$EPOCHREALTIME" -v who="$who" -v line="$line" \
                    'BEGIN { printf "  %5.2fs  client %s  %s\n", b - a, who, line }'
            done
    } &
    pids+=($!)
done
wait "${pids[@]:1}"

say "== sticky packets: TCP keeps bytes, not message boundaries =="
echo "Two lines sent in ONE segment still get two replies:"
printf '%s\n' "\$ printf 'one\\ntwo\\n' | scripts/probe -p $port -n 3"
printf 'one\ntwo\n' | timeout 10 scripts/probe -p "$port" -n 3 | sed 's/^/    /'
echo "One line sent ONE BYTE PER SEGMENT still gets one reply:"
printf '%s\n' "\$ printf 'one line, many segments\\n' | scripts/probe -s -p $port -n 2"
printf 'one line, many segments\n' | timeout 10 scripts/probe -s -p "$port" -n 2 | sed 's/^/    /'

say "== what to notice =="
sed -n '/<!-- notice -->/,/<!-- \/notice -->/{/<!--/d;p}' "$chapter/README.md"
echo
echo "By hand: '$server' in one terminal, '$client' (or 'nc 127.0.0.1 <port>') in others."
echo "Next: read $chapter/README.md; 'make test-${chapter:1:1}' runs this chapter's tests."
