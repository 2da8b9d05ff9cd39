#!/usr/bin/env bash
# scripts/bench.sh [-r ROUNDS] [CHAPTER...]: the benchmark behind `make bench`.
#
# One load generator (scripts/loadgen) against every chapter, side by side in
# one run: the server pinned to CPU 0, loadgen to CPU 1 (taskset), so the two
# never fight over a core. Cells, each a 64-byte ping-pong per connection:
#   busy-N     N busy connections, N = 1, 10, 100, 1000
#   idle-900   900 idle connections held open, plus 10 busy ones
#   churn      short connections: connect, greeting, quit, close
# Each cell runs ROUNDS times (default 3), rounds interleaved so that a slow
# moment of the machine hits every chapter alike; the median is kept.
#
# Writes out/bench/results.csv (every run), out/bench/summary.csv (medians),
# out/bench/throughput.png (gnuplot, when installed), and prints the table
# and the ratios the lessons quote. Absolute figures depend on the machine;
# compare chapters within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
if [[ ${1:-} == -r ]]; then rounds=$2; shift 2; fi
if (($# > 0)); then chapters=("$@"); else chapters=(01-blocking 02-select-multiport 03-select-rw-split 04-thread-per-conn 05-fork-per-conn 06-epoll 06-epoll+et); fi
cells=(busy-1 busy-10 busy-100 busy-1000 idle-900 churn)
out=out/bench
mkdir -p "$out"
source scripts/common.sh
ulimit -n "$(ulimit -Hn)" # 1000 connections need more than the usual 1024 descriptors

# loadgen_args CELL: what loadgen runs for this cell (about 50,000 messages).
loadgen_args() {
    case $1 in
    busy-*) local n=${1#busy-}; echo "-c $n -n $((50000 / n > 20 ? 50000 / n : 20))" ;;
    idle-900) echo "-i 900 -c 10 -n 5000" ;;
    churn) echo "-r -c 4 -n 3000" ;;
    esac
}

# applies CHAPTER CELL: 01 serves one client at a time, so only one-connection cells.
applies() {
    [[ $1 != 01-* || $2 == busy-1 || $2 == churn ]]
}

# run_cell CHAPTER CELL: one run; appends "chapter,cell,<loadgen CSV>" to results.csv.
run_cell() {
    local chapter=$1 cell=$2 dir=${1%%+*} args=() row
    [[ $chapter != *+et ]] || args=(-e)
    # shellcheck disable=SC2046 # loadgen_args is a list of words
    if ! launch taskset -c 0 "$dir/server" -p 0 -q -m 5000 "${args[@]}" 2>>"$out/errors.log"; then
        row="FAILED"
    elif ! row=$(taskset -c 1 scripts/loadgen -p "$port" $(loadgen_args "$cell") \
        -t 60 -P "$pid" -C 2>>"$out/errors.log"); then
        echo "$chapter $cell: loadgen failed (above)" >>"$out/errors.log"
        row="FAILED"
    fi
    stop "$pid"
    echo "$chapter,$cell,$row" >>"$out/results.csv"
}

echo "chapter,cell,mode,conns,idle,msgs,size,inflight,opened,greeted,failed,seconds,rate,p50_us,p99_us,p999_us,max_us,connect_p50_us,connect_p99_us,server_cpu_us_per_op,server_rss_kib" >"$out/results.csv"
: >"$out/errors.log"
echo "machine: $(nproc) CPUs, $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); server on CPU 0, loadgen on CPU 1; $rounds rounds"
for ((round = 1; round <= rounds; round++)); do
    for cell in "${cells[@]}"; do
        for chapter in "${chapters[@]}"; do
            applies "$chapter" "$cell" && run_cell "$chapter" "$cell"
        done
    done
    echo "round $round of $rounds done"
done

# The median of each chapter and cell: rate, p50, p99, server CPU per op.
awk -F, 'NR > 1 && $3 != "FAILED" {
        key = $1 "," $2; n[key]++
        rate[key, n[key]] = $13; p50[key, n[key]] = $14; p99[key, n[key]] = $15; cpu[key, n[key]] = $20
    }
    function median(a, key, count,    i, j, v, t) {
        for (i = 1; i <= count; i++) v[i] = a[key, i]
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
        return v[int((count + 1) / 2)]
    }
    END {
        print "chapter,cell,rate,p50_us,p99_us,server_cpu_us_per_op"
        for (key in n) print key "," median(rate, key, n[key]) "," median(p50, key, n[key]) "," median(p99, key, n[key]) "," median(cpu, key, n[key])
    }' "$out/results.csv" | sort >"$out/summary.csv"

# value CHAPTER CELL COLUMN: one median from summary.csv (3 rate, 6 cpu).
value() {
    awk -F, -v c="$1" -v k="$2" -v col="$3" '$1 == c && $2 == k { print $col }' "$out/summary.csv"
}

echo
echo "Messages (churn: connections) per second, median of $rounds; server CPU µs per message in brackets:"
printf '%-22s' chapter
printf '%16s' "${cells[@]}"
echo
for chapter in "${chapters[@]}"; do
    printf '%-22s' "$chapter"
    for cell in "${cells[@]}"; do
        rate=$(value "$chapter" "$cell" 3)
        printf '%16s' "${rate:+$(printf '%.0f (%s)' "$rate" "$(value "$chapter" "$cell" 6)")}"
    done
    echo
done
[[ ! -s $out/errors.log ]] || { echo; echo "Some runs failed; see $out/errors.log:"; head -5 "$out/errors.log"; }

# ratio A B CELL COLUMN: A's value over B's.
ratio() {
    awk -v a="$(value "$1" "$3" "$4")" -v b="$(value "$2" "$3" "$4")" 'BEGIN { if (a && b) printf "%.2f", a / b; else printf "n/a" }'
}
if [[ " ${chapters[*]} " == *" 06-epoll "* ]]; then
    echo
    echo "Ratios (same run):"
    echo "  06 / 04 at 100 busy connections: $(ratio 06-epoll 04-thread-per-conn busy-100 3)x the messages per second, $(ratio 06-epoll 04-thread-per-conn busy-100 6)x the server CPU per echo"
    echo "  06 / 03 with 900 idle + 10 busy: $(ratio 06-epoll 03-select-rw-split idle-900 3)x the messages per second"
    echo "  06 / 05 churn: $(ratio 06-epoll 05-fork-per-conn churn 3)x the connections per second"
    echo "  06 / 04 churn: $(ratio 06-epoll 04-thread-per-conn churn 3)x the connections per second"
fi

if command -v gnuplot >/dev/null; then
    awk -F, 'NR > 1 && $2 ~ /^busy-/ { sub("busy-", "", $2); print $1, $2, $3 }' "$out/summary.csv" | sort -k1,1 -k2n >"$tmp/plot.dat"
    {
        echo "set terminal pngcairo size 900,560 noenhanced; set output '$out/throughput.png'"
        echo "set title 'Echo throughput by connections (64 B ping-pong, server on CPU 0, loadgen on CPU 1)'"
        echo "set logscale x; set xlabel 'busy connections'; set ylabel 'messages per second'; set key outside right; set grid"
        printf "plot"
        for chapter in "${chapters[@]}"; do
            printf " '< grep \"^%s \" %s' using 2:3 with linespoints title '%s'," "$chapter" "$tmp/plot.dat" "$chapter"
        done | sed 's/,$//'
        echo
    } >"$tmp/plot.gp"
    gnuplot "$tmp/plot.gp" && echo && echo "plot: $out/throughput.png"
fi
echo "data: $out/results.csv (every run), $out/summary.csv (medians)"
