#!/usr/bin/env bash
# scripts/cpu-profile.sh [-c CONNS] ROW...: where each server's CPU goes
# while CONNS connections (default 100) ping-pong 64-byte lines, side by
# side in one run: `perf record` samples the server (its own CPU, pinned to
# CPU 0; scripts/loadgen runs on CPU 1), and each sample's function is put
# in one of these parts:
#   TCP/IP         the kernel's network stack: the socket calls' real work
#                  (tcp_*, ip_*, skb_*, sock_*, the loopback device, the
#                  copies to and from the socket buffers, softirq)
#   system calls   entering and leaving the kernel: what a system call
#                  costs in itself
#   descriptors    finding the socket behind a descriptor (fget, fput):
#                  once per call in 06, once per request in io_uring
#   epoll          epoll's own bookkeeping (ep_*, do_epoll_*)
#   io_uring       io_uring's own bookkeeping (io_*: the rings, requests,
#                  polls, task work): what it costs to have the kernel do
#                  the calls
#   wake-ups       the scheduler: going to sleep in a wait, being woken
#   memory         the kernel's allocators (slab, pages, memory cgroups)
#   user space     the server's own code and the C library
#   other          the rest of the kernel (its biggest functions are named)
# ROW is a row of tests/expectations.txt, or a chapter's number (06, 10,
# 06+et). Each part is printed as a share of the server's samples and as
# CPU µs per echo (the share times the server's CPU per echo, from loadgen
# -P). The classification is by function name: a rough map, good to a few
# percent, which is what the lesson needs.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=100
if [[ ${1:-} == -c ]]; then conns=$2; shift 2; fi
(($# > 0)) || { echo "usage: scripts/cpu-profile.sh [-c CONNS] ROW... (e.g. 06 10)" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
source scripts/common.sh

# profile ROW: samples the server of ROW under load; prints "part share
# us_per_echo" lines, and the top functions of "other" on stderr.
profile() {
    local row=$1 chapter=${1%%+*} cpu_per_echo perf_pid
    # shellcheck disable=SC2046 # row_args is a list of words
    launch taskset -c 0 "$chapter/server" -p 0 -q -m 20000 $(row_args "$row")
    perf record -q -g -e cpu-clock -F 4999 -o "$tmp/perf.data" -p "$pid" 2>>"$tmp/server.log" &
    perf_pid=$!
    sleep 0.5 # perf attaches before the load starts
    cpu_per_echo=$(taskset -c 1 scripts/loadgen -p "$port" -c "$conns" -n $((200000 / conns)) -t 60 -P "$pid" -C |
        awk -F, '{ print $18 }') # server_cpu_us_per_op: loadgen -C's 18th field
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop "$pid"
    perf script -i "$tmp/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null |
        awk -v cpu="$cpu_per_echo" -f scripts/cpu-profile.awk
}

echo "Server CPU per echo, by part: % of the server's samples (µs per echo); $conns busy connections"
files=()
for name in "$@"; do
    row=$(resolve_row "$name")
    profile "$row" >"$tmp/$row.parts"
    files+=("$tmp/$row.parts")
done
awk -F'\t' '
    FNR == 1 { rows[++n] = FILENAME; sub(/.*\//, "", rows[n]); sub(/\.parts$/, "", rows[n]) }
    { cell[n, $1] = sprintf("%4.1f %% (%.2f µs)", $2, $3); if (!($1 in seen)) { seen[$1] = 1; order[++parts] = $1 } }
    END {
        printf "%-14s", "part"; for (i = 1; i <= n; i++) printf "  %22s", rows[i]; printf "\n"
        for (p = 1; p <= parts; p++) {
            printf "%-14s", order[p]
            for (i = 1; i <= n; i++) printf "  %22s", ((i, order[p]) in cell) ? cell[i, order[p]] : "-"
            printf "\n"
        }
    }' "${files[@]}"
