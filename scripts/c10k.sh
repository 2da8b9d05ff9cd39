#!/usr/bin/env bash
# scripts/c10k.sh [CHAPTER] [SERVER-ARGS...]: the C10K test behind `make c10k`.
#
# Ten thousand connections held open at once against one server (default
# 06-epoll), all greeted while all are open, then ten echoes on each, every
# byte checked (scripts/loadgen). Prints the server's thread count, its
# memory per connection while the 10,000 sit idle, and its peak resident
# memory. Fails if any connection was not served, or if an idle one costs
# the server more than 2 KiB (make c10k runs the event loops, 06, 09 and 10,
# whose idle client is a small struct; BYTES_LIMIT=N sets another bound).
set -euo pipefail
cd "$(dirname "$0")/.."
chapter=${1:-06-epoll}
shift || true
conns=10000
limit=${BYTES_LIMIT:-2048}
source scripts/common.sh

# Each side needs a descriptor per connection, plus a few of its own.
need=$((conns + 64))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < need)); then
    echo "c10k: needs 'ulimit -n $need' (the hard limit here is $hard)" >&2
    exit 1
fi
ulimit -n "$need"

launch "$chapter/server" -p 0 -q -m $((conns * 2)) "$@"
before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")

echo "== $chapter $* : $conns connections at once (scripts/loadgen) =="
scripts/loadgen -p "$port" -c "$conns" -n 10 -t 120 -P "$pid" | tee "$tmp/report"
threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
idle=$(sed -n 's/.*RSS \([0-9]*\) KiB after connect.*/\1/p' "$tmp/report")
echo "server threads: $threads"
per_conn=$(awk -v a="$before" -v b="$idle" -v n="$conns" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
echo "server memory: $before KiB before, $idle KiB with $conns idle connections: $per_conn bytes per connection"
echo "server peak resident memory (VmHWM): $peak KiB"
((per_conn <= limit)) || { echo "c10k: $per_conn bytes per idle connection, over the bound of $limit" >&2; exit 1; }
