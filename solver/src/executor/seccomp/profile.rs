//! Docker's default seccomp profile as data, in the structure of moby's
//! `profiles/seccomp/default.json`: an allow list over a default of EPERM,
//! groups that apply only with a capability or on an architecture, and
//! argument filters (clone's namespace flags, socket families, personality).
//!
//! The only definition of the profile: [`super::resolve`] turns it into the
//! runtime spec's `linux.seccomp` for the OCI executor, and the native executor
//! compiles that same value (see [`super::bpf`]).

/// What a matching group does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Fail the call with this errno.
    Errno(u32),
}

/// A comparison of one syscall argument (libseccomp's `SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg & value == 0`: none of the masked bits set (moby writes this as
    /// `SCMP_CMP_MASKED_EQ` with the mask as value and 0 as second value).
    MaskedZero,
}

/// One argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Argument index (0-based).
    pub index: usize,
    /// The value compared (the mask for [`Op::MaskedZero`]).
    pub value: u64,
    /// The comparison.
    pub op: Op,
}

/// Conditions on the step and the host: every listed capability is held, the
/// host architecture is one of `arches` (Go's names, as moby writes them), the
/// kernel is at least `min_kernel`. Empty lists say nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct When {
    /// Capabilities (`CAP_…`).
    pub caps: &'static [&'static str],
    /// Architectures (`amd64`, `arm64`, …).
    pub arches: &'static [&'static str],
    /// Minimum kernel (major, minor).
    pub min_kernel: Option<(u32, u32)>,
}

/// One rule group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Syscall names.
    pub names: &'static [&'static str],
    /// What happens on a match.
    pub action: Action,
    /// Conditions on the arguments (all must hold).
    pub args: &'static [Arg],
    /// The group applies only when all of these hold.
    pub includes: When,
    /// The group is left out when any of these holds (a listed capability is
    /// held or the architecture is listed).
    pub excludes: When,
}

/// The errno of calls outside the allow list (EPERM).
pub const DEFAULT_ERRNO: u32 = 1;

/// Namespace flags of `clone` a step without CAP_SYS_ADMIN may not pass:
/// NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The host architecture (Go's name) and the libseccomp architectures its
/// filter covers: the native one first, then the compat ABIs its kernel runs.
pub const ARCH_MAP: &[(&str, &[&str])] = &[
    (
        "amd64",
        &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    ),
    ("arm64", &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ("s390x", &["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
    ("riscv64", &["SCMP_ARCH_RISCV64"]),
    ("ppc64le", &["SCMP_ARCH_PPC64LE"]),
];

const NONE: When = When {
    caps: &[],
    arches: &[],
    min_kernel: None,
};

const fn allow(names: &'static [&'static str]) -> Group {
    Group {
        names,
        action: Action::Allow,
        args: &[],
        includes: NONE,
        excludes: NONE,
    }
}

const fn with_cap(cap: &'static [&'static str], names: &'static [&'static str]) -> Group {
    Group {
        includes: When {
            caps: cap,
            arches: &[],
            min_kernel: None,
        },
        ..allow(names)
    }
}

const fn on_arch(arches: &'static [&'static str], names: &'static [&'static str]) -> Group {
    Group {
        includes: When {
            caps: &[],
            arches,
            min_kernel: None,
        },
        ..allow(names)
    }
}

const SYS_ADMIN: &[&str] = &["CAP_SYS_ADMIN"];

/// The profile, group by group in moby's order.
#[rustfmt::skip]
pub const GROUPS: &[Group] = &[
    allow(&[
        "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
        "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
        "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
        "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
        "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
        "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
        "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
        "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
        "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
        "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
        "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
        "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd",
        "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
        "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
        "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32",
        "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
        "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid",
        "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
        "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
        "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
        "io_submit", "io_uring_enter", "io_uring_register", "io_uring_setup", "ipc", "kill",
        "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
        "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
        "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
        "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
        "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
        "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
        "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget",
        "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at",
        "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause",
        "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
        "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
        "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
        "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
        "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
        "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
        "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
        "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
        "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64",
        "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
        "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
        "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
        "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
        "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
        "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
        "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
        "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
        "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
        "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
        "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
        "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill",
        "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
        "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
        "waitid", "waitpid", "write", "writev",
    ]),
    // Since 4.8 seccomp runs after ptrace, so a tracer cannot escape the filter.
    Group {
        includes: When {
            caps: &[],
            arches: &[],
            min_kernel: Some((4, 8)),
        },
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    },
    // Every socket family except AF_VSOCK (40).
    Group {
        args: &[Arg {
            index: 0,
            value: 40,
            op: Op::Ne,
        }],
        ..allow(&["socket"])
    },
    // PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26 and the query.
    Group { args: &[Arg { index: 0, value: 0, op: Op::Eq }], ..allow(&["personality"]) },
    Group { args: &[Arg { index: 0, value: 8, op: Op::Eq }], ..allow(&["personality"]) },
    Group { args: &[Arg { index: 0, value: 0x20000, op: Op::Eq }], ..allow(&["personality"]) },
    Group { args: &[Arg { index: 0, value: 0x20008, op: Op::Eq }], ..allow(&["personality"]) },
    Group { args: &[Arg { index: 0, value: 0xffff_ffff, op: Op::Eq }], ..allow(&["personality"]) },
    on_arch(&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    on_arch(
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    on_arch(&["amd64", "x32"], &["arch_prctl"]),
    on_arch(&["amd64", "x32", "x86"], &["modify_ldt"]),
    on_arch(
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    on_arch(&["riscv64"], &["riscv_flush_icache"]),
    with_cap(&["CAP_DAC_READ_SEARCH"], &["open_by_handle_at"]),
    with_cap(
        SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    // Without CAP_SYS_ADMIN, clone only without namespace flags (arg 0 but
    // on s390, where the flags are the second argument).
    Group {
        args: &[Arg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            op: Op::MaskedZero,
        }],
        excludes: When {
            caps: SYS_ADMIN,
            arches: &["s390", "s390x"],
            min_kernel: None,
        },
        ..allow(&["clone"])
    },
    Group {
        args: &[Arg {
            index: 1,
            value: CLONE_NAMESPACE_FLAGS,
            op: Op::MaskedZero,
        }],
        includes: When {
            caps: &[],
            arches: &["s390", "s390x"],
            min_kernel: None,
        },
        excludes: When {
            caps: SYS_ADMIN,
            arches: &[],
            min_kernel: None,
        },
        ..allow(&["clone"])
    },
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes
    // libc fall back to clone, whose flags are checked above.
    Group {
        action: Action::Errno(38),
        excludes: When {
            caps: SYS_ADMIN,
            arches: &[],
            min_kernel: None,
        },
        ..allow(&["clone3"])
    },
    with_cap(&["CAP_SYS_BOOT"], &["reboot"]),
    with_cap(&["CAP_SYS_CHROOT"], &["chroot"]),
    with_cap(
        &["CAP_SYS_MODULE"],
        &["delete_module", "init_module", "finit_module"],
    ),
    with_cap(&["CAP_SYS_PACCT"], &["acct"]),
    with_cap(
        &["CAP_SYS_PTRACE"],
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    with_cap(&["CAP_SYS_RAWIO"], &["iopl", "ioperm"]),
    with_cap(
        &["CAP_SYS_TIME"],
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    with_cap(&["CAP_SYS_TTY_CONFIG"], &["vhangup"]),
    with_cap(
        &["CAP_SYS_NICE"],
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    with_cap(&["CAP_SYSLOG"], &["syslog"]),
    with_cap(&["CAP_BPF"], &["bpf"]),
    with_cap(&["CAP_PERFMON"], &["perf_event_open"]),
];
