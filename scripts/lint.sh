#!/usr/bin/env bash
# scripts/lint.sh: the static checks behind `make lint`. Three tools, each
# run over all its files and summed up in one line, with the time it took:
#
#   - cppcheck on the C, as make compiles it: bugs, leaks, non-reentrant calls;
#   - clang-tidy on the same C, with the checks listed (and argued) in .clang-tidy;
#   - ShellCheck on the shell scripts and the suite's helpers.
#
# Prints the findings, one line each, then the three summary lines. Exits
# non-zero if any tool found anything, failed, or ran out of time.
#
# Which C files: the ones make compiles on their own, with make's flags. A
# file that is only #included (a chapter's protocol.c, socketserver.h) is
# checked through the file that includes it: cppcheck follows the #include,
# and clang-tidy looks into it (HeaderFilterRegex and ExtraArgs in .clang-tidy).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh make cppcheck clang-tidy shellcheck # done already under make lint

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
summary=()

# now: the time in seconds, to the microsecond.
now() { echo "${EPOCHREALTIME/,/.}"; }

# report TOOL FILES START STATUS: print $tmp/TOOL.out, the findings (each
# once: a header that several files include is reported through each one), and
# add TOOL's line to the summary. STATUS is the tool's: 124 when timeout
# stopped it; otherwise non-zero means it failed (its output then says why).
report() {
    local tool=$1 files=$2 start=$3 status=$4 findings result
    sort -u "$tmp/$tool.out" | tee "$tmp/$tool.found"
    findings=$(grep -c . "$tmp/$tool.found" || true)
    if ((status == 124)); then
        result="stopped: took too long"
    elif ((findings > 0)); then
        result="$findings finding(s)"
    elif ((status != 0)); then
        result="failed (exit $status)"
        tail -n 20 "$tmp/$tool.raw"
    else
        result=clean
    fi
    [[ $result == clean ]] || failed=1
    summary+=("$(printf '%-11s %-24s %2d files, %5.1f s' "$tool:" "$result" "$files" \
        "$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')")")
}

# The C files and their flags, one "FILE FLAG..." line each, in $tmp/units.
# make -n -B prints the commands of a full build without running any. It
# runs on a copy of the tree: reading a chapter's Makefile rewrites its
# .build-flags stamp when the flags differ, and the next build would start
# over. Of make's flags the tools need -std, -D, -U, -I, -pthread, and -O2
# (glibc's _FORTIFY_SOURCE warns without it); warnings (-W) are the
# compilers' business, which CI builds with gcc and clang, -Werror.
mkdir "$tmp/tree"
tar --exclude=./.git --exclude=./out -cf - . | tar -xf - -C "$tmp/tree"
for dir in [0-9][0-9]-*/ scripts/ scripts/reference/; do
    dir=${dir%/}
    make -s -n -B -C "$tmp/tree/$dir" | while read -ra words; do
        sources=() flags=()
        for word in "${words[@]}"; do
            case $word in
            *.c) sources+=("$dir/$word") ;;
            -I.) flags+=("-I$dir") ;; # make runs in $dir; the tools run here
            -I*) flags+=("-I$dir/${word#-I}") ;;
            -std=* | -D* | -U* | -O* | -pthread) flags+=("$word") ;;
            esac
        done
        for source in "${sources[@]}"; do echo "$source" "${flags[@]}"; done
    done
done | sort -u >"$tmp/units"
units=$(wc -l <"$tmp/units")
((units > 0)) || { echo "lint: make -n names no C file" >&2; exit 1; }

# each TOOL FUNCTION SECONDS: run `FUNCTION FILE FLAG...` for every line of
# $tmp/units, one per core at a time, all within SECONDS; the output goes to
# $tmp/TOOL.raw. Returns 124 if time ran out, non-zero if a run failed.
# (bash -c runs the exported function named by its $0, each run's output to
# a file of its own, so that lines from parallel runs never mix.)
each() {
    local status=0
    export EACH_OUT=$tmp/$1
    mkdir "$EACH_OUT"
    # shellcheck disable=SC2016 # expanded by that bash, not this one
    timeout "$3" xargs -P "$(nproc)" -L 1 bash -c '"$0" "$@" >"$EACH_OUT/${1//\//_}" 2>&1' "$2" \
        <"$tmp/units" || status=$?
    cat "$EACH_OUT"/* >"$tmp/$1.raw" 2>/dev/null || true
    return "$status"
}

# --- cppcheck ---------------------------------------------------------------
# --enable: warning (likely bugs), portability, performance. Not style: on
#   this code it is nearly all "the scope of the variable can be reduced" and
#   "could be const", matters of taste. Not information: it would say that
#   the system headers were not found; cppcheck is not given them on purpose,
#   its library files describe libc instead (faster, and no false findings
#   from glibc's macros).
# --library=posix: what socket(), open(), close() and the pthread_* calls do,
#   so that a leaked descriptor is found, and strtok() and the other calls
#   that are not reentrant are reported: the course's servers run threads.
#   Not gnu: it wrongly forbids accept4(fd, NULL, NULL, flags), which
#   accept4() allows and a server that needs no peer address writes.
# --suppress=readdirCalled: it recommends readdir_r(), which glibc and POSIX
#   have deprecated since; readdir() on a stream one thread owns is safe.
# --std=c11: cppcheck 2.10 has no c17, which is C11 with corrections.
# -D and -I from make: cppcheck then checks that one configuration, not
#   every combination of #ifdefs it can find. (It takes no -std= or -O.)
# --inline-suppr: for one line that is right and still flagged, a comment
#   `cppcheck-suppress ID ; why` on the line before.
# shellcheck disable=SC2317 # each() runs it
cppcheck_one() {
    local file=$1 flag flags=()
    shift
    for flag; do
        case $flag in -D* | -U* | -I*) flags+=("$flag") ;; esac
    done
    cppcheck --quiet --inline-suppr --enable=warning,portability,performance \
        --library=posix --suppress=readdirCalled --std=c11 \
        --template='{file}:{line}: {severity}: {message} [{id}]' "${flags[@]}" "$file"
}
export -f cppcheck_one
start=$(now) status=0
each cppcheck cppcheck_one 60 || status=$?
grep -E '^[^ ]+:[0-9]+: ' "$tmp/cppcheck.raw" >"$tmp/cppcheck.out" || true
report cppcheck "$units" "$start" "$status"

# --- clang-tidy -------------------------------------------------------------
# The checks and why are in .clang-tidy. About 50 s here on two cores; a
# run that takes 120 s is stopped. One line per finding is kept; for the
# path behind an analyzer's finding, run clang-tidy on that file (the flags
# are those of make's command line).
# shellcheck disable=SC2317 # each() runs it
clang_tidy_one() {
    local file=$1
    shift
    clang-tidy --quiet "$file" -- "$@"
}
export -f clang_tidy_one
start=$(now) status=0
each clang-tidy clang_tidy_one 120 || status=$?
sed -n "s|^$PWD/||; /^[^ ]*:[0-9]*:[0-9]*: \(warning\|error\): /p" "$tmp/clang-tidy.raw" >"$tmp/clang-tidy.out"
report clang-tidy "$units" "$start" "$status"

# --- ShellCheck -------------------------------------------------------------
# Every check at its default level (style and up). -x follows `source
# scripts/common.sh`, so what a script takes from it is known. The .bats
# files are left out: ShellCheck 0.9 parses them, but it does not follow
# bats' `load`, so each variable a test sets for helpers.bash reads as unused.
shell_files=(scripts/*.sh tests/helpers.bash tests/run.sh .ci/run)
start=$(now) status=0
timeout 60 shellcheck -x --format=gcc "${shell_files[@]}" >"$tmp/shellcheck.raw" 2>&1 || status=$?
grep -E '^[^ ]+:[0-9]+:[0-9]+: ' "$tmp/shellcheck.raw" >"$tmp/shellcheck.out" || true
((status != 1)) || status=0 # 1: it found something, as the findings say
report shellcheck "${#shell_files[@]}" "$start" "$status"

printf '%s\n' "${summary[@]}"
exit "$failed"
