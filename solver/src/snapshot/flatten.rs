//! Flattened layer chains. overlayfs stacks at most 500 lower dirs (`OVL_MAX_STACK`),
//! takes them in a one-page option string through `mount(2)`, and every lookup in the
//! merged tree visits each lower dir that has the parent directory: a chain of hundreds
//! of RUN steps would make each step slower than the last, then fail to mount at all.
//! So the bottom of a long chain is merged once into one plain directory (the files
//! hard-linked from the layers where the filesystem allows, whiteouts and opaque
//! directories applied) and mounted in its place. The layers themselves are untouched:
//! an exported image keeps every layer, as BuildKit's does.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::layers::{LayerStore, PendingLayer};
use super::overlay::Overlay;
use super::view::overlay_for;
use super::Snapshot;

/// Chains up to this many layers are mounted as they are; longer ones have their bottom
/// flattened in multiples of it, so a step's overlay never has more lower dirs than this.
pub const DEFAULT_STRIDE: usize = 32;

/// The environment variable overriding [`DEFAULT_STRIDE`] (a tuning knob for benchmarks).
pub const STRIDE_ENV: &str = "KILN_FLATTEN_STRIDE";

/// Why a chain could not be flattened.
#[derive(Debug, thiserror::Error)]
#[error("flattening the layer chain: {op} {}: {source}", path.display())]
pub struct FlattenError {
    /// What was being done.
    op: &'static str,
    /// Where.
    path: PathBuf,
    /// Why.
    #[source]
    source: io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FlattenError + 'a {
    move |source| FlattenError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The flattened chains of a state directory, each made once and kept under the id of
/// the layers it holds (a cache: [`FlatStore::discard_all`] may drop it at any time no
/// build runs, e.g. on prune, since its hard links keep removed layers' files alive).
#[derive(Debug, Clone)]
pub struct FlatStore {
    dir: PathBuf,
    stride: usize,
}

impl FlatStore {
    /// The store in `dir` (created on first use), flattening every [`DEFAULT_STRIDE`]
    /// layers, or every `$KILN_FLATTEN_STRIDE` when that is set to a number.
    pub fn new(dir: impl Into<PathBuf>) -> FlatStore {
        let stride = std::env::var(STRIDE_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_STRIDE);
        FlatStore {
            dir: dir.into(),
            stride: 0,
        }
        .with_stride(stride)
    }

    /// Flattens every `stride` layers instead (at least 2).
    pub fn with_stride(mut self, stride: usize) -> FlatStore {
        self.stride = stride.max(2);
        self
    }

    /// The overlay of `snapshot` with `pending` receiving changes, as
    /// [`overlay_for`] makes it, but with at most `stride` lower dirs: the bottom of a
    /// longer chain is one flattened directory.
    pub fn overlay_for(
        &self,
        layers: &LayerStore,
        snapshot: &Snapshot,
        pending: &PendingLayer,
    ) -> Result<Overlay, FlattenError> {
        let chain = &snapshot.layers;
        let flat_len = if chain.len() > self.stride {
            chain.len() / self.stride * self.stride
        } else {
            0
        };
        let top = Snapshot {
            layers: chain[flat_len..].to_vec(),
        };
        let mut overlay = overlay_for(layers, &top, pending);
        if flat_len > 0 {
            overlay.lowers.push(self.flat(layers, chain, flat_len)?);
        }
        Ok(overlay)
    }

    /// The flattened directory of `chain[..len]`, made when missing: from the one of
    /// `chain[..len - stride]` when that exists, else from the layers alone.
    fn flat(
        &self,
        layers: &LayerStore,
        chain: &[super::LayerId],
        len: usize,
    ) -> Result<PathBuf, FlattenError> {
        let dest = self.dir.join(chain_key(&chain[..len]));
        if dest.is_dir() {
            return Ok(dest);
        }
        let below = len
            .checked_sub(self.stride)
            .filter(|&b| b > 0)
            .map(|b| self.dir.join(chain_key(&chain[..b])))
            .filter(|p| p.is_dir());
        let (mut sources, from) = match below {
            Some(p) => (vec![p], len - self.stride),
            None => (Vec::new(), 0),
        };
        sources.extend(chain[from..len].iter().map(|id| layers.path(id)));
        fs::create_dir_all(&self.dir).map_err(err("create", &self.dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".flat-")
            .tempdir_in(&self.dir)
            .map_err(err("create a temporary directory in", &self.dir))?;
        let merged = tmp.path().join("m");
        flatten_into(&merged, &sources)?;
        match fs::rename(&merged, &dest) {
            Ok(()) => {}
            // Another step or build made the same one meanwhile: theirs is as good.
            Err(_) if dest.is_dir() => {}
            Err(e) => return Err(err("rename into", &dest)(e)),
        }
        Ok(dest)
    }

    /// Removes every flattened chain (prune: nothing may be using them).
    pub fn discard_all(&self) -> io::Result<()> {
        crate::trash::discard(&self.dir)
    }
}

/// The name of a flattened chain: a hash of its layer ids, bottom first.
fn chain_key(chain: &[super::LayerId]) -> String {
    let mut h = Sha256::new();
    for id in chain {
        h.update(id.as_str().as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..20])
}

/// Merges the overlay lower dirs `sources` (bottom first) into the new directory
/// `dest`, as overlayfs would show them: whiteouts remove what is below them, opaque
/// directories hide what is below them, the topmost entry of a path wins. Non-directories
/// are hard-linked from their source (copied where the filesystem refuses the link);
/// directories are made anew with their topmost copy's owner, mode, xattrs and times.
/// `dest` holds no whiteouts or overlay xattrs: it is meant as the bottom lower dir.
pub fn flatten_into(dest: &Path, sources: &[PathBuf]) -> Result<(), FlattenError> {
    fs::create_dir(dest).map_err(err("create", dest))?;
    // Each directory of `dest` (relative path) → its topmost copy in the sources.
    let mut dirs: HashMap<PathBuf, PathBuf> = HashMap::new();
    for src in sources {
        merge_layer(dest, src, &mut dirs)?;
    }
    for (rel, src) in &dirs {
        let target = dest.join(rel);
        // Gone or replaced by a non-directory in a higher layer.
        if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let meta = fs::symlink_metadata(src).map_err(err("stat", src))?;
        copy_metadata(src, &target, &meta)?;
    }
    Ok(())
}

/// Applies one lower dir onto `dest`.
fn merge_layer(
    dest: &Path,
    src: &Path,
    dirs: &mut HashMap<PathBuf, PathBuf>,
) -> Result<(), FlattenError> {
    // Pre-order: a directory comes before its entries, so an opaque one is emptied in
    // `dest` before this layer's own entries land in it.
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(src).to_path_buf();
            err("walk", &path)(e.into())
        })?;
        let rel = entry
            .path()
            .strip_prefix(src)
            .expect("walkdir yields paths under its root");
        let target = dest.join(rel);
        let meta = entry.metadata().map_err(|e| {
            let path = entry.path().to_path_buf();
            err("stat", &path)(e.into())
        })?;
        let ft = meta.file_type();
        let existing = fs::symlink_metadata(&target).ok();
        if ft.is_char_device() && meta.rdev() == 0 {
            // A whiteout: what is below is gone.
            if let Some(m) = existing {
                remove(&target, m.is_dir())?;
            }
        } else if ft.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {
                    if !rel.as_os_str().is_empty() && is_opaque(entry.path()) {
                        remove(&target, true)?;
                        fs::create_dir(&target).map_err(err("create", &target))?;
                    }
                }
                Some(_) => {
                    remove(&target, false)?;
                    fs::create_dir(&target).map_err(err("create", &target))?;
                }
                None => fs::create_dir(&target).map_err(err("create", &target))?,
            }
            dirs.insert(rel.to_path_buf(), entry.path().to_path_buf());
        } else {
            if let Some(m) = existing {
                remove(&target, m.is_dir())?;
            }
            link_or_copy(entry.path(), &target, &meta)?;
        }
    }
    Ok(())
}

fn remove(path: &Path, dir: bool) -> Result<(), FlattenError> {
    if dir {
        fs::remove_dir_all(path).map_err(err("remove", path))
    } else {
        fs::remove_file(path).map_err(err("remove", path))
    }
}

/// Whether a directory of a lower dir hides the directories below it.
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

/// overlayfs' own attributes, which mean something only where overlayfs put them.
fn is_overlay_xattr(name: &std::ffi::OsStr) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"trusted.overlay.") || n.starts_with(b"user.overlay.")
}

/// A hard link to `src` at `dst`; a copy when the filesystem refuses the link (another
/// filesystem, the inode's link limit, a protected hard link).
fn link_or_copy(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), FlattenError> {
    match fs::hard_link(src, dst) {
        Ok(()) => return Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EMLINK | libc::EPERM)
            ) => {}
        Err(e) => return Err(err("link", dst)(e)),
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(err("read link", src))?;
        std::os::unix::fs::symlink(target, dst).map_err(err("create symlink", dst))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(err("copy to", dst))?;
    } else {
        let path = std::ffi::CString::new(dst.as_os_str().as_bytes())
            .map_err(|_| err("create", dst)(io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
        let rc = unsafe { libc::mknod(path.as_ptr(), meta.mode(), meta.rdev()) };
        if rc != 0 {
            return Err(err("create", dst)(io::Error::last_os_error()));
        }
    }
    copy_metadata(src, dst, meta)
}

/// Owner, mode (not for symlinks), xattrs (but overlayfs' own) and times of `src`.
fn copy_metadata(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), FlattenError> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(err("chown", dst))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
    }
    if let Ok(names) = xattr::list(src) {
        for name in names.filter(|n| !is_overlay_xattr(n)) {
            if let Ok(Some(value)) = xattr::get(src, &name) {
                xattr::set(dst, &name, &value).map_err(err("set an xattr of", dst))?;
            }
        }
    }
    let at = |secs, nsecs| nix::sys::time::TimeSpec::new(secs, nsecs);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &at(meta.atime(), meta.atime_nsec()),
        &at(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
    .map_err(err("set times of", dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn whiteout(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
        assert_eq!(
            rc,
            0,
            "mknod {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }

    /// The merged directory is what overlayfs shows for the same lower dirs.
    #[test]
    fn flattening_matches_the_overlay_of_the_same_layers() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mknod, mounts)"
        );
        let d = tempfile::tempdir().unwrap();
        let l = |n: &str| {
            let p = d.path().join(n);
            fs::create_dir(&p).unwrap();
            p
        };
        let (a, b, c) = (l("a"), l("b"), l("c"));
        fs::create_dir_all(a.join("etc/keep")).unwrap();
        fs::write(a.join("etc/keep/k"), "k").unwrap();
        fs::write(a.join("etc/passwd"), "root").unwrap();
        fs::create_dir_all(a.join("opq/old")).unwrap();
        fs::write(a.join("opq/old/x"), "x").unwrap();
        fs::write(a.join("gone"), "g").unwrap();
        fs::create_dir_all(a.join("dir-then-file/sub")).unwrap();
        symlink("/etc/passwd", a.join("link")).unwrap();
        // b: a whiteout, an opaque dir, a dir replaced by a file, a changed file.
        whiteout(&b.join("gone"));
        fs::create_dir(b.join("opq")).unwrap();
        xattr::set(b.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
        fs::write(b.join("opq/new"), "n").unwrap();
        fs::write(b.join("dir-then-file"), "f").unwrap();
        fs::create_dir(b.join("etc")).unwrap();
        fs::set_permissions(b.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(b.join("etc/passwd"), "root2").unwrap();
        // c: brings back a whited-out name as a directory.
        fs::create_dir_all(c.join("gone/again")).unwrap();
        let flat = d.path().join("flat");
        flatten_into(&flat, &[a.clone(), b.clone(), c.clone()]).unwrap();

        let (upper, work, merged) = (l("u"), l("w"), l("m"));
        let o = Overlay {
            lowers: vec![c, b, a.clone()],
            upper,
            work,
        };
        let m = o.mount(&merged).unwrap();
        assert_eq!(listing(&flat), listing(&merged));
        drop(m);
        assert_eq!(
            fs::read_to_string(flat.join("etc/passwd")).unwrap(),
            "root2"
        );
        assert!(!flat.join("opq/old").exists() && flat.join("opq/new").exists());
        let etc = fs::metadata(flat.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o7777, 0o750, "the topmost directory's mode");
        assert!(flat.join("gone/again").is_dir());
        assert_eq!(
            xattr::get(flat.join("opq"), "trusted.overlay.opaque").unwrap(),
            None
        );
        // Unchanged files are hard links to the layer's.
        let k = fs::metadata(flat.join("etc/keep/k")).unwrap();
        assert_eq!(k.ino(), fs::metadata(a.join("etc/keep/k")).unwrap().ino());
        assert_eq!(
            fs::read_link(flat.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    /// Every path with its type, mode, owner and content (or link target), sorted.
    fn listing(root: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let what = if m.is_file() {
                    fs::read_to_string(e.path()).unwrap()
                } else if m.file_type().is_symlink() {
                    fs::read_link(e.path()).unwrap().display().to_string()
                } else {
                    String::new()
                };
                format!("{rel} {:o} {}:{} {what}", m.mode(), m.uid(), m.gid())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn long_chains_mount_a_flattened_bottom_made_once() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts)"
        );
        let d = tempfile::tempdir().unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let store = FlatStore::new(d.path().join("flat")).with_stride(4);
        let mut snapshot = Snapshot::scratch();
        for i in 0..11 {
            let p = layers.begin().unwrap();
            fs::write(p.upper().join(format!("f{i}")), i.to_string()).unwrap();
            if i == 6 {
                whiteout(&p.upper().join("f2"));
            }
            snapshot = snapshot.with_layer(layers.commit(p).unwrap());
        }
        let pending = layers.begin().unwrap();
        // 5 layers: the bottom 4 flattened.
        let five = Snapshot {
            layers: snapshot.layers[..5].to_vec(),
        };
        let o = store.overlay_for(&layers, &five, &pending).unwrap();
        assert_eq!(o.lowers.len(), 2);
        let flat4 = o.lowers[1].clone();
        // 11 layers: the bottom 8 flattened (from the bottom 4's), the top 3 as they are.
        let o = store.overlay_for(&layers, &snapshot, &pending).unwrap();
        assert_eq!(o.lowers.len(), 4);
        assert_eq!(o.lowers[0], layers.path(&snapshot.layers[10]));
        let flat8 = o.lowers[3].clone();
        assert!(flat8.starts_with(d.path().join("flat")) && flat8 != flat4);
        let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(flat8.join("f0")),
            ino(layers.path(&snapshot.layers[0]).join("f0")),
            "linked, not copied"
        );
        assert!(flat4.join("f2").exists() && !flat8.join("f2").exists());
        // Made once: the same directory next time.
        let again = store.overlay_for(&layers, &snapshot, &pending).unwrap();
        assert_eq!(again.lowers, o.lowers);
        let target = d.path().join("m");
        fs::create_dir(&target).unwrap();
        let m = o.mount(&target).unwrap();
        for i in 0..11 {
            assert_eq!(target.join(format!("f{i}")).exists(), i != 2, "f{i}");
        }
        drop(m);
        // A short chain is mounted as is.
        let short = Snapshot {
            layers: snapshot.layers[..4].to_vec(),
        };
        let o = store.overlay_for(&layers, &short, &pending).unwrap();
        assert_eq!(o.lowers.len(), 4);
        assert!(o
            .lowers
            .iter()
            .all(|l| l.starts_with(d.path().join("layers"))));
        store.discard_all().unwrap();
        assert!(!d.path().join("flat").exists());
    }
}
