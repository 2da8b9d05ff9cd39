#!/usr/bin/env bash
# scripts/bench.sh [-r ROUNDS] [-l PLACEMENTS] [-c CELLS] [SERVER...]: the
# benchmark behind `make bench`.
#
# One load generator (scripts/loadgen) against every server, side by side in
# one run. A SERVER is a chapter directory (04-thread-per-conn), a chapter in
# one of its modes (06-epoll+et, 07-socketserver-clone+forking), or a
# reference program from scripts/reference/ (python-threading and
# python-forking: Python's ThreadingTCPServer and ForkingTCPServer serving the
# same protocol with a StreamRequestHandler, the source articles' design).
#
# Placements (-l, comma-separated; default pinned):
#   pinned    server on CPU 0, loadgen on CPU 1 (taskset): the two never fight
#             over a core. The course's standard.
#   unpinned  no taskset for either: wherever the scheduler puts them, as a
#             user runs a server. A program whose threads hand work to each
#             other (Python's GIL) pays for every hand-over between CPUs.
# Cells (-c, comma-separated; default all), each a 64-byte ping-pong per
# connection:
#   busy-N     N busy connections, N = 1, 10, 100, 1000
#   idle-900   900 idle connections held open, plus 10 busy ones
#   churn      short connections: connect, greeting, quit, close
# Each cell runs ROUNDS times (default 3), rounds interleaved so that a slow
# moment of the machine hits every server alike; the median is kept.
#
# Without SERVER arguments, `make bench` runs two sections:
#   1. the chapters 01-06 at every cell, pinned;
#   2. "07 against Python's socketserver": 07 threading and forking, Python's
#      ThreadingTCPServer and ForkingTCPServer, at busy-100 and churn, in both
#      placements, with the ratios chapter 07's lesson quotes.
#
# Writes out/bench/results.csv (every run), out/bench/summary.csv (medians),
# out/bench/throughput.png (gnuplot, when installed), and prints the tables
# and the ratios the lessons quote. Absolute figures depend on the machine;
# compare servers within one run. -l and -c apply to SERVER arguments; the
# default sections fix their own. PYTHON=... picks the Python (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
all_cells=(busy-1 busy-10 busy-100 busy-1000 idle-900 churn)
rounds=3 placements=(pinned) cells=("${all_cells[@]}")
usage() {
    echo "usage: scripts/bench.sh [-r rounds] [-l pinned,unpinned] [-c cell,...] [server...]" >&2
    exit 2
}
while getopts r:l:c: option; do
    case $option in
    r) rounds=$OPTARG ;;
    l) IFS=, read -ra placements <<<"$OPTARG" ;;
    c) IFS=, read -ra cells <<<"$OPTARG" ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
for placement in "${placements[@]}"; do [[ $placement == pinned || $placement == unpinned ]] || usage; done
for cell in "${cells[@]}"; do [[ " ${all_cells[*]} " == *" $cell "* ]] || usage; done
out=out/bench
mkdir -p "$out"
source scripts/common.sh
ulimit -n "$(ulimit -Hn)" # 1000 connections need more than the usual 1024 descriptors

# ============================== The servers ==================================

# server_command SERVER: the command that starts SERVER on a free port, in the
# array cmd. It must exec the server itself (taskset and python3 do), because
# loadgen -P reads the CPU time of that very pid and of its children. -m 5000:
# above the biggest cell's 1,010 connections, so no server refuses one.
# --max-children 5000: a forking server blocks in waitpid() once it has that
# many children (Python's default is 40), and busy-100 holds 100 clients open,
# each of which must be greeted before the echoes start.
server_command() {
    local common=(-p 0 -q -m 5000) python_echo=scripts/reference/socketserver_echo.py
    case $1 in
    python-threading) cmd=("$python" "$python_echo" --threading "${common[@]}") ;;
    python-forking) cmd=("$python" "$python_echo" --forking --max-children 5000 "${common[@]}") ;;
    *+et) cmd=("${1%+et}/server" "${common[@]}" -e) ;;
    *+forking) cmd=("${1%+forking}/server" "${common[@]}" --forking --max-children 5000) ;;
    *) cmd=("$1/server" "${common[@]}") ;;
    esac
}

# available SERVER: its program is here (built, or python3 installed).
available() {
    server_command "$1"
    if [[ ${cmd[0]} == "$python" ]]; then command -v "$python" >/dev/null; else [[ -x ${cmd[0]} ]]; fi
}

# applies SERVER CELL: 01 serves one client at a time, so only one-connection cells.
applies() {
    [[ $1 != 01-* || $2 == busy-1 || $2 == churn ]]
}

# ============================== One run ======================================

# loadgen_args CELL: what loadgen runs for this cell (about 50,000 messages).
loadgen_args() {
    case $1 in
    busy-*) local n=${1#busy-}; echo "-c $n -n $((50000 / n > 20 ? 50000 / n : 20))" ;;
    idle-900) echo "-i 900 -c 10 -n 5000" ;;
    churn) echo "-r -c 4 -n 3000" ;;
    esac
}

# run_cell SERVER PLACEMENT CELL: one run; appends
# "server,placement,cell,<loadgen CSV>" to results.csv.
run_cell() {
    local server=$1 placement=$2 cell=$3 on_cpu0=() on_cpu1=() row
    if [[ $placement == pinned ]]; then on_cpu0=(taskset -c 0) on_cpu1=(taskset -c 1); fi
    server_command "$server"
    # shellcheck disable=SC2046 # loadgen_args is a list of words
    if ! launch "${on_cpu0[@]}" "${cmd[@]}" 2>>"$out/errors.log"; then
        row="FAILED"
    elif ! row=$("${on_cpu1[@]}" scripts/loadgen -p "$port" $(loadgen_args "$cell") \
        -t 60 -P "$pid" -C 2>>"$out/errors.log"); then
        echo "$server $placement $cell: loadgen failed (above)" >>"$out/errors.log"
        row="FAILED"
    fi
    stop "$pid"
    echo "$server,$placement,$cell,$row" >>"$out/results.csv"
}

# run_section TITLE: every server in `servers` at every cell in `cells` and
# placement in `placements`, ROUNDS times, rounds interleaved.
run_section() {
    local round cell placement server
    echo
    echo "== $1: ${servers[*]}; ${cells[*]}; ${placements[*]}; $rounds rounds"
    for ((round = 1; round <= rounds; round++)); do
        for cell in "${cells[@]}"; do
            for placement in "${placements[@]}"; do
                for server in "${servers[@]}"; do
                    applies "$server" "$cell" && run_cell "$server" "$placement" "$cell"
                done
            done
        done
        echo "round $round of $rounds done"
    done
}

# ============================== Medians and tables ===========================

# summarize: the median of each server, placement and cell into summary.csv:
# rate, p50, p99, server CPU per op.
summarize() {
    awk -F, 'NR > 1 && $4 != "FAILED" {
            key = $1 "," $2 "," $3; n[key]++
            rate[key, n[key]] = $14; p50[key, n[key]] = $15; p99[key, n[key]] = $16; cpu[key, n[key]] = $21
        }
        function median(a, key, count,    i, j, v, t) {
            for (i = 1; i <= count; i++) v[i] = a[key, i]
            for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
            return v[int((count + 1) / 2)]
        }
        END {
            for (key in n) print key "," median(rate, key, n[key]) "," median(p50, key, n[key]) "," median(p99, key, n[key]) "," median(cpu, key, n[key])
        }' "$out/results.csv" | sort >"$tmp/medians"
    # The header goes first, outside the sort: sorted, it would follow the rows.
    { echo "server,placement,cell,rate,p50_us,p99_us,server_cpu_us_per_op"; cat "$tmp/medians"; } >"$out/summary.csv"
}

# value SERVER PLACEMENT CELL COLUMN: one median from summary.csv (4 rate, 7 cpu).
value() {
    awk -F, -v s="$1" -v l="$2" -v k="$3" -v col="$4" '$1 == s && $2 == l && $3 == k { print $col }' "$out/summary.csv"
}

# div A B: A / B to two decimals, or n/a when either is missing.
div() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a && b) printf "%.2f", a / b; else printf "n/a" }'
}

# ratio A B PLACEMENT CELL COLUMN: A's median over B's.
ratio() {
    div "$(value "$1" "$3" "$4" "$5")" "$(value "$2" "$3" "$4" "$5")"
}

# print_table: a row per server (and placement, when there are two), a
# column per cell: "rate (CPU µs per op)".
print_table() {
    local server placement cell rate label
    echo
    echo "Messages (churn: connections) per second, median of $rounds; server CPU µs per message (churn: per connection) in brackets:"
    printf '%-40s' server
    printf '%16s' "${cells[@]}"
    echo
    for server in "${servers[@]}"; do
        for placement in "${placements[@]}"; do
            label=$server
            ((${#placements[@]} == 1)) || label="$server, $placement"
            printf '%-40s' "$label"
            for cell in "${cells[@]}"; do
                rate=$(value "$server" "$placement" "$cell" 4)
                printf '%16s' "${rate:+$(printf '%.0f (%s)' "$rate" "$(value "$server" "$placement" "$cell" 7)")}"
            done
            echo
        done
    done
}

# has SERVER...: every one of them is in this section.
has() {
    local server
    for server in "$@"; do [[ " ${servers[*]} " == *" $server "* ]] || return 1; done
}

# placed PLACEMENT: this section runs in that placement.
placed() {
    [[ " ${placements[*]} " == *" $1 "* ]]
}

# The ratios the lessons quote, for the servers and placements of this section.
print_ratios() {
    local placement c07=07-socketserver-clone
    if has 06-epoll 04-thread-per-conn 03-select-rw-split 05-fork-per-conn && placed pinned; then
        echo
        echo "Ratios (same run, pinned):"
        echo "  06 / 04 at 100 busy connections: $(ratio 06-epoll 04-thread-per-conn pinned busy-100 4)x the messages per second, $(ratio 06-epoll 04-thread-per-conn pinned busy-100 7)x the server CPU per echo"
        echo "  06 / 03 with 900 idle + 10 busy: $(ratio 06-epoll 03-select-rw-split pinned idle-900 4)x the messages per second"
        echo "  06 / 05 churn: $(ratio 06-epoll 05-fork-per-conn pinned churn 4)x the connections per second"
        echo "  06 / 04 churn: $(ratio 06-epoll 04-thread-per-conn pinned churn 4)x the connections per second"
    fi
    has "$c07" python-threading || has "$c07+forking" python-forking || return 0
    echo
    echo "Ratios, 07 against Python's socketserver (same run; issue 8's targets in brackets):"
    if has "$c07" python-threading; then
        placed unpinned && echo "  unpinned, 100 busy, 07 threading / ThreadingTCPServer:" \
            "$(ratio "$c07" python-threading unpinned busy-100 4)x the messages per second (>= 2)," \
            "$(ratio "$c07" python-threading unpinned busy-100 7)x the server CPU per echo (<= 0.4)"
        placed pinned && echo "  pinned, 100 busy, 07 threading / ThreadingTCPServer:" \
            "$(ratio "$c07" python-threading pinned busy-100 4)x the messages per second," \
            "$(ratio "$c07" python-threading pinned busy-100 7)x the server CPU per echo (<= 0.8)"
    fi
    if has "$c07+forking" python-forking; then
        for placement in "${placements[@]}"; do
            echo "  $placement, churn, 07 forking / ForkingTCPServer:" \
                "$(ratio "$c07+forking" python-forking "$placement" churn 4)x the connections per second (>= 3)," \
                "$(ratio "$c07+forking" python-forking "$placement" churn 7)x the server CPU per connection"
        done
    fi
    if has python-threading && placed pinned && placed unpinned; then
        echo "  placement, 100 busy, ThreadingTCPServer unpinned / pinned:" \
            "$(div "$(value python-threading unpinned busy-100 4)" "$(value python-threading pinned busy-100 4)")x the messages per second," \
            "$(div "$(value python-threading unpinned busy-100 7)" "$(value python-threading pinned busy-100 7)")x the server CPU per echo"
        has "$c07" && echo "  placement, 100 busy, 07 threading unpinned / pinned:" \
            "$(div "$(value "$c07" unpinned busy-100 4)" "$(value "$c07" pinned busy-100 4)")x the messages per second," \
            "$(div "$(value "$c07" unpinned busy-100 7)" "$(value "$c07" pinned busy-100 7)")x the server CPU per echo"
    fi
    return 0
}

# plot: messages per second against busy connections, one line per server of
# the section, in its first placement (`make bench`: the chapters 01-06).
plot() {
    command -v gnuplot >/dev/null || return 0
    [[ " ${cells[*]} " =~ busy-.*busy- ]] || return 0 # a line needs two points
    awk -F, -v l="${placements[0]}" 'NR > 1 && $2 == l && $3 ~ /^busy-/ { sub("busy-", "", $3); print $1, $3, $4 }' \
        "$out/summary.csv" | sort -k1,1 -k2n >"$tmp/plot.dat"
    {
        echo "set terminal pngcairo size 900,560 noenhanced; set output '$out/throughput.png'"
        if [[ ${placements[0]} == pinned ]]; then
            echo "set title 'Echo throughput by connections (64 B ping-pong, server on CPU 0, loadgen on CPU 1)'"
        else
            echo "set title 'Echo throughput by connections (64 B ping-pong, unpinned)'"
        fi
        echo "set logscale x; set xlabel 'busy connections'; set ylabel 'messages per second'; set key outside right; set grid"
        printf "plot"
        for server in "${servers[@]}"; do
            printf " '< grep \"^%s \" %s' using 2:3 with linespoints title '%s'," "$server" "$tmp/plot.dat" "$server"
        done | sed 's/,$//'
        echo
    } >"$tmp/plot.gp"
    gnuplot "$tmp/plot.gp" && echo && echo "plot: $out/throughput.png"
}

# ============================== Main =========================================

echo "server,placement,cell,mode,conns,idle,msgs,size,inflight,opened,greeted,failed,seconds,rate,p50_us,p99_us,p999_us,max_us,connect_p50_us,connect_p99_us,server_cpu_us_per_op,server_rss_kib" >"$out/results.csv"
: >"$out/errors.log"
echo "machine: $(nproc) CPUs, $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo);" \
    "load average $(cut -d' ' -f1 /proc/loadavg) (anything else running skews the figures)"
if (($# > 0)); then
    servers=("$@")
    run_section "servers"
    summarize
    print_table
    print_ratios
    plot
else
    servers=(01-blocking 02-select-multiport 03-select-rw-split 04-thread-per-conn 05-fork-per-conn 06-epoll 06-epoll+et)
    placements=(pinned) cells=("${all_cells[@]}")
    run_section "The chapters 01-06, server on CPU 0, loadgen on CPU 1"
    summarize
    print_table
    print_ratios
    plot
    servers=(07-socketserver-clone 07-socketserver-clone+forking python-threading python-forking)
    placements=(pinned unpinned) cells=(busy-100 churn)
    for server in "${servers[@]}"; do
        available "$server" || { echo; echo "07 against Python's socketserver: skipped, $server is missing (make; python3)"; servers=(); break; }
    done
    if ((${#servers[@]} > 0)); then
        run_section "07 against Python's socketserver ($("$python" --version 2>&1))"
        summarize
        print_table
        print_ratios
    fi
fi
[[ ! -s $out/errors.log ]] || { echo; echo "Some runs failed; see $out/errors.log:"; head -5 "$out/errors.log"; }
echo "data: $out/results.csv (every run), $out/summary.csv (medians)"
