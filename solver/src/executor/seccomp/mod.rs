//! Docker's default seccomp profile for sandboxed steps.
//!
//! [`profile::GROUPS`] is resolved the way moby does for a container: the
//! filter covers the host's architecture and its compat ABIs (emulated
//! binaries run under qemu-user, whose syscalls are the host's), groups apply
//! according to the step's capabilities, the host architecture and kernel.
//! The result is the runtime spec's `linux.seccomp`; the native executor
//! compiles that same value with libseccomp ([`bpf`]), as runc and crun do.

pub mod bpf;
pub mod profile;

use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

use super::caps::DEFAULT_CAPS;
use profile::{Action, Group, Op, ARCH_MAP, DEFAULT_ERRNO, GROUPS};

/// The host as the profile's conditions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Go's name of the architecture (`amd64`, `arm64`, …).
    pub arch: &'static str,
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    /// This machine.
    pub fn current() -> Self {
        Host {
            arch: go_arch(std::env::consts::ARCH),
            kernel: kernel_version(),
        }
    }
}

/// Go's architecture name for Rust's.
pub fn go_arch(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The running kernel's (major, minor); (0, 0) when unknown, which leaves out
/// groups needing a minimum kernel (the safe side).
fn kernel_version() -> (u32, u32) {
    let Ok(uts) = nix::sys::utsname::uname() else {
        return (0, 0);
    };
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn applies(g: &Group, caps: &[&str], host: &Host) -> bool {
    let inc = &g.includes;
    let exc = &g.excludes;
    inc.caps.iter().all(|c| caps.contains(c))
        && (inc.arches.is_empty() || inc.arches.contains(&host.arch))
        && inc.min_kernel.is_none_or(|k| host.kernel >= k)
        && !exc.caps.iter().any(|c| caps.contains(c))
        && !exc.arches.contains(&host.arch)
}

fn arch(name: &str) -> Option<Arch> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

fn syscall(g: &Group) -> LinuxSyscall {
    let (action, errno_ret) = match g.action {
        Action::Allow => (LinuxSeccompAction::ScmpActAllow, None),
        Action::Errno(e) => (LinuxSeccompAction::ScmpActErrno, Some(e)),
    };
    let args: Vec<_> = g
        .args
        .iter()
        .map(|a| {
            LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .op(match a.op {
                    Op::Eq => LinuxSeccompOperator::ScmpCmpEq,
                    Op::Ne => LinuxSeccompOperator::ScmpCmpNe,
                    Op::MaskedZero => LinuxSeccompOperator::ScmpCmpMaskedEq,
                })
                .build()
                .unwrap_or_default()
        })
        .collect();
    let mut s = LinuxSyscall::default();
    s.set_names(g.names.iter().map(|n| n.to_string()).collect());
    s.set_action(action);
    s.set_errno_ret(errno_ret);
    s.set_args((!args.is_empty()).then_some(args));
    s
}

/// The profile for a step holding `caps` (`CAP_…` names) on `host`.
pub fn resolve(caps: &[&str], host: &Host) -> LinuxSeccomp {
    let architectures: Vec<Arch> = ARCH_MAP
        .iter()
        .find(|(a, _)| *a == host.arch)
        .map(|(_, arches)| arches.iter().filter_map(|a| arch(a)).collect())
        .unwrap_or_default();
    let syscalls: Vec<LinuxSyscall> = GROUPS
        .iter()
        .filter(|g| applies(g, caps, host))
        .map(syscall)
        .collect();
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActErrno);
    p.set_default_errno_ret(Some(DEFAULT_ERRNO));
    p.set_architectures((!architectures.is_empty()).then_some(architectures));
    p.set_syscalls(Some(syscalls));
    p
}

/// The profile of a sandboxed step (Docker's default capabilities) on this host.
pub fn sandbox_profile() -> &'static LinuxSeccomp {
    static PROFILE: OnceLock<LinuxSeccomp> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let caps: Vec<String> = DEFAULT_CAPS
            .iter()
            .map(|(n, _)| format!("CAP_{n}"))
            .collect();
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        resolve(&caps, &Host::current())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    fn amd64() -> Host {
        Host {
            arch: "amd64",
            kernel: (6, 1),
        }
    }

    #[test]
    fn sandbox_caps_deny_namespaces_and_mounts() {
        let p = resolve(&["CAP_CHOWN", "CAP_SYS_CHROOT"], &amd64());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        for denied in ["mount", "unshare", "setns", "keyctl", "umount2", "bpf"] {
            assert!(allowed(&p, denied).is_empty(), "{denied} is not allowed");
        }
        // clone only without namespace flags; clone3 gets ENOSYS.
        let clone = allowed(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = serde_json::to_value(&clone[0]).unwrap()["args"][0].clone();
        assert_eq!(
            arg,
            serde_json::json!({"index": 0, "value": 0x7E02_0000u64, "op": "SCMP_CMP_MASKED_EQ"})
        );
        let clone3 = serde_json::to_value(&allowed(&p, "clone3")[0]).unwrap();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
        assert_eq!(allowed(&p, "chroot").len(), 1, "CAP_SYS_CHROOT held");
        assert_eq!(allowed(&p, "arch_prctl").len(), 1);
        assert!(allowed(&p, "set_tls").is_empty(), "arm only");
        assert_eq!(allowed(&p, "personality").len(), 5);
        // ptrace since 4.8 (seccomp runs after the tracer), as Docker.
        assert_eq!(allowed(&p, "ptrace").len(), 1);
        let old = resolve(
            &[],
            &Host {
                kernel: (4, 4),
                ..amd64()
            },
        );
        assert!(allowed(&old, "ptrace").is_empty());
    }

    #[test]
    fn sys_admin_allows_namespaces_and_plain_clone() {
        let p = resolve(&["CAP_SYS_ADMIN"], &amd64());
        assert_eq!(allowed(&p, "mount").len(), 1);
        assert_eq!(allowed(&p, "unshare").len(), 1);
        let clone = allowed(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().is_none());
        assert!(allowed(&p, "clone3")
            .iter()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn arm64_host_covers_arm_and_s390_uses_second_clone_argument() {
        let p = resolve(
            &[],
            &Host {
                arch: "arm64",
                kernel: (6, 1),
            },
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        assert_eq!(allowed(&p, "set_tls").len(), 1);
        assert!(allowed(&p, "arch_prctl").is_empty());
        let s390 = resolve(
            &[],
            &Host {
                arch: "s390x",
                kernel: (6, 1),
            },
        );
        let clone = allowed(&s390, "clone");
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
    }

    #[test]
    fn sandbox_profile_is_for_this_host() {
        let p = sandbox_profile();
        assert!(allowed(p, "mount").is_empty());
        assert_eq!(allowed(p, "chown").len(), 1);
        assert!(p.architectures().as_ref().is_some_and(|a| !a.is_empty()));
    }
}
