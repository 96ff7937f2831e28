/* ptrace-probe.c - what ptrace(2) may do inside a RUN step, as "key=value" lines for
 * sandbox-probe.sh (busybox has no strace): attach to a child of its own (Docker's default
 * seccomp profile allows ptrace on kernels >= 4.8, and a process may trace its own
 * children without CAP_SYS_PTRACE), and attach to the pid given as argv[1] (a process
 * outside the step: the test's own, root with every capability), which must fail
 * (EPERM without CAP_SYS_PTRACE, or ESRCH where a pid namespace hides it).
 * Built static by builder/tests/faults_sandbox.rs. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

/* errno as its name, for the few ptrace returns that matter here. */
static const char *err_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ESRCH: return "ESRCH";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    default: return strerror(e);
    }
}

/* Attaches to pid and detaches again; prints key=allowed or key=<errno name>. */
static void attach(const char *key, pid_t pid) {
    if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) == 0) {
        waitpid(pid, NULL, 0);
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
        printf("%s=allowed\n", key);
    } else {
        printf("%s=%s\n", key, err_name(errno));
    }
}

int main(int argc, char **argv) {
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        pause();
        _exit(0);
    }
    attach("ptrace-child", child);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    if (argc > 1) {
        attach("ptrace-outside", (pid_t)atoi(argv[1]));
    }
    return 0;
}
