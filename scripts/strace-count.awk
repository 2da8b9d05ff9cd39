# scripts/strace-count.awk: the table of scripts/strace-compare.sh.
#   awk -v names="ROW ROW..." -f scripts/strace-count.awk NOTES SESSION...
# NOTES is scripts/strace-notes.txt; each SESSION a file written by
# scripts/strace-session.sh, one per name, in the same order.
#
# A row per call (its variants on one row), in the order the calls first
# appear; a cell is the count in that session, by name when a variant other
# than the row's was used ("2 accept4" on the accept row). Then the calls
# per echoed line: those the serving task made after sending the greeting,
# up to and including the echo of "three", divided by 3; and per
# connection: all the others. (10 makes no sendto: its replies leave in
# the io_uring_enter calls that submit; the first after the greeting's
# getpid() carries the greeting, the third after that the echo of "three".)
# A call still waiting when the session ended
# belongs to the next one and is not counted. With -v scenario=sleep or
# flood (not echo), the total only: there are no echoes to divide by.

# The notes: variants and what the call does.
FILENAME == ARGV[1] {
    if (/^#/ || NF == 0)
        next
    k = split($1, variant, "/")
    for (i = 1; i <= k; i++)
        family[variant[i]] = variant[1]
    note[variant[1]] = $0
    sub(/^[^ ]+ +/, "", note[variant[1]])
    next
}

FNR == 1 {
    col++
    greeted = 0
    echoed = 0
    asked_pid = 0
    submits = 0
}

{
    who = substr($0, 1, 10)
    text = substr($0, 11)
    if (text !~ /^[a-z_0-9]+\(/ || text ~ /= \? \(still waiting\)$/)
        next
    call = text
    sub(/\(.*/, "", call)
    row = (call in family) ? family[call] : call
    if (!(row in seen)) {
        seen[row] = 1
        order[++rows] = row
    }
    count[row, col]++
    by_name[row, col, call]++
    if (!((row, col, call) in named)) {
        named[row, col, call] = 1
        names_used[row, col] = names_used[row, col] " " call
    }
    total[col]++
    # The echo phase: in the task that greeted, after the greeting, up to
    # the echo of the last line.
    if (greeted && !echoed && who == server[col])
        per_echo[col]++
    if (text ~ /^sendto\([0-9]+, "hello /) {
        greeted = 1
        server[col] = who
    }
    if (text ~ /^sendto\([0-9]+, "three\\n"/)
        echoed = 1
    if (text ~ /^getpid\(/)
        asked_pid = 1
    if (text ~ /^io_uring_enter\([0-9]+, [1-9]/ && asked_pid) {
        if (!greeted) {
            greeted = 1
            server[col] = who
        } else if (++submits == 3) {
            echoed = 1
        }
    }
}

# A count, or counts by name where a variant other than the row's was used
# ("2 accept4", "1 accept+1 accept4").
function cell(r, c,    k, list, i, s) {
    if (!count[r, c])
        return "-"
    if (names_used[r, c] == " " r)
        return count[r, c]
    k = split(names_used[r, c], list, " ")
    for (i = 1; i <= k; i++)
        s = s (i > 1 ? "+" : "") by_name[r, c, list[i]] " " list[i]
    return s
}

END {
    cols = split(names, name, " ")
    w = 22
    for (c = 1; c <= cols; c++)
        if (length(name[c]) + 2 > w)
            w = length(name[c]) + 2
    printf "%-24s", "call"
    for (c = 1; c <= cols; c++)
        printf "%" w "s", name[c]
    print "   what differs"
    for (r = 1; r <= rows; r++) {
        row = order[r]
        differs = 0
        printf "%-24s", row
        for (c = 1; c <= cols; c++) {
            printf "%" w "s", cell(row, c)
            if (cell(row, c) != cell(row, 1))
                differs = 1
        }
        if (differs)
            printf "   %s", (row in note) ? note[row] : "man 2 " row
        print ""
    }
    printf "%-24s", "total"
    for (c = 1; c <= cols; c++)
        printf "%" w "d", total[c]
    print ""
    if (scenario != "" && scenario != "echo")
        exit
    printf "%-24s", "per echoed line"
    for (c = 1; c <= cols; c++)
        printf "%" w "s", sprintf("%.0f", per_echo[c] / 3)
    print "   the calls one echo costs this server, with one client"
    printf "%-24s", "per connection"
    for (c = 1; c <= cols; c++)
        printf "%" w "d", total[c] - per_echo[c]
    print "   all the others: accepting, greeting, quitting, closing"
}
