#!/usr/bin/env bash
# scripts/client-cost.sh [-n CLIENTS] CHAPTER...: what one idle client costs
# each chapter's server, measured side by side in one run.
#
# For each chapter: start its server, read its memory, connect CLIENTS idle
# clients (scripts/probe -c: all greeted, then silent), read again, and
# divide the difference by CLIENTS:
#   user KiB     proportional set size (PSS) of the server and its child
#                processes, from /proc/PID/smaps_rollup: resident memory,
#                with pages shared between processes split among them
#   virtual KiB  address space reserved (VmSize), children included
#   kernel KiB   KernelStack + PageTables from /proc/meminfo: each thread or
#                process has a kernel stack and each process page tables
#                (machine-wide, so keep the machine otherwise quiet)
# Socket buffers are left out: every design pays them alike.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=100
if [[ ${1:-} == -n ]]; then clients=$2; shift 2; fi
(($# > 0)) || { echo "usage: scripts/client-cost.sh [-n CLIENTS] CHAPTER..." >&2; exit 2; }
source scripts/common.sh

# kib FILE FIELD: the number after "FIELD:" in a /proc file, in KiB.
kib() {
    awk -v f="$2:" '$1 == f { print $2; exit }' "$1" 2>/dev/null || echo 0
}

# snapshot PID: "pss virtual kernel" for the server PID and its children.
snapshot() {
    local pid pss=0 virtual=0
    for pid in $(process_family "$1"); do
        pss=$((pss + $(kib "/proc/$pid/smaps_rollup" Pss)))
        virtual=$((virtual + $(kib "/proc/$pid/status" VmSize)))
    done
    echo "$pss $virtual $(($(kib /proc/meminfo KernelStack) + $(kib /proc/meminfo PageTables)))"
}

# measure CHAPTER: print "user virtual kernel" KiB per idle client.
measure() {
    local chapter=$1 holder before after
    launch "$chapter/server" -p 0 -q
    before=$(snapshot "$pid")
    mkfifo "$tmp/hold.in"
    scripts/probe -p "$port" -c "$clients" -t 20 <"$tmp/hold.in" >"$tmp/hold.out" &
    holder=$!
    launched+=("$holder")
    exec {keep}>"$tmp/hold.in" # the probe holds its connections until this closes
    wait_for "$tmp/hold.out" '^answered' || true
    grep -q "^answered $clients of $clients" "$tmp/hold.out" ||
        { echo "$chapter: not every client was greeted: $(tail -1 "$tmp/hold.out")" >&2; exit 1; }
    after=$(snapshot "$pid")
    exec {keep}>&-
    wait "$holder" || true
    stop "$pid"
    rm -f "$tmp/hold.in"
    awk -v n="$clients" -v a="$before" -v b="$after" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        printf "%.1f %.1f %.1f\n", (y[1] - x[1]) / n, (y[2] - x[2]) / n, (y[3] - x[3]) / n }'
}

printf 'Memory per idle client, %d clients held open (KiB per client):\n' "$clients"
printf '%-22s %10s %12s %10s\n' chapter user virtual kernel
for chapter in "$@"; do
    read -r user virtual kernel < <(measure "$chapter")
    printf '%-22s %10s %12s %10s\n' "$chapter" "$user" "$virtual" "$kernel"
done
