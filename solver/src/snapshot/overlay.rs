//! Mounting a snapshot chain with overlayfs: the layers as lower dirs, a fresh
//! upper dir that becomes the new layer, and a work dir.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sysmount::{cstr, sys_mount, unmount};

/// Errors while mounting or unmounting an overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A path overlayfs cannot take in its option string.
    #[error("overlay path {0} contains ',', ':' or a NUL byte")]
    BadPath(PathBuf),
    /// The mount syscall(s) failed.
    #[error("mounting overlay at {target}: {source}")]
    Mount {
        /// Where it was to be mounted.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The bottom of a chain too long for overlayfs could not be flattened.
    #[error(transparent)]
    Flatten(#[from] super::flatten::FlattenError),
    /// Unmounting failed.
    #[error("unmounting {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An overlay to mount: `lowers` ordered topmost first (overlayfs' order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Layer directories, topmost first. Empty means the upper dir alone.
    pub lowers: Vec<PathBuf>,
    /// The directory receiving every change (the new layer).
    pub upper: PathBuf,
    /// overlayfs' scratch directory, on the same filesystem as `upper`.
    pub work: PathBuf,
}

/// Options every kiln overlay gets: no inode index, no redirect or metacopy
/// xattrs, so the upper dir stays a plain diff that tars into an OCI layer.
const FIXED_OPTIONS: &[(&str, &str)] = &[
    ("index", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
];

/// The same inside a user namespace (rootless): overlayfs there keeps its xattrs
/// under `user.overlay.` (`userxattr`), which refuses to follow redirects.
const USERNS_OPTIONS: &[(&str, &str)] = &[
    ("index", "off"),
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
];

/// The flag (option without value) selecting `user.overlay.` xattrs.
const USERXATTR: &str = "userxattr";

/// The fixed options and flags for this process's namespace.
fn fixed() -> (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
) {
    if crate::userns::inside() {
        (USERNS_OPTIONS, &[USERXATTR])
    } else {
        (FIXED_OPTIONS, &[])
    }
}

/// `volatile` skips the syncfs of the whole upper filesystem at unmount and
/// makes fsync in the step a no-op (as Buildah does for build containers): a
/// step's upper dir is thrown away when the step fails, and a successful one
/// is synced once before a cache record refers to it (`executor::world::sync_layer`, from the
/// worker's layer syncer).
/// Kernels before 5.10 refuse it; the mount is retried without.
pub const VOLATILE: &str = "volatile";

/// Most lower dirs overlayfs stacks (`OVL_MAX_STACK`); a longer chain has its bottom
/// flattened for the mount (see [`super::flatten`]).
pub const MAX_LOWERS: usize = 500;

/// Longest option string `mount(2)` accepts (one page, with room for the NUL).
const MAX_LEGACY_DATA: usize = 4000;

impl Overlay {
    /// The legacy `mount(2)` option string.
    pub fn options(&self) -> Result<String, OverlayError> {
        self.options_with(false)
    }

    fn options_with(&self, volatile: bool) -> Result<String, OverlayError> {
        for p in self.lowers.iter().chain([&self.upper, &self.work]) {
            check_path(p)?;
        }
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        );
        let (options, flags) = fixed();
        for (k, v) in options {
            opts.push_str(&format!(",{k}={v}"));
        }
        for flag in flags.iter().chain(volatile.then_some(&VOLATILE)) {
            opts.push(',');
            opts.push_str(flag);
        }
        Ok(opts)
    }

    /// Mounts the overlay at `target` (an existing directory). With no lower
    /// layers the upper dir is bind-mounted instead, which is the same view.
    /// Unmounting syncs the upper dir's filesystem.
    pub fn mount(&self, target: &Path) -> Result<OverlayMount, OverlayError> {
        self.mount_with(target, false)
    }

    /// Mounts like [`Overlay::mount`] but `volatile` (see [`VOLATILE`]): for
    /// upper dirs that are thrown away, or synced by the caller when kept.
    pub fn mount_volatile(&self, target: &Path) -> Result<OverlayMount, OverlayError> {
        self.mount_with(target, true)
    }

    fn mount_with(&self, target: &Path, volatile: bool) -> Result<OverlayMount, OverlayError> {
        if self.lowers.len() > MAX_LOWERS {
            return self.mount_flattened(target, volatile);
        }
        let err = |source| OverlayError::Mount {
            target: target.to_path_buf(),
            source,
        };
        if self.lowers.is_empty() {
            check_path(&self.upper)?;
            sys_mount(Some(&self.upper), target, None, libc::MS_BIND, None).map_err(err)?;
        } else {
            // A volatile mount leaves `work/incompat/volatile` behind, and
            // overlayfs refuses the work dir until it is gone. It only guards
            // against reuse after a crash; an upper dir from a crashed step is
            // never reused as a layer.
            let _ = std::fs::remove_dir_all(self.work.join("work").join("incompat"));
            let mut result = Ok(());
            let attempts: &[bool] = if volatile { &[true, false] } else { &[false] };
            for &volatile in attempts {
                let opts = self.options_with(volatile)?;
                result = if opts.len() <= MAX_LEGACY_DATA {
                    sys_mount(
                        Some(Path::new("overlay")),
                        target,
                        Some("overlay"),
                        0,
                        Some(&opts),
                    )
                } else {
                    self.mount_fsconfig(target, volatile)
                };
                match &result {
                    Err(e) if volatile && e.raw_os_error() == Some(libc::EINVAL) => continue,
                    _ => break,
                }
            }
            result.map_err(err)?;
        }
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
            flat: None,
        })
    }

    /// Mounts a chain longer than overlayfs stacks: its bottom merged into a throwaway
    /// directory beside the work dir, removed with the mount. (RUN steps never get here:
    /// the worker keeps flattened chains, see [`super::flatten::FlatStore`].)
    fn mount_flattened(&self, target: &Path, volatile: bool) -> Result<OverlayMount, OverlayError> {
        let flat = self.work.with_file_name("flat-lowers");
        let _ = std::fs::remove_dir_all(&flat);
        let keep = MAX_LOWERS - 1;
        let bottom: Vec<PathBuf> = self.lowers[keep..].iter().rev().cloned().collect();
        let mut mount = (|| {
            super::flatten::flatten_into(&flat, &bottom)?;
            let mut lowers = self.lowers[..keep].to_vec();
            lowers.push(flat.clone());
            Overlay {
                lowers,
                ..self.clone()
            }
            .mount_with(target, volatile)
        })()
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&flat);
        })?;
        mount.flat = Some(flat);
        Ok(mount)
    }

    /// The new mount API takes one `lowerdir+` per layer, so chains of any
    /// length fit (Linux 6.8+).
    fn mount_fsconfig(&self, target: &Path, volatile: bool) -> io::Result<()> {
        let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
        if fs < 0 {
            return Err(io::Error::last_os_error());
        }
        let fs = Fd(fs as i32);
        let set = |key: &str, value: &Path| -> io::Result<()> {
            let k = cstr(key.as_bytes())?;
            let v = cstr(value.as_os_str().as_bytes())?;
            let r = unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.0,
                    FSCONFIG_SET_STRING,
                    k.as_ptr(),
                    v.as_ptr(),
                    0,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        for l in &self.lowers {
            set("lowerdir+", l)?;
        }
        set("upperdir", &self.upper)?;
        set("workdir", &self.work)?;
        let (options, flags) = fixed();
        for (k, v) in options {
            set(k, Path::new(v))?;
        }
        for flag in flags.iter().chain(volatile.then_some(&VOLATILE)) {
            let k = cstr(flag.as_bytes())?;
            let r = unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.0,
                    FSCONFIG_SET_FLAG,
                    k.as_ptr(),
                    std::ptr::null::<libc::c_void>(),
                    0,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.0,
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.0, FSMOUNT_CLOEXEC, 0) };
        if mnt < 0 {
            return Err(io::Error::last_os_error());
        }
        let mnt = Fd(mnt as i32);
        let t = cstr(target.as_os_str().as_bytes())?;
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.0,
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// An owned file descriptor closed on drop.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

/// A mounted overlay; unmounted (lazily) when dropped.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
    /// A flattened bottom made for this mount alone, removed after it.
    flat: Option<PathBuf>,
}

impl OverlayMount {
    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure (a busy mount is detached).
    pub fn unmount(mut self) -> Result<(), OverlayError> {
        self.mounted = false;
        unmount(&self.target).map_err(|source| OverlayError::Unmount {
            target: self.target.clone(),
            source,
        })
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = unmount(&self.target);
        }
        if let Some(flat) = self.flat.take() {
            let _ = std::fs::remove_dir_all(flat);
        }
    }
}

fn check_path(p: &Path) -> Result<(), OverlayError> {
    let b = p.as_os_str().as_bytes();
    if b.iter().any(|c| matches!(c, b',' | b':' | 0)) {
        return Err(OverlayError::BadPath(p.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_lowers_topmost_first() {
        let o = Overlay {
            lowers: vec!["/l/top".into(), "/l/base".into()],
            upper: "/u".into(),
            work: "/w".into(),
        };
        assert_eq!(
            o.options().unwrap(),
            "lowerdir=/l/top:/l/base,upperdir=/u,workdir=/w,index=off,redirect_dir=off,metacopy=off"
        );
        assert!(o.options_with(true).unwrap().ends_with(",volatile"));
        let bad = Overlay {
            lowers: vec!["/a:b".into()],
            ..o
        };
        assert!(matches!(bad.options(), Err(OverlayError::BadPath(_))));
    }

    /// Needs root: a chain too long for mount(2)'s one-page option string goes
    /// through fsconfig, and whiteouts land in the upper dir.
    #[test]
    fn long_chains_mount_through_fsconfig() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (it mounts overlayfs)");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        for i in 0..120 {
            let l = dir.path().join(format!(
                "layer-with-a-long-name-to-overflow-the-page-{i:03}"
            ));
            std::fs::create_dir(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), "x").unwrap();
            lowers.insert(0, l);
        }
        let (upper, work, target) = (
            dir.path().join("u"),
            dir.path().join("w"),
            dir.path().join("m"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir(d).unwrap();
        }
        let o = Overlay {
            lowers,
            upper: upper.clone(),
            work,
        };
        assert!(o.options().unwrap().len() > MAX_LEGACY_DATA);
        let m = o.mount_volatile(&target).unwrap();
        assert!(target.join("f0").exists() && target.join("f119").exists());
        std::fs::remove_file(target.join("f7")).unwrap();
        m.unmount().unwrap();
        let wh = std::fs::symlink_metadata(upper.join("f7")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    }

    /// Needs root: a chain deeper than overlayfs stacks mounts with its bottom
    /// flattened for the mount alone, whiteouts applied.
    #[test]
    fn chains_over_the_stack_limit_mount_with_a_flattened_bottom() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        for i in 0..MAX_LOWERS + 10 {
            let l = dir.path().join(format!("l{i}"));
            std::fs::create_dir(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), "x").unwrap();
            lowers.insert(0, l);
        }
        // A whiteout in the kept top for a file of the flattened bottom.
        let c = std::ffi::CString::new(lowers[0].join("f3").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
        let tmp = dir.path().join("tmp");
        let (upper, work, target) = (tmp.join("u"), tmp.join("w"), dir.path().join("m"));
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        let o = Overlay {
            lowers,
            upper,
            work,
        };
        let m = o.mount(&target).unwrap();
        assert!(target.join("f0").exists() && target.join(format!("f{}", MAX_LOWERS + 9)).exists());
        assert!(!target.join("f3").exists());
        assert!(tmp.join("flat-lowers").is_dir());
        m.unmount().unwrap();
        assert!(!tmp.join("flat-lowers").exists(), "removed with the mount");
    }
}
