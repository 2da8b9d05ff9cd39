#!/usr/bin/env bash
# scripts/strace-compare.sh ROW ROW [ROW...]: what one stage changed, seen
# two ways: `make compare A=03 B=06`.
#
# A ROW is a chapter or a mode of one, as scripts/strace-session.sh takes
# them (3, 03-select-rw-split, 06+et). Each row's server goes through the
# same traced session (scripts/strace-session.sh), then, for two rows:
#   1. the code: diff -u of the two chapters' sources (server.c and the
#      files it includes; the clients are left out: they differ only in
#      their default port);
#   2. the kernel's view: the two sessions side by side (diff -y: "|" a
#      line that differs, "<" or ">" a line only one side has);
# and for any number of rows:
#   3. the system calls of one session, a row per call (its variants on one
#      row: accept and accept4), the calls per echoed line and per
#      connection, and for every row that differs, what the call does
#      (scripts/strace-notes.txt).
# SCENARIO=flood or SCENARIO=sleep traces that scenario instead of the
# echoes (scripts/strace-session.sh); the table then has no per-echo rows.
# WIDTH sets the width of the side by side view (default: the terminal's).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
(($# >= 2)) || { echo "usage: scripts/strace-compare.sh ROW ROW [ROW...]" >&2; exit 2; }
rows=()
for name in "$@"; do rows+=("$(resolve_row "$name")"); done
for row in "${rows[@]}"; do
    scripts/strace-session.sh -s "$row"
done
scenario=${SCENARIO:-echo}
suffix='' # the sessions' file names: ROW.session, or ROW.SCENARIO.session
[[ $scenario == echo ]] || suffix=.$scenario
width=${WIDTH:-$(tput cols 2>/dev/null || echo 200)}
((width >= 120)) || width=120

# sources ROW: copy the chapter's sources, less its client, to $tmp/CHAPTER.
sources() {
    local dir=${1%%+*}
    mkdir -p "$tmp/src/$dir"
    find "$dir" -maxdepth 1 \( -name '*.[ch]' -o -name Makefile \) ! -name client.c -exec cp {} "$tmp/src/$dir" \;
}

code() {
    local a=${rows[0]%%+*} b=${rows[1]%%+*}
    echo "=== 1. The code: what $b changes in $a (diff -u; make compare writes it whole to out/strace/) ==="
    if [[ $a == "$b" ]]; then
        echo "The same source: ${rows[1]} runs it with '$(row_args "${rows[1]}")', ${rows[0]} with '$(row_args "${rows[0]}")'."
        return
    fi
    sources "$a"
    sources "$b"
    (cd "$tmp/src" && diff -ruN "$a" "$b") >"out/strace/$a-vs-$b.diff" || true
    cat "out/strace/$a-vs-$b.diff"
    echo "($(grep -c '^[-+][^-+]' "out/strace/$a-vs-$b.diff" || true) lines changed)"
}

# shape SESSION: its lines without the task column, every number an N: what
# side_by_side aligns, so that a call that moved from a thread to a child,
# or reads another descriptor, lines up with itself.
shape() {
    cut -c11- "$1" | sed 's/[0-9][0-9]*/N/g'
}

# side_by_side: the two sessions aligned by diff on their shapes. A line
# longer than its half is cut in the middle, keeping the call's result.
side_by_side() {
    local a=out/strace/${rows[0]}$suffix.session b=out/strace/${rows[1]}$suffix.session half=$(((width - 3) / 2))
    echo
    echo "=== 2. The kernel's view: one session each, side by side (scripts/strace-session.sh) ==="
    echo "(blank: the same line; ~ the same call by another task, or with other numbers; | a different call; < > one side only)"
    printf "%-${half}s   %s\n" "${rows[0]}" "${rows[1]}"
    { diff --unchanged-line-format='=%L' --old-line-format='<%L' --new-line-format='>%L' \
        <(shape "$a") <(shape "$b") || true; } |
        awk -v a="$a" -v b="$b" -v w="$half" '
            function fit(s,    tail, head) {
                if (length(s) <= w) return s
                tail = ""
                head = s
                if (match(s, / = [^=]*$/)) {
                    tail = substr(s, RSTART)
                    head = substr(s, 1, RSTART - 1)
                }
                if (length(tail) > w / 3) sub(/ \(.*/, "", tail) # "(Resource temporarily...)"
                if (length(tail) > w / 3) tail = substr(tail, 1, int(w / 3))
                return substr(head, 1, w - length(tail) - 3) "..." tail
            }
            function pair(mark,    left, right) {
                left = mark == ">" ? "" : A[++i]
                right = mark == "<" ? "" : B[++j]
                if (mark == "=") mark = left == right ? " " : "~"
                printf "%-" w "s %s %s\n", fit(left), mark, fit(right)
            }
            function flush(    k) { # a change: old lines against new ones
                for (k = 1; k <= olds || k <= news; k++) pair(k > news ? "<" : k > olds ? ">" : "|")
                olds = news = 0
            }
            BEGIN { while ((getline line <a) > 0) A[++na] = line; while ((getline line <b) > 0) B[++nb] = line }
            /^</ { if (news) flush(); olds++; next }
            /^>/ { news++; next }
            { flush(); pair("=") }
            END { flush() }'
}

counts() {
    echo
    case $scenario in
    echo) echo "=== 3. System calls in one session (connect, greeting, 3 echoes, quit, close) ===" ;;
    sleep) echo "=== 3. System calls in one session (connect, greeting, sleep 100, quit, close) ===" ;;
    flood) echo "=== 3. System calls in one session (connect, greeting, a flood never read, reset) ===" ;;
    esac
    local files=()
    for row in "${rows[@]}"; do files+=("out/strace/$row$suffix.session"); done
    awk -v names="${rows[*]}" -v scenario="$scenario" -f scripts/strace-count.awk scripts/strace-notes.txt "${files[@]}"
}

if ((${#rows[@]} == 2)); then
    code
    side_by_side
fi
counts
