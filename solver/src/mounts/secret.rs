//! Secret files: written to a private tmpfs on the host and bind-mounted
//! read-only at their targets, so they never touch a disk or the upper dir.
//! Once the step's own mount namespace holds its binds, the host's view can go
//! ([`SecretFiles::release_host_view`] for the native executor, [`release_hook`]
//! for OCI runtimes): the files then live only as long as the step, even when
//! kiln itself is killed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sysmount::{sys_mount, unmount};

/// The secrets of one step, held on a tmpfs that is unmounted on drop.
#[derive(Debug)]
pub struct SecretFiles {
    dir: PathBuf,
    mounted: AtomicBool,
    count: usize,
}

impl SecretFiles {
    /// Mounts a fresh tmpfs (mode 0700) at `dir`, creating the directory.
    pub fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        sys_mount(
            Some(Path::new("tmpfs")),
            dir,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("mode=0700,size=16m"),
        )?;
        Ok(SecretFiles {
            dir: dir.to_path_buf(),
            mounted: AtomicBool::new(true),
            count: 0,
        })
    }

    /// Writes one secret file with its mode and owner; returns its host path.
    pub fn add(&mut self, data: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("secret-{}", self.count));
        self.count += 1;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(data)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        Ok(path)
    }

    /// Unmounts the host's tmpfs (and removes its directory). Mounts a step's
    /// namespace already made from it keep the files alive until that
    /// namespace goes; idempotent.
    pub fn release_host_view(&self) -> io::Result<()> {
        if self.mounted.swap(false, Ordering::SeqCst) {
            // An OCI runtime's hook may have unmounted it already; still mounted,
            // the directory cannot be removed, which reports it.
            let _ = unmount(&self.dir);
            fs::remove_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// An OCI `poststart` hook that unmounts the host's view of the secrets tmpfs at
/// `dir` once the step's process runs, in this process' mount namespace (the
/// runtime may run in one of its own). None when `timeout`, `nsenter` or `umount`
/// is missing: the view then goes when the step ends.
///
/// The bound is coreutils' `timeout`, not the hook's own `timeout` field: with
/// that field crun waits for the hook's SIGCHLD, which merges with the step's
/// when a short step exits first on a loaded machine, and crun then fails the
/// step with "timeout expired" although the hook is done.
pub fn release_hook(dir: &Path) -> Option<oci_spec::runtime::Hook> {
    let find = |name: &str| {
        ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    let (timeout, nsenter, umount) = (find("timeout")?, find("nsenter")?, find("umount")?);
    let dir = dir.to_str()?;
    let args = vec![
        "timeout".to_string(),
        "10".to_string(),
        nsenter.to_str()?.to_string(),
        format!("--mount=/proc/{}/ns/mnt", std::process::id()),
        "--".to_string(),
        umount.to_str()?.to_string(),
        "-l".to_string(),
        dir.to_string(),
    ];
    oci_spec::runtime::HookBuilder::default()
        .path(timeout)
        .args(args)
        .build()
        .ok()
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        let _ = self.release_host_view();
    }
}
