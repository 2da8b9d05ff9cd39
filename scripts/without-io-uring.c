/*
 * without-io-uring COMMAND [ARG...]: runs COMMAND where io_uring cannot be
 * set up, as in a container under Docker's default seccomp profile:
 * io_uring_setup() fails with EPERM, in COMMAND and in everything it
 * starts (a seccomp filter is inherited across fork and exec, and cannot
 * be removed). Every other system call is allowed.
 *
 * tests/io_uring.bats runs chapter 10's server under it, to see the server
 * say why it cannot run; `scripts/without-io-uring tests/run.sh 10-io-uring`
 * shows what the whole suite does in such a container (it skips).
 *
 * No privilege is needed: PR_SET_NO_NEW_PRIVS (no setuid program run
 * later can gain privileges) lets any process install a filter. The filter
 * is a small classic BPF program the kernel runs at every system call; it
 * looks only at the call's number. (A filter meant to protect something
 * would check seccomp_data.arch first: the same number means another call
 * on another ABI. Here a wrong guess costs nothing but a wrong test.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sock_filter filter[] = {
        /* load the system call's number */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* io_uring_setup: fail it with EPERM; anything else: allow */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};

    if (argc < 2) {
        fprintf(stderr, "usage: without-io-uring COMMAND [ARG...]\n");
        return 2;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) < 0) {
        fprintf(stderr, "without-io-uring: cannot install a seccomp filter: %s\n", strerror(errno));
        return 1;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "without-io-uring: %s: %s\n", argv[1], strerror(errno));
    return 127;
}
