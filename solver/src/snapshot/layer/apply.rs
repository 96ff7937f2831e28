//! Layer tar → directory. Honours OCI whiteouts (`.wh.<name>`) and opaque directories
//! (`.wh..wh..opq`), either by deleting (flattening onto a rootfs) or by writing overlayfs
//! whiteouts (unpacking a layer on its own, to serve as an overlay lowerdir). Entries are
//! confined to the destination: `..` components, writes through absolute symlinks and
//! relative symlinks that leave the destination are refused.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use kiln_oci::Digest;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::compression::{decompress, Compression};
use super::pax::XATTR_PREFIX;
use super::{is_overlay_xattr, LayerError, OPAQUE_MARKER, WHITEOUT_PREFIX};
use kiln_oci::HashingReader;

/// What to do with whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what they hide (applying onto a directory that holds the lower layers).
    Delete,
    /// Write overlayfs whiteouts (char device 0/0, `trusted.overlay.opaque=y`): the directory
    /// is one layer that overlayfs stacks over the lower ones. Needs CAP_MKNOD/CAP_SYS_ADMIN.
    Overlay,
}

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// Restore owners from the tar (root only; otherwise files belong to the caller).
    pub same_owner: bool,
    /// Fail with [`LayerError::TooLarge`] once the uncompressed tar, or the files it
    /// holds (sparse ones at their full size), exceed this many bytes.
    pub max_size: Option<u64>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            same_owner: nix::unistd::geteuid().is_root(),
            max_size: None,
        }
    }
}

/// What applying a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Compression detected from the magic bytes.
    pub compression: Compression,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
}

/// Applies the layer read from `reader` (gzip, zstd or plain tar) onto `dest`.
pub fn apply_layer<R: Read>(
    reader: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<AppliedLayer, LayerError> {
    let exceeded = std::cell::Cell::new(false);
    let limit = opts.max_size.unwrap_or(u64::MAX);
    let result = apply_limited(reader, dest, opts, limit, &exceeded);
    // The tar reader rewraps I/O errors: the flag says which one was the limit.
    if exceeded.get() {
        return Err(LayerError::TooLarge { limit });
    }
    result
}

/// A reader that fails once more than `left` bytes came through, raising `exceeded`.
struct Limited<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a std::cell::Cell<bool>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(io::Error::other("layer size limit exceeded"))
            }
        }
    }
}

fn apply_limited<R: Read>(
    reader: R,
    dest: &Path,
    opts: &ApplyOptions,
    limit: u64,
    exceeded: &std::cell::Cell<bool>,
) -> Result<AppliedLayer, LayerError> {
    fs::create_dir_all(dest).map_err(|e| LayerError::io("create", dest, e))?;
    let (compression, plain) =
        decompress(reader).map_err(|e| LayerError::io("read layer for", dest, e))?;
    let plain = Limited {
        inner: plain,
        left: limit,
        exceeded,
    };
    let mut archive = tar::Archive::new(HashingReader::new(plain));
    let mut state = Applier {
        dest,
        opts,
        created: HashSet::new(),
        dirs: Vec::new(),
        written: 0,
    };
    let entries = archive
        .entries()
        .map_err(|e| LayerError::io("read layer for", dest, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LayerError::Tar {
            dest: dest.to_path_buf(),
            source: e,
        })?;
        state.apply_entry(entry)?;
    }
    // Directory mtimes last: creating their children changed them.
    for (path, mtime) in state.dirs.iter().rev() {
        set_mtime(path, *mtime)?;
    }
    let mut hashing = archive.into_inner();
    // Read the end-of-archive padding too: the diffID covers the whole stream.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| LayerError::io("read layer for", dest, e))?;
    let (_, diff_id, uncompressed_size) = hashing.finish();
    Ok(AppliedLayer {
        diff_id,
        compression,
        uncompressed_size,
    })
}

struct Applier<'a> {
    dest: &'a Path,
    opts: &'a ApplyOptions,
    /// Host paths this layer created (an opaque marker or whiteout never removes them).
    created: HashSet<PathBuf>,
    /// Directories and their mtimes, applied at the end.
    dirs: Vec<(PathBuf, i64)>,
    /// Bytes of the files written so far: a sparse entry's holes count too, so a
    /// small tar of a huge sparse file meets the size limit before it is written out.
    written: u64,
}

/// Splits a tar path into checked components (`.` and empty dropped, `..` refused).
fn clean_components(raw: &[u8], entry: &str) -> Result<Vec<OsString>, LayerError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(LayerError::UnsafePath {
                    entry: entry.to_string(),
                    reason: "path contains `..`".into(),
                })
            }
            Component::Prefix(_) => {
                return Err(LayerError::UnsafePath {
                    entry: entry.to_string(),
                    reason: "path has a prefix".into(),
                })
            }
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> Result<(), LayerError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| LayerError::io("remove", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| LayerError::io("remove", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LayerError::io("stat", path, e)),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), LayerError> {
    let ts = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| LayerError::io("set mtime of", path, e.into()))
}

impl Applier<'_> {
    /// Resolves the parent directory `comps` inside `dest`, creating missing directories and
    /// following relative symlinks that stay inside `dest`.
    fn resolve_dir(&mut self, comps: &[OsString], entry: &str) -> Result<PathBuf, LayerError> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        let unsafe_path = |reason: String| LayerError::UnsafePath {
            entry: entry.to_string(),
            reason,
        };
        while let Some(c) = queue.pop_front() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if resolved.pop().is_none() {
                    return Err(unsafe_path(
                        "a symlink in its path leads outside the destination".into(),
                    ));
                }
                continue;
            }
            let mut here = self.dest.to_path_buf();
            here.extend(&resolved);
            here.push(&c);
            match fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => resolved.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(unsafe_path("too many levels of symlinks".into()));
                    }
                    let target =
                        fs::read_link(&here).map_err(|e| LayerError::io("readlink", &here, e))?;
                    if target.is_absolute() {
                        return Err(unsafe_path(format!(
                            "its parent {} is an absolute symlink to {}",
                            here.strip_prefix(self.dest).unwrap_or(&here).display(),
                            target.display()
                        )));
                    }
                    for t in target.components().rev() {
                        match t {
                            Component::Normal(n) => queue.push_front(n.to_os_string()),
                            Component::ParentDir => queue.push_front("..".into()),
                            _ => {}
                        }
                    }
                }
                Ok(_) => {
                    return Err(unsafe_path(format!(
                        "its parent {} is not a directory",
                        here.strip_prefix(self.dest).unwrap_or(&here).display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&here).map_err(|e| LayerError::io("create", &here, e))?;
                    fs::set_permissions(&here, fs::Permissions::from_mode(0o755))
                        .map_err(|e| LayerError::io("chmod", &here, e))?;
                    self.created.insert(here);
                    resolved.push(c);
                }
                Err(e) => return Err(LayerError::io("stat", &here, e)),
            }
        }
        let mut out = self.dest.to_path_buf();
        out.extend(&resolved);
        Ok(out)
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let raw_path = entry.path_bytes().into_owned();
        let name_for_errors = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = clean_components(&raw_path, &name_for_errors)?;
        let Some((file_name, parent)) = comps.split_last() else {
            // The root itself (`./`): the destination keeps its own metadata.
            return Ok(());
        };
        let parent_dir = self.resolve_dir(parent, &name_for_errors)?;
        let name_bytes = file_name.as_bytes();

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&parent_dir);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError::UnsafePath {
                    entry: name_for_errors,
                    reason: "malformed whiteout".into(),
                });
            }
            return self.whiteout(&parent_dir.join(hidden));
        }

        let target = parent_dir.join(file_name);
        let header = entry.header().clone();
        let mode = header.mode().map_err(|e| self.tar_err(e))? & 0o7777;
        // Some writers leave owner and time fields blank; that means 0, as for GNU tar.
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
        let xattrs = read_xattrs(&mut entry).map_err(|e| self.tar_err(e))?;

        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target)?;
                        fs::create_dir(&target)
                            .map_err(|e| LayerError::io("create", &target, e))?;
                    }
                    Err(_) => {
                        fs::create_dir(&target)
                            .map_err(|e| LayerError::io("create", &target, e))?;
                    }
                }
                self.dirs.push((target.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                // The entry's size is the file's, holes included (the tar crate reads them
                // as zeros).
                self.written = self.written.saturating_add(entry.size());
                if let Some(limit) = self.opts.max_size.filter(|l| self.written > *l) {
                    return Err(LayerError::TooLarge { limit });
                }
                remove_any(&target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|e| LayerError::io("create", &target, e))?;
                io::copy(&mut entry, &mut f).map_err(|e| LayerError::io("write", &target, e))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::UnsafePath {
                        entry: name_for_errors.clone(),
                        reason: "symlink without target".into(),
                    })?
                    .into_owned();
                remove_any(&target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .map_err(|e| LayerError::io("symlink", &target, e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::UnsafePath {
                        entry: name_for_errors.clone(),
                        reason: "hard link without target".into(),
                    })?
                    .into_owned();
                let link_comps = clean_components(&link, &name_for_errors)?;
                let Some((link_name, link_parent)) = link_comps.split_last() else {
                    return Err(LayerError::UnsafePath {
                        entry: name_for_errors,
                        reason: "hard link to the root".into(),
                    });
                };
                let source = self
                    .resolve_dir(link_parent, &name_for_errors)?
                    .join(link_name);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(LayerError::UnsafePath {
                            entry: name_for_errors,
                            reason: format!(
                                "hard link target {} is missing or a directory",
                                String::from_utf8_lossy(&link)
                            ),
                        })
                    }
                }
                if source != target {
                    remove_any(&target)?;
                    fs::hard_link(&source, &target)
                        .map_err(|e| LayerError::io("link", &target, e))?;
                }
                self.created.insert(target);
                // A hard link shares the inode: metadata is the source's.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                remove_any(&target)?;
                let kind_flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                nix::sys::stat::mknod(&target, kind_flag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| LayerError::io("mknod", &target, e.into()))?;
            }
            other => {
                return Err(LayerError::UnsupportedEntry {
                    entry: name_for_errors,
                    kind: format!("{other:?}"),
                })
            }
        }
        self.created.insert(target.clone());
        self.set_metadata(&target, kind, mode, uid, gid, &xattrs)?;
        if kind != tar::EntryType::Directory {
            set_mtime(&target, mtime)?;
        }
        Ok(())
    }

    fn tar_err(&self, source: io::Error) -> LayerError {
        LayerError::Tar {
            dest: self.dest.to_path_buf(),
            source,
        }
    }

    fn set_metadata(
        &self,
        target: &Path,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), LayerError> {
        if self.opts.same_owner {
            let uid = u32::try_from(uid).map(Uid::from_raw).ok();
            let gid = u32::try_from(gid).map(Gid::from_raw).ok();
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                target,
                uid,
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| LayerError::io("chown", target, e.into()))?;
        }
        for (name, value) in xattrs {
            match xattr::set(target, name, value) {
                Ok(()) => {}
                // A filesystem without xattr support loses them, as with Docker.
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && !self.opts.same_owner => {}
                Err(e) => return Err(LayerError::io("set xattr on", target, e)),
            }
        }
        // chmod after chown: chown clears set-uid/gid bits.
        if kind != tar::EntryType::Symlink {
            fs::set_permissions(target, fs::Permissions::from_mode(mode))
                .map_err(|e| LayerError::io("chmod", target, e))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, hidden: &Path) -> Result<(), LayerError> {
        if self.created.contains(hidden) {
            // Whiteouts only hide lower layers, never this layer's own entries.
            return Ok(());
        }
        remove_any(hidden)?;
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            nix::sys::stat::mknod(hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| LayerError::io("create whiteout", hidden, e.into()))?;
            self.created.insert(hidden.to_path_buf());
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), LayerError> {
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => xattr::set(dir, crate::userns::opaque_xattr(), b"y")
                .map_err(|e| LayerError::io("mark opaque", dir, e)),
            WhiteoutMode::Delete => {
                let entries =
                    fs::read_dir(dir).map_err(|e| LayerError::io("read directory", dir, e))?;
                for child in entries {
                    let child = child.map_err(|e| LayerError::io("read directory", dir, e))?;
                    let path = child.path();
                    if !self.created.contains(&path) {
                        remove_any(&path)?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn read_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                // A layer must not forge overlayfs' own attributes (opaque, redirect).
                if !is_overlay_xattr(name) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}
