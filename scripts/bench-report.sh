# shellcheck shell=bash
# scripts/bench-report.sh: the second half of scripts/bench.sh, which sources
# it: from every run's line (runs.csv) to the medians (bench.csv), the tables
# (bench.md), the ratios the course holds each stage to (its targets), and the plot (bench.svg).
# It uses bench.sh's servers, cells, rounds, machine, out, raw and tmp.
# shellcheck disable=SC2154 # those, set by scripts/bench.sh before it sources this

# ================================ Medians ====================================

# The columns of bench.csv, one row per server, placement and cell.
BENCH_COLUMNS=server,placement,cell,runs,rate,p50_us,p99_us,cpu_us_per_op,peak_kib,loadgen_cpu_pct,loadgen_saturated,syscalls_per_op,epoll_ctl_per_op,rtt_vs_floor,not_run

# loadgen at or above this share of its CPU is the bottleneck, not the server.
SATURATED_PCT=90

# medians: for each server, placement and cell of runs.csv, the number of
# runs that succeeded and the median of each figure, one line each:
# "server,placement,cell,runs,rate,p50,p99,cpu,peak,loadgen%,p50/floor"
# (the last for one-connection runs: each over the floor measured before it).
medians() {
    awk -F, 'NR > 1 && $4 != "FAILED" && $14 != "" {
            key = $1 "," $2 "," $3; i = ++n[key]
            v[key, 1, i] = $14; v[key, 2, i] = $15; v[key, 3, i] = $16
            v[key, 4, i] = $21; v[key, 5, i] = $23; v[key, 6, i] = $24
            v[key, 7, i] = $25 > 0 ? sprintf("%.2f", $15 / $25) : ""
        }
        function median(key, f, count,    i, j, a, t) {
            for (i = 1; i <= count; i++) a[i] = v[key, f, i]
            for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return a[int((count + 1) / 2)]
        }
        END {
            for (key in n) {
                line = key "," n[key]
                for (f = 1; f <= 7; f++) line = line "," median(key, f, n[key])
                print line
            }
        }' "$raw/runs.csv"
}

# floor_rtt: the median of the sockperf runs' p50 round trip, in µs.
floor_rtt() {
    awk -F, 'NR > 1 { a[++n] = $1 } END {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        if (n) print a[int((n + 1) / 2)] }' "$out/floor.csv"
}

# summarize: bench.csv, a row for every server and cell in every placement
# run, medians or the reason it was not run; system calls per echo (per
# connection on churn rows) on the pinned rows counted (busy-100, busy-1000,
# churn: see count_syscalls), the round trip over the floor (the median of each run's) on the
# busy-1 rows.
summarize() {
    local server placement cell why m calls
    medians >"$tmp/medians"
    mapfile -t ran_placements < <(cut -d, -f2 "$raw/runs.csv" | sed 1d | sort -u)
    {
        echo "$BENCH_COLUMNS"
        for placement in "${ran_placements[@]}"; do
            for server in "${servers[@]}"; do
                for cell in "${cells[@]}"; do
                    if why=$(not_run "$server" "$cell"); then
                        [[ $placement != "${ran_placements[0]}" ]] || echo "$server,$placement,$cell,0,,,,,,,,,,,\"$why\""
                        continue
                    fi
                    m=$(grep "^$server,$placement,$cell," "$tmp/medians" | cut -d, -f4-) || continue
                    calls=,
                    [[ $placement != pinned ]] || calls=$(calls_of "$server" "$cell" 3,4)
                    awk -F, -v key="$server,$placement,$cell" -v calls="${calls:-,}" -v sat="$SATURATED_PCT" '{
                            print key "," $1 "," $2 "," $3 "," $4 "," $5 "," $6 "," $7 "," ($7 >= sat ? "yes" : "no") "," calls "," $8 ","
                        }' <<<"$m"
                done
            done
        done
    } >"$out/bench.csv"
}

# calls_of SERVER CELL FIELDS: those fields (3: calls per operation, 4:
# epoll_ctl) of SERVER's count at CELL in syscalls.csv, comma-separated.
calls_of() {
    awk -F, -v s="$1" -v k="$2" '$1 == s && $2 == k' "$out/syscalls.csv" | cut -d, -f"$3"
}

# get SERVER PLACEMENT CELL COLUMN: one value of bench.csv, by column name.
get() {
    awk -F, -v s="$1" -v l="$2" -v k="$3" -v name="$4" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        $1 == s && $2 == l && $3 == k { print $col; exit }' "$out/bench.csv"
}

# div A B: A / B to two decimals, or n/a when either is missing.
div() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b + 0 > 0) printf "%.2f", a / b; else printf "n/a" }'
}

# ratio A B CELL COLUMN: server A's median over server B's, pinned.
ratio() {
    div "$(get "$1" pinned "$3" "$4")" "$(get "$2" pinned "$3" "$4")"
}

# paired A B CELL COLUMN: A's figure over B's in each round (the Nth run of
# each is round N: a few seconds apart), and the median of those ratios, as
# "MEDIAN ROUND1 ROUND2 ...". This machine has phases of some seconds in
# which everything, loadgen included, runs up to a third slower: a ratio
# within a round compares two servers in the same phase. COLUMN: rate, or
# cpu_us_per_op.
paired() {
    awk -F, -v a="$1" -v b="$2" -v k="$3" -v col="$([[ $4 == rate ]] && echo 14 || echo 21)" '
        NR > 1 && $2 == "pinned" && $3 == k && $4 != "FAILED" && $col != "" {
            if ($1 == a) va[++na] = $col; else if ($1 == b) vb[++nb] = $col
        }
        END {
            n = na < nb ? na : nb
            for (i = 1; i <= n; i++) { r[i] = va[i] / vb[i]; s[i] = r[i]; list = list sprintf(" %.2f", r[i]) }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
            if (n) printf "%.2f%s", s[int((n + 1) / 2)], list; else printf "n/a"
        }' "$raw/runs.csv"
}

# verdict VALUE OP LIMIT: "met" or "not met" (OP is <= or >=).
verdict() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (v == "n/a") print "not measured"
        else print ((op == "<=" ? v <= l : v >= l) ? "met" : "**not met**") }'
}

# ================================ Tables =====================================

# human_rate N: 152 k, 12.6 k, 980.
human_rate() {
    awk -v r="$1" 'BEGIN { if (r == "") print "";
        else if (r >= 100000) printf "%.0f k", r / 1000; else if (r >= 1000) printf "%.1f k", r / 1000; else printf "%.0f", r }'
}

# cell_label CELL: the column title.
cell_label() {
    case $1 in
    busy-1) echo "1 busy" ;;
    busy-10) echo "10 busy" ;;
    busy-100) echo "100 busy" ;;
    busy-1000) echo "1,000 busy" ;;
    busy-10000) echo "10,000 busy" ;;
    idle-900) echo "900 idle + 10 busy" ;;
    churn) echo "short connections" ;;
    mix) echo "100 busy, 10 % sleep 10" ;;
    esac
}

# table TITLE FORMAT: a markdown table, a row per server, a column per
# cell; FORMAT names the function that prints one cell from its bench.csv
# row (with the columns as shell variables). "-": not run (see below it).
table() {
    local server cell
    echo
    echo "$1"
    echo
    printf '| server |'
    for cell in "${cells[@]}"; do printf ' %s |' "$(cell_label "$cell")"; done
    [[ $2 != fmt_cpu ]] || printf ' calls per echo, 100 / 1,000 busy | calls per short connection | 1-connection round trip / floor |'
    echo
    printf '| --- |'
    for cell in "${cells[@]}"; do printf ' --- |'; done
    [[ $2 != fmt_cpu ]] || printf ' --- | --- | --- |'
    echo
    for server in "${servers[@]}"; do
        printf '| %s |' "$server"
        for cell in "${cells[@]}"; do printf ' %s |' "$(with_row "$server" "$cell" "$2")"; done
        [[ $2 != fmt_cpu ]] ||
            printf ' %s / %s | %s | %s |' "$(calls_of "$server" busy-100 3)" "$(calls_of "$server" busy-1000 3)" \
                "$(calls_of "$server" churn 3)" "$(get "$server" pinned busy-1 rtt_vs_floor | sed 's/.$/&x/')"
        echo
    done
}

# with_row SERVER CELL FORMAT: FORMAT run with the pinned row's columns set.
with_row() {
    local line rate p50_us p99_us cpu_us_per_op peak_kib loadgen_cpu_pct loadgen_saturated not_run
    line=$(grep "^$1,pinned,$2," "$out/bench.csv") || { echo " "; return; }
    IFS=, read -r _ _ _ _ rate p50_us p99_us cpu_us_per_op peak_kib loadgen_cpu_pct \
        loadgen_saturated _ _ _ not_run <<<"$line"
    if [[ -n $not_run ]]; then echo "-"; else "$3"; fi
}

# fmt_cpu, fmt_latency, fmt_memory: one cell of each table (with_row's columns).
fmt_cpu() {
    local mark=
    [[ $loadgen_saturated != yes ]] || mark=" *"
    printf '%s (%s)%s' "$cpu_us_per_op" "$(human_rate "$rate")" "$mark"
}
fmt_latency() { printf '%s / %s' "$p50_us" "$p99_us"; }
fmt_memory() { printf '%s (%s %%)' "$(awk -v k="$peak_kib" 'BEGIN { printf (k >= 10240 ? "%.0f MiB" : "%.1f MiB"), k / 1024 }')" "$loadgen_cpu_pct"; }

# not_run_list: every server and cell not run, and why.
not_run_list() {
    local server cell why
    for server in "${servers[@]}"; do
        for cell in "${cells[@]}"; do
            if why=$(not_run "$server" "$cell"); then printf '%s, %s\t%s\n' "$server" "$(cell_label "$cell")" "$why"; fi
        done
    done | awk -F'\t' '{ k = $2; if (!(k in seen)) order[++n] = k; seen[k] = seen[k] (seen[k] ? "; " : "") $1 }
        END { if (n) print "\nNot run (\"-\" above):\n"; for (i = 1; i <= n; i++) print "- " seen[order[i]] ": " order[i] }'
}

# target A B CELL COLUMN OP LIMIT TEXT: one line of targets: the median of
# the per-round ratios (paired), its verdict, the ratio of the medians and
# each round's ratio beside it.
target() {
    local p median rounds_list
    p=$(paired "$1" "$2" "$3" "$4")
    median=${p%% *} rounds_list=${p#* }
    [[ $p == *" "* ]] || rounds_list=
    echo "- $(cell_label "$3"): $7 **${median}x** (target $5 $6x: $(verdict "$median" "$5" "$6"));" \
        "per round:${rounds_list:- n/a}; medians' ratio $(ratio "$1" "$2" "$3" "$4")x"
}

# targets: the course's targets for 06 against the libraries and 04, as ratios in this run (pinned).
targets() {
    local cell r
    has 06-epoll libevent libuv 04-thread-per-conn || return 0
    echo
    echo "06-epoll against the others, this run: the median of the per-round ratios (see paired in"
    echo "scripts/bench-report.sh), with the course's targets:"
    echo
    for cell in busy-100 busy-1000; do
        measured "$cell" || continue
        target 06-epoll libevent "$cell" cpu_us_per_op '<=' 0.8 "06 / libevent, server CPU per echo"
        target 06-epoll libuv "$cell" cpu_us_per_op '<=' 1.0 "06 / libuv, server CPU per echo"
    done
    if measured busy-1000; then
        target 06-epoll 04-thread-per-conn busy-1000 rate '>=' 1.5 "06 / 04, messages per second"
        target 06-epoll 04-thread-per-conn busy-1000 cpu_us_per_op '<=' 0.55 "06 / 04, server CPU per echo"
    fi
    r=$(get 06-epoll pinned busy-1 rtt_vs_floor)
    echo "- 1 busy: 06's round trip (p50) over the sockperf floor measured just before it **${r:-n/a}x** (target <= 1.25x: $(verdict "${r:-n/a}" '<=' 1.25))"
    if has 03-select-rw-split 05-fork-per-conn && measured idle-900 churn; then
        echo "- 900 idle + 10 busy: 06 / 03 messages per second $(ratio 06-epoll 03-select-rw-split idle-900 rate)x;" \
            "short connections: 06 / 05 $(ratio 06-epoll 05-fork-per-conn churn rate)x, 06 / 04 $(ratio 06-epoll 04-thread-per-conn churn rate)x the connections per second (medians' ratios)"
    fi
}

# targets_08: the course's targets for 08's pool, as ratios in this run
# (pinned): short connections against 05 and 04 (churn), and, with a pool as
# big as the load (08-prethreaded-pool+t100), long ones against 04.
targets_08() {
    local pool
    has 08-prethreaded-pool || has 08-prethreaded-pool+t100 || return 0
    echo
    echo "08-prethreaded-pool against 04 and 05, this run: the median of the per-round ratios, with the course's targets:"
    echo
    if has 04-thread-per-conn 05-fork-per-conn && measured churn; then
        for pool in 08-prethreaded-pool 08-prethreaded-pool+prefork; do
            has "$pool" || continue
            target "$pool" 05-fork-per-conn churn cpu_us_per_op '<=' 0.25 "$pool / 05, server CPU per connection"
            target "$pool" 04-thread-per-conn churn cpu_us_per_op '<=' 0.8 "$pool / 04, server CPU per connection"
            target "$pool" 05-fork-per-conn churn rate '>=' 3 "$pool / 05, connections per second"
        done
    fi
    if has 08-prethreaded-pool+t100 04-thread-per-conn && measured busy-100; then
        target 08-prethreaded-pool+t100 04-thread-per-conn busy-100 rate '>=' 0.85 "08 -t 100 / 04, messages per second"
        target 08-prethreaded-pool+t100 04-thread-per-conn busy-100 cpu_us_per_op '<=' 1.15 "08 -t 100 / 04, server CPU per echo"
    fi
}

# targets_09: the course's targets for 09's pool, as ratios in this run
# (pinned): plain echoes against 06 (a pool nobody uses must cost nothing),
# and the sleep mix's messages per second against 06 and 04 (no target).
targets_09() {
    local cell
    has 09-epoll-workers 06-epoll || return 0
    echo
    echo "09-epoll-workers against 06 and 04, this run: the median of the per-round ratios, with the course's targets:"
    echo
    for cell in busy-100 busy-1000; do
        measured "$cell" || continue
        target 09-epoll-workers 06-epoll "$cell" cpu_us_per_op '<=' 1.1 "09 / 06, server CPU per echo"
    done
    mix_ratios 09-epoll-workers 06-epoll 04-thread-per-conn
}

# mix_ratios SERVER AGAINST...: the sleep mix's messages per second, SERVER
# over each of the others in this run (no target: how much a way of
# keeping slow work off the others buys).
mix_ratios() {
    local server=$1 against p
    measured mix || return 0
    for against in "${@:2}"; do
        has "$against" || continue
        p=$(paired "$server" "$against" mix rate)
        echo "- $(cell_label mix): ${server%%-*} / ${against%%-*}, messages per second **${p%% *}x**; per round:${p#* };" \
            "medians' ratio $(ratio "$server" "$against" mix rate)x"
    done
}

# targets_10: the course's targets for 10's ring against 06, as ratios in
# this run (pinned): server CPU per echo (per round), system calls per echo
# and per short connection (one count each, see count_syscalls); and the
# sleep mix's messages per second against 06, 09 and 04 (no target).
targets_10() {
    local cell limit r
    has 10-io-uring 06-epoll || return 0
    echo
    echo "10-io-uring against 06, this run: the median of the per-round ratios (system calls: one count each), with the course's targets:"
    echo
    for cell in busy-100 busy-1000; do
        measured "$cell" || continue
        target 10-io-uring 06-epoll "$cell" cpu_us_per_op '<=' 1.0 "10 / 06, server CPU per echo"
    done
    for cell in busy-100 busy-1000 churn; do
        limit=0.25
        [[ $cell != churn ]] || limit=0.5
        r=$(div "$(calls_of 10-io-uring "$cell" 3)" "$(calls_of 06-epoll "$cell" 3)")
        echo "- $(cell_label "$cell"): 10 / 06, system calls per $([[ $cell == churn ]] && echo connection || echo echo)" \
            "**${r}x** (target <= ${limit}x: $(verdict "$r" '<=' "$limit")); 10 made $(calls_of 10-io-uring "$cell" 3), 06 $(calls_of 06-epoll "$cell" 3)"
    done
    mix_ratios 10-io-uring 06-epoll 09-epoll-workers 04-thread-per-conn
}

# has SERVER...: every one of them is in this run.
has() {
    local server
    for server in "$@"; do [[ " ${servers[*]} " == *" $server "* ]] || return 1; done
}

# measured CELL...: every one of them is in this run.
measured() {
    local cell
    for cell in "$@"; do [[ " ${cells[*]} " == *" $cell "* ]] || return 1; done
}

# section_07_table: 07 and Python, pinned and unpinned, with lesson 07's ratios.
section_07_table() {
    local server placement cell c07=07-socketserver-clone
    grep -q ',unpinned,' "$out/bench.csv" && has "$c07" python-threading || return 0
    echo
    echo "07 against Python's socketserver: messages (or connections) per second, server CPU µs per echo (or connection):"
    echo
    echo "| server | 100 busy, pinned | 100 busy, unpinned | short conns, pinned | short conns, unpinned |"
    echo "| --- | --- | --- | --- | --- |"
    for server in "$c07" "$c07+forking" python-threading python-forking; do
        printf '| %s |' "$server"
        for cell in busy-100 churn; do
            for placement in pinned unpinned; do
                printf ' %s (%s µs) |' "$(human_rate "$(get "$server" "$placement" "$cell" rate)")" \
                    "$(get "$server" "$placement" "$cell" cpu_us_per_op)"
            done
        done
        echo
    done
    u() { div "$(get "$1" unpinned "$3" "$4")" "$(get "$2" unpinned "$3" "$4")"; }
    echo
    echo "- unpinned, 100 busy, 07 threading / ThreadingTCPServer: $(u "$c07" python-threading busy-100 rate)x the messages per second, $(u "$c07" python-threading busy-100 cpu_us_per_op)x the server CPU per echo"
    echo "- pinned, 100 busy, 07 threading / ThreadingTCPServer: $(ratio "$c07" python-threading busy-100 cpu_us_per_op)x the server CPU per echo"
    echo "- short connections, 07 forking / ForkingTCPServer: $(ratio "$c07+forking" python-forking churn rate)x (pinned), $(u "$c07+forking" python-forking churn rate)x (unpinned) the connections per second"
}

# write_report: bench.md.
write_report() {
    local floor
    floor=$(floor_rtt)
    echo "# make bench"
    echo
    echo "$(date -u +%Y-%m-%d), $machine. Server on CPU 0, loadgen on CPU 1 (taskset);"
    echo "64-byte lines, one in flight per connection; median of $rounds round(s), interleaved."
    echo "Floor: sockperf's TCP ping-pong of 64 bytes, pinned the same way, run before each one-connection run$([[ -z $quick ]] || echo " (-q: once per round)"):"
    echo "round trip p50 **${floor:-n/a} µs** (median of $(($(wc -l <"$out/floor.csv") - 1)) runs); the last column divides each one-connection run's p50 by the floor measured just before it."
    table "Server CPU µs per echo (messages per second); short connections: CPU µs per connection (connections per second). * loadgen used ${SATURATED_PCT} % or more of its CPU: its limit, not the server's." fmt_cpu
    table "Round trip, p50 / p99 µs (short connections: connect to close)" fmt_latency
    table "Peak server memory, VmHWM (and loadgen's CPU, % of one CPU)" fmt_memory
    not_run_list
    targets
    targets_08
    targets_09
    targets_10
    section_07_table
}

# ================================= Plot ======================================

# Sixteen colours that tell sixteen lines apart; the reference servers'
# lines are dashed, the chapters' solid.
PLOT_COLOURS=('#1f77b4' '#ff7f0e' '#2ca02c' '#d62728' '#9467bd' '#8c564b' '#e377c2' '#000000' '#bcbd22' '#17becf' '#7f7f7f' '#aec7e8' '#98df8a' '#ffbb78' '#ff9896' '#c5b0d5')

# plot_lines COLUMN: gnuplot's plot command, a line per server.
plot_lines() {
    local i dash
    printf 'plot'
    for i in "${!servers[@]}"; do
        dash=1
        [[ ${servers[i]} == [0-9]* ]] || dash=2
        printf " '< grep \"^%s \" %s' using 2:%d with linespoints lw 1.5 lc rgb '%s' dt %d title '%s'," \
            "${servers[i]}" "$tmp/plot.dat" "$1" "${PLOT_COLOURS[i % ${#PLOT_COLOURS[@]}]}" "$dash" "${servers[i]}"
    done | sed 's/,$//'
    echo
}

# plot: bench.svg, two panels against busy connections (log scale): server
# CPU per echo, and p99 round trip; one line per server, pinned.
plot() {
    command -v gnuplot >/dev/null || { echo "gnuplot is missing: no plot" >&2; return 0; }
    [[ " ${cells[*]} " =~ busy-.*busy- ]] || return 0 # a line needs two points
    awk -F, 'NR > 1 && $2 == "pinned" && $3 ~ /^busy-/ && $5 != "" { sub("busy-", "", $3); print $1, $3, $8, $7 }' \
        "$out/bench.csv" | sort -k1,1 -k2n >"$tmp/plot.dat"
    {
        echo "set terminal svg size 1200,500 dynamic font 'sans,11' noenhanced"
        echo "set output '$out/bench.svg'"
        echo "set multiplot title 'make bench: 64 B ping-pong, server on CPU 0, loadgen on CPU 1 (median of $rounds)'"
        echo "set logscale x; set grid; set xlabel 'busy connections'; set key off"
        echo "set xtics ('1' 1, '10' 10, '100' 100, '1,000' 1000, '10,000' 10000)"
        echo "set size 0.4,0.92; set origin 0,0"
        echo "set ylabel 'server CPU per echo (µs)'; set yrange [0:*]"
        plot_lines 3
        echo "set size 0.6,0.92; set origin 0.4,0"
        echo "set logscale y; set ylabel 'p99 round trip (µs)'; set yrange [*:*]; set key outside right vertical"
        plot_lines 4
        echo "unset multiplot"
    } >"$tmp/plot.gp"
    gnuplot "$tmp/plot.gp" 2>>"$raw/errors.log" || echo "gnuplot failed: see $raw/errors.log" >&2
}
