# tests/helpers.bash: loaded by every test file. It starts the chapter's own
# server and client, waits for what they print (never a blind sleep), and
# stops everything it started, by pid, when a test ends.
#
# The chapter under test comes from $CHAPTER (tests/run.sh sets it): a row
# of tests/expectations.txt, which says what the suite expects of it. A row
# named like 06-epoll+et tests chapter 06-epoll run with that row's args. A
# row named after a reference server (libevent, python-socketserver+forking)
# tests that program of scripts/reference/ (scripts/rows.sh names it).
#
# The row's transport says how the server is reached: start_server listens
# on a free TCP or UDP port, or on a Unix socket file in the test's own
# directory, and sets TO_SERVER, the arguments that point the client, probe
# and loadgen at it (-p PORT, or --unix PATH; plus --udp for the client of a
# datagram row), so one test drives every transport of its kind.

bats_load_library bats-support
bats_load_library bats-assert
# shellcheck source=scripts/rows.sh
source "$BATS_TEST_DIRNAME/../scripts/rows.sh"

: "${CHAPTER:?set CHAPTER to a row of tests/expectations.txt, for example CHAPTER=01-blocking}"
ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
CHAPTER_DIR=${CHAPTER%%+*} # or a reference server's name, as its greeting says
SERVER=$ROOT/$CHAPTER_DIR/server
CLIENT=$ROOT/$CHAPTER_DIR/client
if [[ ! -d $ROOT/$CHAPTER_DIR ]] && reference_program "$CHAPTER_DIR" >/dev/null; then
    # A reference server (scripts/reference/), driven by 06-epoll's client.
    SERVER=$ROOT/$(reference_program "$CHAPTER_DIR")
    CLIENT=$ROOT/06-epoll/client
fi
# shellcheck disable=SC2034 # used by the test files
PROBE=$ROOT/scripts/probe

# The Unix socket of unix and unixgram rows, in the test's own directory.
SOCK=${BATS_TEST_TMPDIR:-}/server.sock
declare -ga STARTED=()      # pids of everything started in the background
declare -gA SESSION_FD=()   # session name -> the fd that feeds its stdin
declare -gA SESSION_PID=()  # session name -> its pid
SERVER_PID=
SERVER_MAY_EXIT=

# ------------------------------ expectations ------------------------------

# expect COLUMN: this chapter's value in the COLUMN of tests/expectations.txt.
expect() {
    row_value "$CHAPTER" "$1" || fail "tests/expectations.txt has no '$1' for $CHAPTER"
}

# tcp, unix, udp or unixgram: how this row's clients reach its server.
TRANSPORT=$(expect transport)

# pool_size: N, for a row that serves its clients with a pool of N workers
# (its clients column says pool:N); nothing for any other row.
pool_size() {
    local clients
    clients=$(expect clients)
    if [[ $clients == pool:* ]]; then echo "${clients#pool:}"; fi
}

# ---------------------------------- waiting ----------------------------------

# until_within SECONDS COMMAND...: poll COMMAND every 20 ms until it
# succeeds; fail if SECONDS pass first. Every wait in the suite is this one.
until_within() {
    local tries
    tries=$(awk -v s="$1" 'BEGIN { print int(s * 50) }')
    shift
    until "$@"; do
        ((tries-- > 0)) || return 1
        sleep 0.02
    done
}

# seconds_since START: wall time since START (an $EPOCHREALTIME).
seconds_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}

# is_at_least A B: A >= B, as decimals.
is_at_least() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'
}

# has_lines FILE REGEX COUNT: FILE has COUNT lines matching REGEX.
has_lines() {
    (($(grep -ac -- "$2" "$1" 2>/dev/null || true) >= $3))
}

# wait_for FILE REGEX [COUNT] [SECONDS]: until FILE has COUNT lines matching
# REGEX (default 1); fails after SECONDS (default 5).
wait_for() {
    until_within "${4:-5}" has_lines "$1" "$2" "${3:-1}"
}

# -------------------------------- the server ---------------------------------

# with_clean_fds COMMAND...: run COMMAND with only stdin, stdout and stderr
# open. bats leaves descriptors open (3, 4, 10, 251...) that the server would
# inherit, and the tests count the server's descriptors.
with_clean_fds() {
    local path fd
    for path in /proc/self/fd/*; do
        fd=${path##*/}
        if ((fd > 2)) && [[ -e $path ]]; then exec {fd}>&-; fi
    done
    [[ -z ${SERVER_FD_LIMIT:-} ]] || ulimit -n "$SERVER_FD_LIMIT"
    exec "$@"
}

# on_unix: this row's server listens on a Unix socket (unix, unixgram).
on_unix() {
    [[ $TRANSPORT == unix || $TRANSPORT == unixgram ]]
}

# on_datagrams: this row's server serves datagrams (udp, unixgram).
on_datagrams() {
    [[ $TRANSPORT == udp || $TRANSPORT == unixgram ]]
}

# start_server [ARGS...]: start the chapter's server on its row's transport
# with its row's args, wait for its ready lines, and set what the tests use
# to reach it:
#   TO_SERVER     -p PORT or --unix SOCK, for the client, probe and loadgen
#                 (and --udp for the client of a datagram row)
#   TO_ALL        the same, but every port of the server: -p PORT1,PORT2,...
#   ADDRESS       the address as the server prints it: 127.0.0.1:PORT or unix:SOCK
#   GREETING_PORT what its greeting says in port=: the port, or "unix"
#   PORT, PORTS   the port(s), on TCP and UDP rows
# A TCP or UDP server gets free ports (one -p 0 per listener it expects), a
# Unix one the socket SOCK; a datagram one --udp as well. With
# SERVER_FD_LIMIT set, the server runs under that descriptor limit (ulimit
# -n); with SERVER_WRAPPER set (say "valgrind -q"), under that command
# (valgrind --quiet: any line it prints is an error).
start_server() {
    local listeners args=() i ready='^listening on 127\.0\.0\.1:[0-9]*$'
    listeners=$(expect listeners)
    case $TRANSPORT in
    tcp | udp) for ((i = 0; i < listeners; i++)); do args+=(-p 0); done ;;
    unix | unixgram)
        # sun_path holds 108 bytes, its NUL included
        ((${#SOCK} < 108)) || fail "$SOCK is too long for a Unix socket: set a shorter TMPDIR"
        args=(--unix "$SOCK")
        ready="^listening on unix:$SOCK\$"
        ;;
    *) fail "unknown transport in tests/expectations.txt: $TRANSPORT" ;;
    esac
    ! on_datagrams || args+=(--udp)
    [[ $(expect args) == - ]] || read -ra args <<<"${args[*]} $(expect args)"
    # shellcheck disable=SC2086 # the wrapper is a command line, split on purpose
    with_clean_fds ${SERVER_WRAPPER:-} "$SERVER" "${args[@]}" "$@" >"$BATS_TEST_TMPDIR/server.out" \
        2>"$BATS_TEST_TMPDIR/server.err" &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    until_within 20 ready_or_exited "$ready" "$listeners" || true
    if ! has_lines "$BATS_TEST_TMPDIR/server.out" "$ready" "$listeners"; then
        skip_if_unavailable
        fail "no ready line from $CHAPTER/server: $(cat "$BATS_TEST_TMPDIR/server.err")"
    fi
    # shellcheck disable=SC2034 # used by the test files
    if on_unix; then
        TO_SERVER=(--unix "$SOCK")
        TO_ALL=("${TO_SERVER[@]}")
        ADDRESS=unix:$SOCK
        GREETING_PORT=unix
    else
        mapfile -t PORTS < <(sed -n 's/^listening on .*://p' "$BATS_TEST_TMPDIR/server.out")
        PORT=${PORTS[0]}
        TO_SERVER=(-p "$PORT")
        TO_ALL=(-p "$(IFS=, && echo "${PORTS[*]}")")
        ADDRESS=127.0.0.1:$PORT
        GREETING_PORT=$PORT
    fi
    ! on_datagrams || TO_SERVER+=(--udp)
}

# ready_or_exited REGEX COUNT: the server has printed COUNT ready lines, or
# has exited (then it will print none: no use waiting).
ready_or_exited() {
    has_lines "$BATS_TEST_TMPDIR/server.out" "$1" "$2" || has_exited "$SERVER_PID"
}

# skip_if_unavailable: where the stage cannot run at all, its server says
# so and exits 1 (10-io-uring, where io_uring is refused: an old kernel,
# kernel.io_uring_disabled, a container's seccomp filter); the test is then
# skipped with the server's own words. Any other exit is for the test to fail.
skip_if_unavailable() {
    local reason status=0
    reason=$(grep -m1 'io_uring is not available here' "$BATS_TEST_TMPDIR/server.err") || return 0
    has_exited "$SERVER_PID" || return 0
    wait "$SERVER_PID" || status=$?
    ((status == 1)) || return 0
    SERVER_MAY_EXIT=1
    skip "$reason"
}

# skip_unless_it_runs [ARGS...]: start the server and stop it, before a
# test takes its stderr away (SERVER_WRAPPER): a stage that cannot run here
# is skipped now, with the reason its stderr gives (skip_if_unavailable).
skip_unless_it_runs() {
    start_server "$@"
    stop_pid "$SERVER_PID"
}

# built_with_sanitizer: the server was built with SAN=... (see its Makefile).
built_with_sanitizer() {
    grep -q -- -fsanitize "$(dirname "$SERVER")/.build-flags" 2>/dev/null
}

# server_sum FILE AWK: the sum, over the server and its child processes, of
# the n that the AWK program sets reading /proc/PID/FILE.
server_sum() {
    local pid total=0
    for pid in "$SERVER_PID" $(server_children); do
        total=$((total + $(awk "$2"' END { print n + 0 }' "/proc/$pid/$1" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# The server's resident memory in KiB, from the kernel's own count.
server_rss_kib() {
    # shellcheck disable=SC2016 # an awk program, not shell
    server_sum status '/^VmRSS:/ { n = $2 }'
}

# The server's CPU time so far (utime + stime + cutime + cstime), in ticks.
server_cpu_ticks() {
    # shellcheck disable=SC2016 # an awk program, not shell
    server_sum stat '{ n = $14 + $15 + $16 + $17 }'
}

# The server's child processes (zombies included).
server_children() {
    ps -o pid= --ppid "$SERVER_PID" || true
}

# The server's thread count.
server_threads() {
    awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status"
}

# ---------------------------- client sessions ------------------------------

# talk LINE...: the chapter's client sends these lines and prints the replies.
talk() {
    printf '%s\n' "$@" | timeout 10 "$CLIENT" "${TO_SERVER[@]}"
}

# open_session NAME: run the chapter's client in the background, its stdin a
# FIFO the test writes to with `say`, its stdout in NAME.out.
open_session() {
    in_background "$1" "$CLIENT" "${TO_SERVER[@]}"
}

# say NAME LINE: NAME's client sends LINE.
say() {
    printf '%s\n' "$2" >&"${SESSION_FD[$1]}"
}

# hears NAME REGEX [SECONDS]: NAME's client prints a line matching REGEX in time.
hears() {
    wait_for "$BATS_TEST_TMPDIR/$1.out" "$2" 1 "${3:-5}"
}

# ping_while_a_sleeps: session A asks for "sleep 1500", then session B
# pings; B's echo must wait for A's sleep (the row's sleep column says
# stalls) or come at once (serves).
ping_while_a_sleeps() {
    local start delay
    say A "sleep 1500"
    wait_for "$BATS_TEST_TMPDIR/server.err" 'sleeps 1500 ms' # the sleep has begun
    start=$EPOCHREALTIME
    say B ping
    hears B '^ping$' 5
    delay=$(seconds_since "$start")
    if [[ $(expect sleep) == stalls ]]; then
        assert is_at_least "$delay" 1.0
    else
        refute is_at_least "$delay" 0.3
    fi
}

# greeted_now: a new client gets a greeting.
greeted_now() {
    timeout 5 "$CLIENT" "${TO_SERVER[@]}" </dev/null 2>/dev/null | grep -q '^hello'
}

# served_again: a new client is greeted within 10 s (the server may still be
# closing the connections that just left).
served_again() {
    until_within 10 greeted_now
}

# ----------------------------- background tools ----------------------------

# in_background NAME COMMAND...: run a tool that holds its connections until
# its stdin ends (probe -c, probe -f); its output goes to NAME.out.
in_background() {
    local name=$1 dir=$BATS_TEST_TMPDIR fd
    shift
    mkfifo "$dir/$name.in"
    "$@" <"$dir/$name.in" >"$dir/$name.out" 2>"$dir/$name.err" 3>&- &
    STARTED+=($!)
    SESSION_PID[$name]=$!
    exec {fd}>"$dir/$name.in"
    SESSION_FD[$name]=$fd
}

# release NAME: end NAME's stdin, so a client or tool closes its connections.
release() {
    local fd=${SESSION_FD[$1]}
    exec {fd}>&-
    unset "SESSION_FD[$1]"
}

# finish NAME: release NAME and wait until it has exited (its sockets closed).
finish() {
    release "$1"
    wait "${SESSION_PID[$1]}" || true
}

# ------------------------------- teardown ----------------------------------

# has_exited PID: PID is gone, or a zombie waiting to be reaped.
has_exited() {
    local state
    state=$(ps -o stat= -p "$1") || return 0
    [[ $state == Z* ]]
}

# stop_pid PID: SIGTERM, up to 2 s to exit, then SIGKILL; reap it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    until_within 2 has_exited "$1" || kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# no_zombie: the server has no zombie child right now.
no_zombie() {
    # shellcheck disable=SC2009 # pgrep cannot select by process state
    ! ps -o stat= --ppid "$SERVER_PID" | grep -q '^Z'
}

# Zombie children of the server that stay for a whole second.
lasting_zombies() {
    until_within 1 no_zombie || ps -o pid=,stat= --ppid "$SERVER_PID"
}

# Every test ends here: the server must still be alive (unless the test
# stopped it), have no lasting zombie and no sanitizer report; then
# everything started is stopped.
teardown() {
    local name problems=() zombies child i
    for name in "${!SESSION_FD[@]}"; do release "$name"; done
    if [[ -n $SERVER_PID && -z $SERVER_MAY_EXIT ]]; then
        kill -0 "$SERVER_PID" 2>/dev/null || problems+=("the server died during the test")
        zombies=$(lasting_zombies)
        [[ -z $zombies ]] || problems+=("zombie children of the server: $zombies")
        for child in $(server_children); do stop_pid "$child"; done
    fi
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[i]}"; done
    if grep -qE 'Sanitizer|runtime error|^==[0-9]+== ' "$BATS_TEST_TMPDIR/server.err" 2>/dev/null; then
        problems+=("sanitizer or valgrind report: $(cat "$BATS_TEST_TMPDIR/server.err")")
    fi
    ((${#problems[@]} == 0)) || fail "$(printf '%s\n' "${problems[@]}")"
}

# ------------------------------ a scripted peer ------------------------------

# start_peer PYTHON: a stand-in server for testing the tools, on a free
# loopback port. It accepts one connection, c, then runs PYTHON (with socket
# and time imported): the misbehaviour under test, say a half line, then
# silence. Sets PEER_PORT once its ready line is out; teardown stops it.
start_peer() {
    timeout 60 python3 -c '
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
c, _ = s.accept()
'"$1" >"$BATS_TEST_TMPDIR/peer.out" 2>"$BATS_TEST_TMPDIR/peer.err" 3>&- &
    STARTED+=($!)
    wait_for "$BATS_TEST_TMPDIR/peer.out" '^listening on 127\.0\.0\.1:[0-9]*$' 1 10 ||
        fail "no ready line from the peer: $(cat "$BATS_TEST_TMPDIR/peer.err")"
    # shellcheck disable=SC2034 # used by the test files
    PEER_PORT=$(sed -n 's/^listening on .*://p' "$BATS_TEST_TMPDIR/peer.out")
}
