//! Linux capabilities a step keeps: Docker's default set, or all of them when insecure.

/// Docker's default capability set (name without `CAP_`, number from `linux/capability.h`).
pub const DEFAULT_CAPS: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("NET_BIND_SERVICE", 10),
    ("NET_RAW", 13),
    ("SYS_CHROOT", 18),
    ("MKNOD", 27),
    ("AUDIT_WRITE", 29),
    ("SETFCAP", 31),
];

/// Every capability name up to `CAP_CHECKPOINT_RESTORE` (40), indexed by number.
pub const ALL_CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability names a step keeps. Insecure steps get every capability this
/// process may hold (a runtime cannot grant more than its own bounding set).
pub fn cap_names(insecure: bool) -> Vec<&'static str> {
    if insecure {
        let bounding = current_bounding();
        ALL_CAP_NAMES
            .iter()
            .enumerate()
            .filter(|(n, _)| bounding & (1u64 << n) != 0)
            .map(|(_, name)| *name)
            .collect()
    } else {
        DEFAULT_CAPS.iter().map(|(n, _)| *n).collect()
    }
}

/// This process' capability bounding set (`CapBnd` in /proc/self/status).
pub fn current_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The 64-bit capability mask a step keeps (for `capset`).
pub fn cap_mask(insecure: bool, last_cap: u32) -> u64 {
    if insecure {
        if last_cap >= 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        }
    } else {
        DEFAULT_CAPS.iter().fold(0, |m, (_, n)| m | (1u64 << n))
    }
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_matches_names() {
        for (name, n) in DEFAULT_CAPS {
            assert_eq!(ALL_CAP_NAMES[*n as usize], *name);
        }
        let m = cap_mask(false, 40);
        assert_eq!(m.count_ones() as usize, DEFAULT_CAPS.len());
        assert_eq!(m & (1 << 21), 0, "SYS_ADMIN must not be in the default set");
        assert_eq!(cap_mask(true, 40).count_ones(), 41);
    }
}
