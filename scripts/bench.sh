#!/usr/bin/env bash
# scripts/bench.sh [-q] [-r ROUNDS] [-l PLACEMENTS] [-c CELLS] [-o DIR] [SERVER...]:
# the benchmark behind `make bench` (`make bench QUICK=1` is -q).
#
# One load generator (scripts/loadgen) against every server, side by side in
# one run. A SERVER is a chapter directory (04-thread-per-conn), a chapter in
# one of its modes (06-epoll+et, 07-socketserver-clone+forking,
# 08-prethreaded-pool+prefork; 08-prethreaded-pool+t100 is 08's pool of 100
# threads, -t 100, and 09-epoll-workers+w100 09's of 100 workers, -w 100),
# or a reference server of scripts/reference/ (its README.md): libevent and
# libuv (event loops like 06, written as those libraries are meant to be
# used), python-threading and python-forking (Python's ThreadingTCPServer and
# ForkingTCPServer with a StreamRequestHandler, the source articles' design).
#
# Cells (-c, comma-separated; default all), a 64-byte ping-pong on each
# connection:
#   busy-N     N busy connections, N = 1, 10, 100, 1000, 10000, where the
#              design can hold them (not_run says why not, in the table)
#   idle-900   900 idle connections held open, plus 10 busy ones
#   churn      short connections: connect, greeting, quit, close (UNP ch. 30)
#   mix        100 busy connections, a tenth of their lines "sleep 10" (slow
#              work, 10 ms), the rest echoes: 09's pool against 06 (which
#              sleeps in its loop) and 04 (a thread per client) only
# Placements (-l, comma-separated; default pinned):
#   pinned    server on CPU 0, loadgen on CPU 1 (taskset): the course's standard
#   unpinned  wherever the scheduler puts them, as a user runs a server
# Each cell runs ROUNDS times (default 3), rounds interleaved so that a slow
# moment of the machine hits every server alike; medians are kept.
#
# Per server and cell: messages per second, p50 and p99 round trip, server
# CPU per echo (the headline on a two-CPU machine, where loadgen is as busy
# as the server), peak server memory (VmHWM), and loadgen's own CPU (near
# 100 %, a row shows loadgen's limit, not the server's); for churn,
# connections per second and server CPU per connection. The machine's floor:
# sockperf's TCP ping-pong, server and client pinned like the rest, run just
# before each one-connection run, which is reported as a multiple of it.
# Then, once per server, its system calls per echo (perf stat on a separate
# run, 100 connections).
#
# Where the results go. Without SERVER arguments and without -q (`make
# bench`), results/: bench.csv (the medians, a row per server and cell,
# those not run saying why), bench.md (the tables the README quotes) and
# bench.svg (CPU per echo and p99 against connections, a line per server).
# They are committed: the README quotes that run, and `git diff results/`
# compares another machine's with it. Anything else (-q, named servers)
# writes the same files to out/bench/, which git ignores; -o DIR picks
# another place. Beside them: runs.csv (every run's line: the medians and the
# per-round ratios come from it), floor.csv, syscalls.csv, errors.log.
#
# `make bench` then adds "07 against Python's socketserver": 07 and Python
# unpinned at busy-100 and churn, beside the pinned figures, with the ratios
# chapter 07's lesson quotes. Absolute figures belong to the machine;
# compare servers within one run. PYTHON=... picks the Python (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
all_cells=(busy-1 busy-10 busy-100 busy-1000 busy-10000 idle-900 churn mix)
rounds=3 placements=(pinned) cells=("${all_cells[@]}") quick='' out='' cells_given=''
usage() {
    echo "usage: scripts/bench.sh [-q] [-r rounds] [-l pinned,unpinned] [-c cell,...] [-o dir] [server...]" >&2
    exit 2
}
while getopts qr:l:c:o: option; do
    case $option in
    q) quick=1 ;;
    r) rounds=$OPTARG ;;
    l) IFS=, read -ra placements <<<"$OPTARG" ;;
    c) IFS=, read -ra cells <<<"$OPTARG" && cells_given=1 ;;
    o) out=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
for placement in "${placements[@]}"; do [[ $placement == pinned || $placement == unpinned ]] || usage; done
for cell in "${cells[@]}"; do [[ " ${all_cells[*]} " == *" $cell "* ]] || usage; done
if [[ -n $quick ]]; then
    # Under two minutes: one round, four cells, shorter runs.
    ((rounds != 3)) || rounds=1
    [[ -n $cells_given ]] || cells=(busy-1 busy-100 busy-1000 churn)
fi
[[ -n $out ]] || if (($# == 0)) && [[ -z $quick ]]; then out=results; else out=out/bench; fi
raw=$out
mkdir -p "$out"
source scripts/common.sh
ulimit -n "$(ulimit -Hn)" # 10,000 connections need more than the usual 1024 descriptors

# ============================== The servers ==================================

# server_command SERVER: the command that starts SERVER on a free port, in the
# array cmd. It must exec the server itself (taskset and python3 do), because
# loadgen -P reads the CPU time of that very pid and of its children. -m
# 20000: above the biggest cell, so no server refuses a connection.
# --max-children 20000: a forking server blocks in waitpid() once it has that
# many children (Python's default is 40), and every connection of a cell is
# greeted before the echoes start.
server_command() {
    local common=(-p 0 -q -m 20000) python_echo=scripts/reference/socketserver_echo.py
    case $1 in
    python-threading) cmd=("$python" "$python_echo" --threading "${common[@]}") ;;
    python-forking) cmd=("$python" "$python_echo" --forking --max-children 20000 "${common[@]}") ;;
    libevent | libuv) cmd=("scripts/reference/$1_echo" "${common[@]}") ;;
    *+et) cmd=("${1%+et}/server" "${common[@]}" -e) ;;
    *+forking) cmd=("${1%+forking}/server" "${common[@]}" --forking --max-children 20000) ;;
    *+prefork) cmd=("${1%+prefork}/server" "${common[@]}" -f) ;;
    *+t[0-9]*) cmd=("${1%+t*}/server" "${common[@]}" -t "${1##*+t}") ;;
    *+w[0-9]*) cmd=("${1%+w*}/server" "${common[@]}" -w "${1##*+w}") ;;
    *) cmd=("$1/server" "${common[@]}") ;;
    esac
}

# available SERVER: its program is here (built, or python3 installed).
available() {
    server_command "$1"
    if [[ ${cmd[0]} == "$python" ]]; then command -v "$python" >/dev/null; else [[ -x ${cmd[0]} ]]; fi
}

# not_run SERVER CELL: why SERVER cannot take CELL (printed), or fails when
# it can. Each reason was seen on this course's machine.
not_run() {
    case $1,$2 in
    01-*,busy-1 | 01-*,churn) return 1 ;;
    01-*) echo "serves one client at a time" ;;
    02-*,busy-10000 | 03-*,busy-10000) echo "FD_SETSIZE: select() watches descriptors below 1024 only" ;;
    07-*,busy-10000) echo "two descriptors per client (the socket, and rfile's dup as in Python): 20,000 pass ulimit -n" ;;
    python-threading,busy-10000) echo "the thread cap: at 10,000 threads the GIL's hand-overs collapse (a trial echoed 164 msg/s, then timed out)" ;;
    python-forking,busy-10000) echo "the process cap: 10,000 interpreters, each copying the pages it touches (05's 10,000 C processes hold 10 GiB)" ;;
    08-*,busy-* | 08-*,idle-900) pool_too_small "$@" ;;
    04-thread-per-conn,mix | 06-epoll,mix | 09-*,mix | 10-io-uring,mix) return 1 ;;
    *,mix) echo "the sleep mix measures the ways to keep a slow handler from stalling others (06 stalls, 04's threads, 09's pool, 10's timers) only" ;;
    *) return 1 ;;
    esac
}

# pool_too_small SERVER CELL: 08's pool (16 workers, or N for +tN) serves
# that many connections at once; a cell that holds more never ends (prints
# why), or fails when the pool is big enough.
pool_too_small() {
    local size=16 conns=${2#busy-}
    [[ $1 != *+t* ]] || size=${1##*+t}
    [[ $2 != idle-900 ]] || conns=910
    ((conns > size)) || return 1
    echo "a pool of $size serves $size connections at once; the others wait in the listen queue for one that never leaves"
}

# ============================== One run ======================================

# loadgen_args CELL: what loadgen runs for this cell: 60,000 messages (-q:
# 20,000), at least 10 per connection; half as many on one connection, which
# is slower and costs more CPU per echo; churn, 3,000 connections (1,000);
# mix, 10,000 lines (5,000), a tenth of them 10 ms of sleep: 06, which
# sleeps them one after another, takes 10 s (5 s).
# Enough that the server's CPU time, which /proc counts in clock ticks of
# 10 ms, is known to a few percent.
loadgen_args() {
    local total=$((quick ? 20000 : 60000)) n
    case $1 in
    busy-1) echo "-c 1 -n $((total / 2))" ;;
    busy-*) n=${1#busy-} && echo "-c $n -n $((total / n > 10 ? total / n : 10))" ;;
    idle-900) echo "-i 900 -c 10 -n $((total / 10))" ;;
    churn) echo "-r -c 4 -n $((quick ? 1000 : 3000))" ;;
    mix) echo "-c 100 -n $((quick ? 50 : 100)) -S 10" ;; # 06 sleeps 10 s of it (5 s with -q)
    esac
}

# pinning PLACEMENT: on_cpu0 and on_cpu1, the taskset prefixes (or none).
pinning() {
    on_cpu0=() on_cpu1=()
    if [[ $1 == pinned ]]; then on_cpu0=(taskset -c 0) on_cpu1=(taskset -c 1); fi
}

# run_cell SERVER PLACEMENT CELL [FLOOR]: one run; appends
# "server,placement,cell,<loadgen's CSV line>,FLOOR" to runs.csv.
run_cell() {
    local server=$1 placement=$2 cell=$3 floor=${4:-} row
    pinning "$placement"
    server_command "$server"
    # shellcheck disable=SC2046 # loadgen_args is a list of words
    if ! launch "${on_cpu0[@]}" "${cmd[@]}" 2>>"$raw/errors.log"; then
        row="FAILED"
    elif ! row=$("${on_cpu1[@]}" scripts/loadgen -p "$port" $(loadgen_args "$cell") \
        -t 90 -P "$pid" -C 2>>"$raw/errors.log"); then
        echo "$server $placement $cell: loadgen failed (above)" >>"$raw/errors.log"
        row="FAILED"
    fi
    stop "$pid"
    [[ $row != FAILED ]] || row="FAILED,,,,,,,,,,,,,,,,,,,,"
    echo "$server,$placement,$cell,$row,$floor" >>"$raw/runs.csv"
}

# progress DONE TOTAL TEXT: one line that rewrites itself on a terminal; a
# line per cell and round elsewhere (a log).
progress() {
    local line
    line=$(printf '[%3d/%d, %d s] %s' "$1" "$2" "$SECONDS" "$3")
    if [[ -t 2 ]]; then printf '\r%-100s' "$line" >&2; else echo "$line" >&2; fi
}

# run_section TITLE: every server in `servers` at every cell in `cells` and
# placement in `placements`, ROUNDS times, rounds interleaved.
run_section() {
    local round cell placement server floor done=0 total=0
    echo
    echo "== $1: ${servers[*]}; ${cells[*]}; ${placements[*]}; $rounds round(s)"
    for cell in "${cells[@]}"; do
        for server in "${servers[@]}"; do not_run "$server" "$cell" >/dev/null || total=$((total + 1)); done
    done
    total=$((total * rounds * ${#placements[@]}))
    for ((round = 1; round <= rounds; round++)); do
        floor=
        for cell in "${cells[@]}"; do
            for placement in "${placements[@]}"; do
                for server in "${servers[@]}"; do
                    not_run "$server" "$cell" >/dev/null && continue
                    progress "$done" "$total" "round $round of $rounds: $cell $placement $server"
                    if [[ $cell != busy-1 || $placement != pinned ]]; then
                        floor=
                    elif [[ -z $quick || -z $floor ]]; then
                        floor=$(floor_once) # -q: once per round (each takes 3 s)
                    fi
                    run_cell "$server" "$placement" "$cell" "$floor"
                    done=$((done + 1))
                done
            done
        done
    done
    progress "$done" "$total" "done"
    [[ ! -t 2 ]] || echo >&2
}

# ================== System calls per echo, and the floor =====================

# count_syscalls SERVER CELL: its system calls per echo (per connection for
# churn), and its epoll_ctl calls, from `perf stat` on the server (threads
# and children included: those forked later inherit the counters, a pool's
# are named with -p) while loadgen runs the cell; appends
# "server,cell,calls,epoll_ctl" to syscalls.csv, "n/a" when perf cannot
# count here. A separate run: counting costs time. Each connection's own
# calls are spread over its echoes (600 at 100 busy, 60 at 1,000). 01
# serves one client at a time: its echoes, counted once (as 100 busy), come
# from one connection.
count_syscalls() {
    local server=$1 cell=$2 perf_pid args calls
    args=$(loadgen_args "$cell")
    if not_run "$server" "$cell" >/dev/null; then
        [[ $server == 01-* && $cell == busy-100 ]] || return 0
        args=$(loadgen_args busy-1)
    fi
    pinning pinned
    server_command "$server"
    launch "${on_cpu0[@]}" "${cmd[@]}" 2>>"$raw/errors.log" || return 0
    perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_ctl -x, -o "$tmp/perf" \
        -p "$(process_family "$pid" | paste -sd,)" 2>>"$raw/errors.log" &
    perf_pid=$!
    sleep 0.5 # perf attaches to every thread first
    # shellcheck disable=SC2086 # loadgen_args is a list of words
    "${on_cpu1[@]}" scripts/loadgen -p "$port" $args -t 60 -C >"$tmp/loadgen.csv" 2>>"$raw/errors.log" || true
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    stop "$pid"
    # Operations: loadgen's CSV line (mode,conns,idle,msgs,...,opened,...):
    # conns x msgs echoes, or the connections opened for churn.
    calls=$(awk -F, -v csv="$(cat "$tmp/loadgen.csv")" '
        BEGIN { split(csv, l, ","); m = l[1] == "churn" ? l[7] : l[2] * l[4] }
        $3 == "raw_syscalls:sys_enter" { a = $1 } $3 == "syscalls:sys_enter_epoll_ctl" { b = $1 }
        END { if (a ~ /^[0-9]+$/ && m > 0) printf "%.2f,%.2f", a / m, b / m; else printf "n/a,n/a" }' "$tmp/perf" 2>/dev/null || echo "n/a,n/a")
    echo "$server,$cell,$calls" >>"$out/syscalls.csv"
}

# start_floor_server: sockperf's server, on CPU 0 like every server here,
# on a free port (the kernel's pick), for floor_once; idle in between.
start_floor_server() {
    command -v sockperf >/dev/null || { echo "sockperf is missing: no floor" >&2; return 0; }
    floor_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    taskset -c 0 sockperf server --tcp -i 127.0.0.1 -p "$floor_port" >"$tmp/sockperf-server" 2>&1 &
    launched+=($!)
    wait_for "$tmp/sockperf-server" 'to block on socket' || floor_port=
}

# floor_once: the machine's floor right now: sockperf's TCP ping-pong of 64
# bytes, its client on CPU 1, for a second or two; prints the round trip's
# p50 in µs (twice sockperf's one-way figure) and appends "p50,p99" to
# floor.csv. Run just before each one-connection run: this machine has
# phases of some seconds in which every round trip is a third longer, so
# each run is compared with the floor of its own moment.
floor_once() {
    [[ -n ${floor_port:-} ]] || return 0
    taskset -c 1 sockperf ping-pong --tcp -i 127.0.0.1 -p "$floor_port" -m 64 -t "$((quick ? 1 : 2))" 2>&1 |
        sed 's/\x1b\[[0-9;]*m//g' | awk '/percentile 50.000 =/ { p50 = $NF } /percentile 99.000 =/ { p99 = $NF }
            END { if (p50 != "") printf "%.1f,%.1f\n", 2 * p50, 2 * p99 }' | tee -a "$out/floor.csv" | cut -d, -f1
}

# section_07: 07 and Python's socketserver unpinned, at busy-100 and churn:
# with the pinned runs, the figures chapter 07's lesson quotes.
section_07() {
    local servers=(07-socketserver-clone 07-socketserver-clone+forking python-threading python-forking)
    local placements=(unpinned) cells=(busy-100 churn)
    run_section "07 against Python's socketserver ($("$python" --version 2>&1)), unpinned"
}

# ============================== Main =========================================

source scripts/bench-report.sh

echo "server,placement,cell,mode,conns,idle,msgs,size,inflight,opened,greeted,failed,seconds,rate,p50_us,p99_us,p999_us,max_us,connect_p50_us,connect_p99_us,server_cpu_us_per_op,server_rss_kib,server_peak_kib,loadgen_cpu_pct,floor_rtt_us" >"$raw/runs.csv"
: >"$raw/errors.log"
echo "server,cell,syscalls_per_op,epoll_ctl_per_op" >"$out/syscalls.csv"
echo "rtt_p50_us,rtt_p99_us" >"$out/floor.csv"
machine="$(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)"
echo "machine: $machine; load average $(cut -d' ' -f1 /proc/loadavg) (anything else running skews the figures)"
if (($# > 0)); then
    servers=("$@")
else
    servers=(01-blocking 02-select-multiport 03-select-rw-split 04-thread-per-conn 05-fork-per-conn
        06-epoll 06-epoll+et 07-socketserver-clone 07-socketserver-clone+forking
        08-prethreaded-pool 08-prethreaded-pool+prefork 09-epoll-workers 10-io-uring
        libevent libuv python-threading python-forking)
fi
for server in "${servers[@]}"; do
    available "$server" || { echo "$server is missing: make (and make -C scripts/reference, python3)" >&2; exit 1; }
done
start_floor_server
run_section "Every server, $(IFS=, && echo "${placements[*]}")"
echo "== system calls per echo (100 and 1,000 busy) and per short connection"
for server in "${servers[@]}"; do
    for cell in busy-100 busy-1000 churn; do
        progress 0 0 "system calls: $server, $(cell_label "$cell")"
        count_syscalls "$server" "$cell"
    done
done
[[ ! -t 2 ]] || echo >&2
(($# > 0)) || [[ -n $quick ]] || section_07
summarize
write_report >"$out/bench.md"
cat "$out/bench.md"
plot
[[ ! -s $raw/errors.log ]] || { echo; echo "Some runs failed; see $raw/errors.log:"; head -5 "$raw/errors.log"; }
echo
echo "results: $out/bench.md, $out/bench.csv, $out/bench.svg; every run: $out/runs.csv ($SECONDS s)"
