#!/usr/bin/env bash
# scripts/strace-compare.sh CHAPTER...: the same client scenario against each
# chapter's server running under `strace -f`, then the system calls each
# server made per client session, side by side.
#
# The scenario: SESSIONS clients one after the other, each one sending
# three lines and "quit". Calls count from the first accept (start-up is the
# same everywhere) to the SIGTERM that ends the server. Each full trace is
# kept in out/strace/CHAPTER.trace; with a single chapter, one session's
# calls are printed as they happened, and then how the server stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# > 0)) || { echo "usage: scripts/strace-compare.sh CHAPTER..." >&2; exit 2; }
SESSIONS=4
mkdir -p out/strace
source scripts/common.sh

# trace CHAPTER: run the scenario, leave the trace in out/strace/CHAPTER.trace.
trace() {
    local chapter=$1 i
    launch strace -f -qq -o "out/strace/$chapter.trace" "$chapter/server" -p 0 -q
    for ((i = 0; i < SESSIONS; i++)); do
        printf 'one\ntwo\nthree\nquit\n' | timeout 10 "$chapter/client" -p "$port" >/dev/null
    done
    kill -TERM "$(ps -o pid= --ppid "$pid")" # the server: strace started it as its child
    wait "$pid" || true
}

# calls CHAPTER: "name count" for each system call from the first accept on.
calls() {
    awk '/ accept/ { on = 1 }
         /--- SIGTERM/ { on = 0 }
         on && $2 ~ /^[a-z_0-9]+\(/ { sub(/\(.*/, "", $2); n[$2]++ }
         END { for (c in n) print c, n[c] }' "out/strace/$1.trace"
}

for chapter in "$@"; do
    trace "$chapter"
    calls "$chapter" >"$tmp/$chapter.calls"
done

echo "System calls per client session (greeting, 3 echoes, quit):"
printf '%-16s' "call"
printf '%22s' "$@"
echo
cut -d' ' -f1 "$tmp"/*.calls | sort -u | while read -r call; do
    printf '%-16s' "$call"
    for chapter in "$@"; do
        awk -v c="$call" -v s="$SESSIONS" '$1 == c { n = $2 } END { printf "%22s", n ? sprintf("%.1f", n / s) : "-" }' "$tmp/$chapter.calls"
    done
    echo
done
printf '%-16s' "total"
for chapter in "$@"; do
    awk -v s="$SESSIONS" '{ n += $2 } END { printf "%22.1f", n / s }' "$tmp/$chapter.calls"
done
echo

if (($# == 1)); then
    echo
    echo "One session, as strace saw it (out/strace/$1.trace has everything):"
    awk '/ accept/ { n++ } n == 1' "out/strace/$1.trace" |
        sed -n '1,/close(/p' | cut -c1-110
    echo
    echo "How it stopped, from the SIGTERM to the exit:"
    awk '/--- SIGTERM/ { on = 1 } on' "out/strace/$1.trace" | cut -c1-110
fi
