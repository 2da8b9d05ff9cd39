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
#     made: the order reads as the program ran;
#   - the pid column becomes the task's role: main (the process strace
#     started), thread 1, thread 2... (clone with CLONE_THREAD), child 1...
#     (clone or fork without it), numbered in the order they appear;
#   - a pid or tid in a result, a signal or the greeting becomes that role,
#     <main> or <thread 1>; any other pid becomes PID;
#   - ports become PORT, pointers ADDR, the user id UID, CPU times T;
#   - strace's padding before " = " is squeezed to one space;
#   - the markers' own traces are left out: the call the end marker
#     interrupted (where the server waits for what comes next) ends in
#     "= ? (still waiting)" instead of strace's ERESTART or EINTR; a poll()
#     the first marker interrupted, which the kernel resumes as
#     restart_syscall(), is shown as the poll() it is.

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
    return n
}

# Replace every whole number equal to a known task's pid in a context where
# strace prints pids, by "<role>" (or PID, when the task has no role here).
function name_pids(s,    out, rest, found, start, end, i) {
    out = ""
    rest = s
    while (match(rest, /(= |si_pid=|pid=|tid=|wait4\(|\[)[0-9]+/)) {
        found = substr(rest, RSTART, RLENGTH)
        start = RSTART
        end = RSTART + RLENGTH
        match(found, /[0-9]+$/)
        i = substr(found, RSTART)
        found = substr(found, 1, RSTART - 1)
        if (i in role)
            found = found "<" role[i] ">"
        else if (found ~ /pid=$|tid=$|wait4\($/)
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

# A new task: the result of clone, clone3, fork or vfork.
function note_new_task(text,    pid) {
    if (text !~ /^(clone|clone3|fork|vfork)\(/ || text !~ /= [0-9]+$/)
        return
    pid = text
    sub(/.*= /, "", pid)
    if (text ~ /CLONE_THREAD/)
        role[pid] = "thread " (++threads)
    else
        role[pid] = "child " (++children)
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
        delete pending[pid]
        last[pid] = i
    } else if (text ~ /^--- SIGWINCH /) {
        markers++
        marker[markers] = n + 1 # the first line after the marker
        # The markers interrupt the call the server was waiting in.
        if (slot[last[pid]] ~ /= (\? ERESTART|-1 EINTR)/) {
            if (markers == 1)
                interrupted[pid] = slot[last[pid]]
            else
                unfinished[last[pid]] = 1
        }
    } else {
        i = store(pid, text)
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

END {
    if (part == "session") {
        from = marker[1]
        to = marker[2] - 1
    } else {
        from = stop_at
        to = n
    }
    if (from == "" || to == "" || from > to) {
        print "strace-session.awk: no " part " in this trace" > "/dev/stderr"
        exit 1
    }
    role[main] = "main"
    for (i = from; i <= to; i++) {
        text = slot[i]
        if (unfinished[i])
            sub(/ = .*$/, " = ? (still waiting)", text)
        if (i in resumed) {
            result = text
            sub(/^.* = /, " = ", result)
            text = resumed[i]
            sub(/ = .*$/, result, text)
        }
        note_new_task(text)
        who = (owner[i] in role) ? role[owner[i]] : "task ?"
        printf "%-9s %s\n", who, placeholders(text)
    }
}
