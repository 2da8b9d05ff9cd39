# shellcheck shell=bash
# scripts/rows.sh: the rows of tests/expectations.txt, where every chapter
# and every mode of one (06-epoll+et) is named once, with how its server is
# started and what the suite expects of it; and so is every reference server
# of scripts/reference/ (libevent, libuv, python-socketserver), which make
# bench measures the chapters against. Sourced by scripts/common.sh and
# tests/helpers.bash. The table's own comments say what each column means.

ROWS_TABLE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests" && pwd)/expectations.txt

# row_value ROW COLUMN: ROW's value in COLUMN; fails when either is missing.
# The last column (args) takes the rest of the row: it may hold several words.
row_value() {
    awk -v row="$1" -v column="$2" '
        /^#/ || NF == 0 { next }
        !header { for (i = 1; i <= NF; i++) at[$i] = i; last = NF; header = 1; next }
        $1 == row && at[column] {
            value = $at[column]
            for (i = at[column] + 1; at[column] == last && i <= NF; i++) value = value " " $i
            print value
            found = 1
        }
        END { exit !found }' "$ROWS_TABLE"
}

# row_args ROW: the server arguments of ROW ("" for "-"); fails when there
# is no ROW.
row_args() {
    local args
    args=$(row_value "$1" args) || { echo "no row '$1' in tests/expectations.txt" >&2; return 1; }
    [[ $args == - ]] || printf '%s\n' "$args" # (echo would take -e as its own)
}

# resolve_row NAME: the row that NAME means: a chapter's number, with or
# without its zero (4, 04), its directory (04-thread-per-conn), or either
# with a mode (06+et, 06-epoll+et).
resolve_row() {
    local chapter=${1%%+*} mode=${1#"${1%%+*}"} dirs
    if [[ $chapter =~ ^[0-9]+$ ]]; then
        dirs=("$(dirname "$ROWS_TABLE")/../$(printf '%02d' "$((10#$chapter))")"-*/)
        chapter=$(basename "${dirs[0]}")
    fi
    row_args "$chapter$mode" >/dev/null || return 1
    echo "$chapter$mode"
}

# rows_of CHAPTER: the rows of CHAPTER, the chapter's own first.
rows_of() {
    awk -v c="$1" '$1 == c || index($1, c "+") == 1 { print $1 }' "$ROWS_TABLE"
}

# row_named CHAPTER ARGS...: the TCP row of CHAPTER that runs with ARGS, or
# CHAPTER+ARGS (spaces and dashes dropped) when there is none.
row_named() {
    local chapter=$1 row
    shift
    for row in $(rows_of "$chapter"); do
        if [[ $(row_value "$row" transport) == tcp && $(row_args "$row") == "$*" ]]; then
            echo "$row"
            return
        fi
    done
    echo "$chapter+$(tr -d ' -' <<<"$*")"
}

# reference_program NAME: the program of the reference server NAME, from the
# repository's root; fails when NAME is not one. A row named NAME (or
# NAME+MODE) runs it; its greeting says chapter=NAME.
reference_program() {
    case $1 in
    libevent) echo scripts/reference/libevent_echo ;;
    libuv) echo scripts/reference/libuv_echo ;;
    python-socketserver) echo scripts/reference/socketserver_echo.py ;;
    *) return 1 ;;
    esac
}

# reference_names: the reference servers that have rows, each once.
reference_names() {
    awk '/^#/ || NF == 0 || $1 == "chapter" || $1 ~ /^[0-9][0-9]-/ { next }
         { sub(/\+.*/, "", $1) } !seen[$1]++ { print $1 }' "$ROWS_TABLE"
}
