# shellcheck shell=bash
# scripts/common.sh: what the scripts here share; each one sources it.
# A scratch directory, servers started in the background with `launch` and
# stopped by pid when the script ends, and the wait for a ready line; and,
# from scripts/rows.sh, the rows of tests/expectations.txt.

source scripts/rows.sh

tmp=$(mktemp -d)
launched=() # pids of everything started, stopped when the script exits

stop_launched() {
    local pid
    for pid in "${launched[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap stop_launched EXIT

# poll_until COMMAND...: until COMMAND succeeds, checked every 20 ms; fails
# after 10 s.
poll_until() {
    for _ in {1..500}; do "$@" && return 0; sleep 0.02; done
    return 1
}

# has_lines FILE REGEX COUNT: FILE has at least COUNT lines matching REGEX.
has_lines() {
    (($(grep -c -- "$2" "$1" 2>/dev/null || true) >= $3))
}

# wait_for FILE REGEX [COUNT]: until FILE has COUNT lines (default 1)
# matching REGEX, at most 10 s.
wait_for() {
    poll_until has_lines "$1" "$2" "${3:-1}"
}

# only_stdio COMMAND...: run COMMAND with stdin, stdout and stderr and no
# other descriptor open, so that its descriptors are numbered as when it is
# started from a terminal (a caller such as bats leaves some open).
only_stdio() {
    local path fd
    for path in /proc/self/fd/*; do
        fd=${path##*/}
        if ((fd > 2)) && [[ -e $path ]]; then exec {fd}>&-; fi
    done
    exec "$@"
}

# ready_or_gone: the server launch started has printed its ready line, or
# has exited already (it never will, then: no use waiting).
ready_or_gone() {
    has_lines "$tmp/ready" '^listening' 1 || ! kill -0 "$pid" 2>/dev/null
}

# launch COMMAND...: run a server COMMAND in the background, its stdout in
# $tmp/ready and its stderr in $tmp/server.log, and wait for its
# "listening on" line. Sets pid (COMMAND's) and port (its first listener).
launch() {
    : >"$tmp/ready" # emptied here, not by the background redirection, which may come late
    only_stdio "$@" >"$tmp/ready" 2>>"$tmp/server.log" &
    pid=$!
    launched+=("$pid")
    poll_until ready_or_gone || true
    has_lines "$tmp/ready" '^listening' 1 ||
        { echo "$*: no ready line; $(tail -3 "$tmp/server.log")" >&2; return 1; }
    # shellcheck disable=SC2034 # used by the scripts that source this file
    port=$(sed -n '1s/.*://p' "$tmp/ready")
}

# process_family PID: PID and its child processes (a server and its
# workers, or its clients' processes), a pid a line.
process_family() {
    echo "$1"
    ps -o pid= --ppid "$1" | tr -d ' ' || true # (ps fails when there is none)
}

# stop PID: SIGTERM (the servers exit 0 on it), then reap it.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

