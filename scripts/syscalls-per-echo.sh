#!/usr/bin/env bash
# scripts/syscalls-per-echo.sh CHAPTER...: system calls each server makes per
# echoed message under load, from `strace -c -f`, side by side.
#
# Each server runs under strace from its start; scripts/loadgen drives 100
# busy connections x 1000 messages of 64 B; then the server is stopped and
# strace's count is divided by the 100,000 messages. Start-up and the 100
# connects are included (about 10 calls per connection), so the figure is a
# slight overestimate of the steady state.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# > 0)) || { echo "usage: scripts/syscalls-per-echo.sh CHAPTER..." >&2; exit 2; }
conns=100 msgs=1000
source scripts/common.sh

printf '%-22s %12s %12s %12s   %s\n' chapter calls per-echo epoll_ctl "the calls that matter, per echo"
for chapter in "$@"; do
    dir=${chapter%%+*} args=()
    [[ $chapter != *+et ]] || args=(-e)
    launch strace -c -f -o "$tmp/count" "$dir/server" -p 0 -q -m 5000 "${args[@]}"
    scripts/loadgen -p "$port" -c $conns -n $msgs -t 120 >/dev/null
    kill -TERM "$(ps -o pid= --ppid "$pid")" # the server: strace started it as its child
    wait "$pid" || true
    # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
    awk -v m=$((conns * msgs)) -v chapter="$chapter" '
        NF >= 5 && $4 ~ /^[0-9]+$/ { calls[$NF] = $4 }
        END {
            for (s in calls) if (s != "total" && calls[s] > max) { max = calls[s]; most = s } # shown even when rare (10)
            for (s in calls) if (s != "total" && (calls[s] / m >= 0.05 || s == most)) top = top sprintf("%s %.2f  ", s, calls[s] / m)
            printf "%-22s %12d %12.2f %12d   %s\n", chapter, calls["total"], calls["total"] / m, calls["epoll_ctl"], top
        }' "$tmp/count"
done
