//! The OCI runtime's binary as a sealed in-memory copy.
//!
//! crun and runc guard against a container rewriting the host's runtime binary
//! through `/proc/self/exe` (CVE-2019-5736): unless the binary they run is
//! already a memfd sealed against every change, each `run` copies or bind-mounts
//! itself and executes itself again, a second exec and dynamic link per step
//! (about a quarter of crun's CPU time per step here). One sealed copy made
//! per process and executed through `/proc/self/fd` gives the runtime the
//! protection it wants without that second start: nothing can write to a
//! memfd carrying these seals, not even its creator.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{MemfdFlags, SealFlags};

/// The seals the runtimes check for: all four, so the copy can never change.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// A sealed memfd holding a copy of an executable.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// Copies `binary` into a new memfd and seals it. The fd is close-on-exec:
    /// a child sees it only through the path it executes.
    pub fn copy_of(binary: &Path) -> io::Result<Self> {
        let fd = rustix::fs::memfd_create(
            "kiln-sealed-runtime",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let mut copy = File::from(fd);
        io::copy(&mut File::open(binary)?, &mut copy)?;
        let fd = OwnedFd::from(copy);
        rustix::fs::fcntl_add_seals(&fd, SEALS)?;
        Ok(SealedExe { fd })
    }

    /// The path that executes the copy from this process or a child forked
    /// from it (the fd survives fork and closes only at exec).
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// What to execute for `binary`: its sealed copy, made on first use and kept
/// for the life of the process, or `binary` itself where no memfd can be made
/// (the runtime then protects itself as before).
pub fn program_for(binary: &Path) -> PathBuf {
    static COPIES: Mutex<BTreeMap<PathBuf, Option<SealedExe>>> = Mutex::new(BTreeMap::new());
    let mut copies = COPIES.lock().unwrap_or_else(|e| e.into_inner());
    let copy = copies.entry(binary.to_path_buf()).or_insert_with(|| {
        SealedExe::copy_of(binary)
            .inspect_err(
                |e| tracing::debug!(binary = %binary.display(), error = %e, "no sealed copy"),
            )
            .ok()
    });
    match copy {
        Some(c) => c.exec_path(),
        None => binary.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn the_copy_runs_and_cannot_be_changed() {
        let sealed = SealedExe::copy_of(Path::new("/bin/busybox")).unwrap();
        let out = Command::new(sealed.exec_path())
            .arg0("busybox")
            .args(["echo", "sealed"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sealed\n");
        let seals = rustix::fs::fcntl_get_seals(&sealed.fd).unwrap();
        assert_eq!(seals, SEALS);
        // Neither a write through a new descriptor nor a resize gets through.
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(sealed.exec_path());
        match reopened {
            Ok(mut f) => {
                use std::io::Write;
                assert!(f.write_all(b"x").is_err());
                assert!(f.set_len(0).is_err());
            }
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        }
    }
}
