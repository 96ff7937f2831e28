//! The cgroup layout an OCI runtime is shown.
//!
//! crun 1.8 refuses hosts with cgroup v1 hierarchies plus a v2 hierarchy at
//! `/sys/fs/cgroup/unified` that has controllers ("cgroups in hybrid mode not
//! supported, drop all controllers from cgroupv2"). Its global
//! `--cgroup-manager=disabled` does not help: the check runs before the manager
//! is chosen. Started in its own mount namespace with an empty tmpfs over
//! `/sys/fs/cgroup/unified`, crun sees a plain cgroup v1 host, which it fully
//! supports, and puts each container in its own v1 cgroups as runc does here.
//! The host's mounts are untouched: the namespace is private to that one crun
//! process and its container.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Where the hybrid layout keeps its v2 hierarchy.
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";

const TMPFS_MAGIC: i64 = 0x0102_1994;
const CGROUP2_MAGIC: i64 = 0x6367_7270;

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

/// Whether this host has the hybrid layout crun refuses: v1 hierarchies under
/// a tmpfs at `/sys/fs/cgroup` and a v2 hierarchy with controllers at
/// [`UNIFIED`].
pub fn hybrid_with_v2_controllers() -> bool {
    hybrid_with_v2_controllers_at(Path::new("/sys/fs/cgroup"))
}

fn hybrid_with_v2_controllers_at(root: &Path) -> bool {
    let unified = root.join("unified");
    fs_magic(root) == Some(TMPFS_MAGIC)
        && fs_magic(&unified) == Some(CGROUP2_MAGIC)
        && std::fs::read_to_string(unified.join("cgroup.controllers"))
            .map(|c| !c.trim().is_empty())
            .unwrap_or(false)
}

/// Makes `cmd` run in a new mount namespace where [`UNIFIED`] is an empty
/// tmpfs, so the program sees only the v1 hierarchies. crun still lists the v2
/// entry of /proc/self/cgroup and makes a directory for it there, which is
/// harmless in a tmpfs that lives as long as the namespace.
pub fn show_v1_only(cmd: &mut Command) {
    // Prepared before fork: the pre_exec hook may only make raw syscalls.
    let (Ok(target), Ok(tmpfs), Ok(root), Ok(opts)) = (
        CString::new(UNIFIED),
        CString::new("tmpfs"),
        CString::new("/"),
        CString::new("mode=755,size=64k"),
    ) else {
        return;
    };
    let hook = move || -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain syscalls on strings allocated before fork.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Slave: nothing mounted here propagates back to the host, while
            // the host's unmounts still reach this namespace where it shares.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr() as *const libc::c_void,
            ))
        }
    };
    // SAFETY: the hook only makes syscalls (see above).
    unsafe {
        cmd.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directories_are_not_hybrid() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("unified")).unwrap();
        std::fs::write(d.path().join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        assert!(!hybrid_with_v2_controllers_at(d.path()));
        assert!(!hybrid_with_v2_controllers_at(&d.path().join("missing")));
    }

    #[test]
    fn v1_view_hides_the_unified_hierarchy_from_the_child_only() {
        if unsafe { libc::geteuid() } != 0 || !hybrid_with_v2_controllers() {
            // Mount namespaces need root; the view only matters on hybrid hosts.
            return;
        }
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["stat", "-f", "-c", "%T", UNIFIED]);
        show_v1_only(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tmpfs");
        // The host still has its v2 hierarchy.
        assert!(hybrid_with_v2_controllers());
    }
}
