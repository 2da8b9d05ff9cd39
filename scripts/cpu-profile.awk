# scripts/cpu-profile.awk: `perf script` samples with their call stacks ->
# the parts of scripts/cpu-profile.sh, as "part<TAB>share %<TAB>µs per echo"
# lines in a fixed order; -v cpu: the server's CPU µs per echo. The five
# functions most often left in "other" go to stderr, so that what the map
# misses is seen.
#
# A sample is charged to the first function on its stack, from the leaf
# up, that names a part. Functions that serve everyone (a spinlock, a list,
# reading the clock) name none: their time goes to whoever called them.
# Sampling on a VM lands many samples just where a function re-enables
# interrupts (_raw_spin_unlock_irqrestore), so the leaf alone would mislead.

# part SYMBOL DSO: the part a function names, or "" for none.
function part(sym, dso) {
    if (dso !~ /kernel/) return "user space"
    if (sym ~ /^(__)?io_|^io_uring|_io_uring/) return "io_uring"
    if (sym ~ /^(__)?ep_|epoll/) return "epoll"
    if (sym ~ /^(entry_SYSCALL|do_syscall|syscall_|x64_sys_call|exit_to_user|__x64_sys_)/) return "system calls"
    if (sym ~ /^(__)?(fget|fdget|fput|fd_install)/) return "descriptors"
    if (sym ~ /^(__)?(tcp|bbr|cubictcp|ip|ipv4|inet|sock|sk_|skb|__skb|kfree_skb|consume_skb|dev_|netif|napi|net_|loopback|process_backlog|nf_|validate_xmit|csum|__sys_(send|recv)|_copy_(to|from)_iter|security_sock|release_sock|lock_sock|do_softirq|handle_softirqs|__local_bh_enable)/) return "TCP/IP"
    if (sym ~ /^(__)?(schedule|try_to_wake_up|wake_up|ttwu|enqueue_|dequeue_|pick_next|finish_task_switch|__switch_to|switch_mm|select_task_rq|hrtimer_|prepare_to_wait|finish_wait|autoremove_wake|default_wake)/) return "wake-ups"
    if (sym ~ /^(__)?(kmem_cache|kmalloc|__kmalloc|kfree|slab|___slab|__alloc_pages|alloc_pages|free_pages|__free_pages|folio|memcg|mem_cgroup|obj_cgroup|refill_stock|__memcg|__mod_memcg)/) return "memory"
    return ""
}

function charge(   p) {
    if (frames == 0) return
    samples++
    for (i = 1; i <= frames; i++)
        if ((p = part(sym[i], dso[i])) != "") { total[p]++; return }
    total["other"]++
    other[sym[1]]++
}

/^[^ \t]/ { charge(); frames = 0; next }          # a sample's header
/^[ \t]+[0-9a-f]+ / {                              # one frame: address symbol+offset (dso)
    frames++
    sym[frames] = $2; sub(/\+0x[0-9a-f]+$/, "", sym[frames])
    dso[frames] = $NF
}
END {
    charge()
    n = split("TCP/IP,system calls,descriptors,epoll,io_uring,wake-ups,memory,user space,other", order, ",")
    for (i = 1; i <= n; i++) {
        share = samples ? 100 * total[order[i]] / samples : 0
        printf "%s\t%.1f\t%.2f\n", order[i], share, share * cpu / 100
    }
    for (s in other) printf "%.1f %% %s\n", samples ? 100 * other[s] / samples : 0, s | "sort -rn | head -5 | sed 's/^/    other: /' >&2"
}
