# scripts/strace-session.awk: turns a raw `strace -f` trace of a server into
# lines two chapters can be compared with, by diff or by eye. Used by
# scripts/strace-session.sh, which explains the scenario and the markers.
#
#   awk -v part=session -f scripts/strace-session.awk TRACE
#       the lines between the two SIGWINCH markers: one client's session
#   awk -v part=stop -f scripts/strace-session.awk TRACE
#       the lines from the SIGTERM on: how the server stopped
#
# What changes, line by line:
#   - a call strace cut in two ("accept(3, <unfinished ...>", then later
#     "<... accept resumed>...) = 5") is joined, and placed where it was
#     made: the order reads as the program ran; a call already in progress
#     when the session began and ended within it (a pool's worker waiting
#     in accept) comes first;
#   - the pid column becomes the task's role: main (the process strace
#     started), thread 1, thread 2... (clone with CLONE_THREAD), child 1...
#     (clone or fork without it), numbered in the order they first appear
#     in what is printed;
#   - a pid or tid in a result, a signal or the greeting becomes that role,
#     <main> or <thread 1>; any other pid becomes PID;
#   - ports become PORT, pointers ADDR, the user id UID, CPU times T;
#   - strace's padding before " = " is squeezed to one space;
#   - the markers' own traces are left out: the call the end marker
#     interrupted (where the server waits for what comes next) ends in
#     "= ? (still waiting)" instead of strace's ERESTART or EINTR, and so
#     does a call made in the session that the marker did not interrupt
#     (a pool's worker back in accept), its arguments not yet known shown
#     as "..."; a poll() the first marker interrupted, which the kernel
#     resumes as restart_syscall(), is shown as the poll() it is.

# The text of a line after strace's pid column.
function text_of(line) {
    sub(/^[0-9]+ +/, "", line)
    return line
}

# Store one line of task pid; returns its index.
function store(pid, text) {
    n++
    owner[n] = pid
    slot[n] = text
    in_at[n] = markers
    return n
}

# Replace every whole number equal to a known task's pid in a context where
# strace prints pids, by "<role>" (or PID, when the task has no role here).
function name_pids(s,    out, rest, found, start, end, i) {
    out = ""
    rest = s
    while (match(rest, /(= |si_pid=|pid=|tid=|wait4\(|kill\(|\[)[0-9]+/)) {
        found = substr(rest, RSTART, RLENGTH)
        start = RSTART
        end = RSTART + RLENGTH
        match(found, /[0-9]+$/)
        i = substr(found, RSTART)
        found = substr(found, 1, RSTART - 1)
        if (i in role)
            found = found "<" role[i] ">"
        else if (found ~ /pid=$|tid=$|wait4\($|kill\($/)
            found = found "PID"
        else
            found = found i
        out = out substr(rest, 1, start - 1) found
        rest = substr(rest, end)
    }
    return out rest
}

function placeholders(s) {
    gsub(/htons\([0-9]+\)/, "htons(PORT)", s)
    gsub(/port=[0-9]+/, "port=PORT", s)
    gsub(/0x[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]+/, "ADDR", s)
    gsub(/si_uid=[0-9]+/, "si_uid=UID", s)
    gsub(/si_utime=[0-9]+/, "si_utime=T", s)
    gsub(/si_stime=[0-9]+/, "si_stime=T", s)
    gsub(/\) +=/, ") =", s)
    return name_pids(s)
}

# A new task, the result of clone, clone3, fork or vfork: a thread (with
# CLONE_THREAD) or a child process.
function note_new_task(text,    pid) {
    if (text !~ /^(clone|clone3|fork|vfork)\(/ || text !~ /= [0-9]+$/)
        return
    pid = text
    sub(/.*= /, "", pid)
    kind[pid] = text ~ /CLONE_THREAD/ ? "thread" : "child"
}

# The role of task pid: main, or its kind and its number in order of first
# appearance in what is printed (thread 1, thread 2, child 1...).
function name_task(pid) {
    if (!(pid in role) && (pid in kind))
        role[pid] = kind[pid] " " (++seen[kind[pid]])
}

{
    pid = $1
    if (main == "")
        main = pid
    text = text_of($0)
    if (text ~ / <unfinished \.\.\.>$/) {
        sub(/ <unfinished \.\.\.>$/, "", text)
        pending[pid] = store(pid, text)
    } else if (text ~ /^<\.\.\. [a-z0-9_]+ resumed>/) {
        sub(/^<\.\.\. [a-z0-9_]+ resumed>/, "", text)
        i = pending[pid]
        slot[i] = slot[i] text
        done_at[i] = markers
        delete pending[pid]
        last[pid] = i
        note_new_task(slot[i])
    } else if (text ~ /^--- SIGWINCH /) {
        markers++
        marker[markers] = n + 1 # the first line after the marker
        for (p in pending) # calls made in the session, still waiting at its end
            if (markers == 2 && in_at[pending[p]] == 1)
                waiting[pending[p]] = slot[pending[p]]
        # The markers interrupt the call the server was waiting in.
        if (slot[last[pid]] ~ /= (\? ERESTART|-1 EINTR)/) {
            if (markers == 1)
                interrupted[pid] = slot[last[pid]]
            else
                unfinished[last[pid]] = 1
        }
    } else {
        i = store(pid, text)
        done_at[i] = markers
        note_new_task(text)
        # The kernel resumes a poll() the first marker interrupted.
        if (markers == 1 && interrupted[pid] != "" && text ~ /^restart_syscall\(/)
            resumed[i] = interrupted[pid]
        if (markers == 1)
            delete interrupted[pid]
        if (text !~ /^---/)
            last[pid] = i
        if (text ~ /^--- SIGTERM / && stop_at == "")
            stop_at = i
    }
}

# The lines to print, in order, in shown[1..shown_n]: for the session, the
# calls already in progress when it began that ended within it (a worker of
# a pool waiting in accept), then the calls made between the markers; for
# the stop, every line from the SIGTERM on.
function select_lines(    i) {
    for (i = 1; i <= n; i++)
        if (part == "session" && in_at[i] == 0 && done_at[i] == 1)
            shown[++shown_n] = i
    for (i = 1; i <= n; i++)
        if ((part == "session" && in_at[i] == 1) || (part == "stop" && stop_at != "" && i >= stop_at))
            shown[++shown_n] = i
}

END {
    select_lines()
    if (shown_n == 0 || (part == "session" && markers < 2)) {
        print "strace-session.awk: no " part " in this trace" > "/dev/stderr"
        exit 1
    }
    role[main] = "main"
    for (k = 1; k <= shown_n; k++) {
        i = shown[k]
        text = slot[i]
        if (unfinished[i])
            sub(/ = .*$/, " = ? (still waiting)", text)
        if (i in waiting)
            text = waiting[i] "...) = ? (still waiting)"
        if (i in resumed) {
            result = text
            sub(/^.* = /, " = ", result)
            text = resumed[i]
            sub(/ = .*$/, result, text)
        }
        name_task(owner[i])
        if (text ~ /^(clone|clone3|fork|vfork)\(.*= [0-9]+$/) {
            child = text
            sub(/.*= /, "", child)
            name_task(child)
        }
        who = (owner[i] in role) ? role[owner[i]] : "task ?"
        printf "%-9s %s\n", who, placeholders(text)
    }
}
