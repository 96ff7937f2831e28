//! Cache-mount contents in the remote cache: one layer blob per cache id, restored into
//! the cache-mount store of the importing machine.
//!
//! A mount travels by its store id (what [`CacheMounts`] is keyed by), only its main
//! directory (a `private` user's numbered siblings stay local) and only when it has
//! content: an empty mount restores to nothing. A restore fills only a missing or empty
//! directory, since local content is newer than any import.
//!
//! Tarring and compressing a large package cache costs seconds, and a CI runner restores,
//! then exports, the same mount on every job. So each export and restore remembers the
//! blob beside the mount (`<key>.export`) with a fingerprint of the tree's `lstat` data
//! (ctime included, which every change of a file's data or metadata moves); an export
//! whose fingerprint matches, and whose blob is still in the content store, reuses it.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::format::CacheBlob;
use super::RemoteCacheError;
use crate::atomic_file::write_atomic;
use crate::content::ContentStore;
use crate::llb::{Definition, MountKind, Op};
use crate::mounts::cache::{store_id, CacheMounts};
use crate::snapshot::blobs::BlobError;
use crate::snapshot::layer::{apply_layer, write_layer, ApplyOptions, Compression, DiffOptions};
use crate::snapshot::layers::LayerStoreError;

/// Writes the contents of cache mount `id` as a layer blob into the content store; `None`
/// when this machine has no such cache mount, or an empty one. The tar is deterministic:
/// an unchanged mount gives the same blob again (nothing new to upload).
pub fn export_mount(
    mounts: &CacheMounts,
    id: &str,
    content: &ContentStore,
    compression: Compression,
    level: Option<i32>,
) -> Result<Option<CacheBlob>, RemoteCacheError> {
    let io_err = |source| RemoteCacheError::Mount {
        id: id.to_string(),
        source,
    };
    // Shared, as a `shared` user: a `locked` or `private` user cannot write meanwhile.
    let lease = mounts.hold(id, false).map_err(io_err)?;
    if is_empty_or_missing(lease.dir()).map_err(io_err)? {
        return Ok(None);
    }
    // Taken before the tar: a change while tarring moves it, so the next export re-tars.
    let (print, newest) = fingerprint(lease.dir()).map_err(io_err)?;
    let memo = Memo::load(mounts, id);
    if let Some(blob) = memo.blob(&print, compression, content)? {
        return Ok(Some(blob));
    }
    let settled = settle(newest);
    let opts = DiffOptions {
        compression,
        level,
        source_date_epoch: None,
    };
    let made = write_layer(lease.dir(), content, &opts).map_err(BlobError::from)?;
    let blob = CacheBlob {
        digest: made.blob.digest,
        size: made.blob.size,
        media_type: compression.oci_media_type().to_string(),
        diff_id: made.diff_id,
    };
    if settled {
        memo.remember(mounts, id, print, blob.clone());
    }
    Ok(Some(blob))
}

/// Fills cache mount `id` from `blob` (in the content store); `false` when the local cache
/// mount already had content (it is newer than any import and is kept).
///
/// The blob comes from a registry: it is unpacked by the confined layer applier into a
/// temporary sibling, checked against its diffID, and only then renamed into place, all
/// under the mount's exclusive lock, so no user sees a partial or unverified restore.
pub fn restore_mount(
    mounts: &CacheMounts,
    id: &str,
    content: &ContentStore,
    blob: &CacheBlob,
) -> Result<bool, RemoteCacheError> {
    let io_err = |source| RemoteCacheError::Mount {
        id: id.to_string(),
        source,
    };
    let lease = mounts.hold(id, true).map_err(io_err)?;
    if !is_empty_or_missing(lease.dir()).map_err(io_err)? {
        return Ok(false);
    }
    let staging = Staging::new(mounts, id).map_err(io_err)?;
    let file = content.open_blob(&blob.digest)?;
    let opts = ApplyOptions {
        max_size: mounts.restore_limit(),
        ..ApplyOptions::default()
    };
    let applied = apply_layer(
        io::BufReader::with_capacity(256 * 1024, file),
        staging.dir(),
        &opts,
    )
    .map_err(BlobError::from)?;
    if applied.diff_id != blob.diff_id {
        return Err(BlobError::LayerStore(LayerStoreError::DiffIdMismatch {
            blob: blob.digest.to_string(),
            expected: blob.diff_id.to_string(),
            actual: applied.diff_id.to_string(),
        })
        .into());
    }
    // The tree as unpacked is what the blob holds: an unchanged mount re-exports it as is
    // (labelled with the compression found in it, not the one the config claims).
    let (print, newest) = fingerprint(staging.dir()).map_err(io_err)?;
    let settled = settle(newest);
    mounts.install(&lease, id, staging.dir()).map_err(io_err)?;
    if settled {
        let blob = CacheBlob {
            media_type: applied.compression.oci_media_type().to_string(),
            ..blob.clone()
        };
        Memo::default().remember(mounts, id, print, blob);
    }
    Ok(true)
}

/// The cache ids the RUN steps of `def` mount, each once (sorted), as the cache-mount
/// store names them. Mounts seeded `from=` another stage or the context are left out:
/// their directory is named by that source's local layers or path, which another machine
/// does not share.
pub fn cache_mount_ids(def: &Definition) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for (_, vertex) in def.vertices() {
        let Op::Exec(exec) = vertex.op() else {
            continue;
        };
        for m in exec.mounts.iter().filter(|m| m.input.is_none()) {
            if let MountKind::Cache(c) = &m.kind {
                let settings = c.settings_given.then_some((c.mode, c.uid, c.gid));
                ids.insert(store_id(&c.id, settings));
            }
        }
    }
    ids.into_iter().collect()
}

fn is_empty_or_missing(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// A ctime: seconds and nanoseconds since the epoch.
type Ctime = (i64, i64);

/// A digest of the `lstat` data of every entry under `dir` (names, type and mode, owner,
/// size, mtime, ctime, inode, links, device), and the newest ctime in it: equal only while
/// nothing in the tree changed, as a file's ctime moves with any change of its data or
/// metadata and cannot be set back (but see [`settle`]).
fn fingerprint(dir: &Path) -> io::Result<(String, Ctime)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut newest: Ctime = (i64::MIN, 0);
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::from)?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let bytes = rel.as_os_str().as_bytes();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        let m = entry.metadata().map_err(io::Error::from)?;
        newest = newest.max((m.ctime(), m.ctime_nsec()));
        for v in [
            u64::from(m.mode()),
            u64::from(m.uid()),
            u64::from(m.gid()),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
            m.ino(),
            m.dev(),
            m.nlink(),
            m.rdev(),
        ] {
            h.update(v.to_le_bytes());
        }
    }
    Ok((hex::encode(h.finalize()), newest))
}

/// Waits (a clock tick at most, in practice) until the kernel's coarse clock, which
/// stamps ctimes, is past `newest`: from then on any change gets a later ctime, so a tree
/// read after this cannot change without its fingerprint changing. `false` when the
/// clock does not get there (a ctime in the future): the fingerprint is then not to be
/// remembered.
fn settle(newest: Ctime) -> bool {
    for _ in 0..100 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } != 0 {
            return false;
        }
        if (now.tv_sec, now.tv_nsec) > newest {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// The blobs last made from (or restored into) a mount, with the tree's fingerprint then.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    fingerprint: String,
    /// At most one per compression.
    blobs: Vec<CacheBlob>,
}

impl Memo {
    fn path(mounts: &CacheMounts, id: &str) -> PathBuf {
        mounts
            .root()
            .join(format!("{}.export", CacheMounts::key(id)))
    }

    /// The memo of `id`; an empty one when there is none or it cannot be read (it is only
    /// a shortcut).
    fn load(mounts: &CacheMounts, id: &str) -> Memo {
        std::fs::read(Self::path(mounts, id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The remembered blob in `compression` when the tree is unchanged and the blob is
    /// still in the content store.
    fn blob(
        &self,
        print: &str,
        compression: Compression,
        content: &ContentStore,
    ) -> Result<Option<CacheBlob>, RemoteCacheError> {
        if self.fingerprint != print {
            return Ok(None);
        }
        for b in &self.blobs {
            if Compression::from_media_type(&b.media_type) == Some(compression)
                && content.size(&b.digest)? == Some(b.size)
            {
                return Ok(Some(b.clone()));
            }
        }
        Ok(None)
    }

    /// Records `blob` for the tree `print`, beside the blobs of other compressions made
    /// from the same tree. Failing to write it costs only a later re-tar.
    fn remember(mut self, mounts: &CacheMounts, id: &str, print: String, blob: CacheBlob) {
        if self.fingerprint != print {
            self.blobs.clear();
        }
        let compression = Compression::from_media_type(&blob.media_type);
        self.blobs
            .retain(|b| Compression::from_media_type(&b.media_type) != compression);
        self.blobs.push(blob);
        self.fingerprint = print;
        if let Ok(bytes) = serde_json::to_vec(&self) {
            let _ = write_atomic(&Self::path(mounts, id), mounts.root(), &bytes);
        }
    }
}

/// The directory a restore is unpacked into, beside the mount's; removed unless renamed
/// into place. Its name is fixed per id (the exclusive lock makes it ours), so one a
/// crash left behind is cleared by the next restore.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(mounts: &CacheMounts, id: &str) -> io::Result<Self> {
        let dir = mounts
            .root()
            .join(format!(".restore-{}", CacheMounts::key(id)));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)?;
        Ok(Staging { dir })
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Already renamed into place on success: nothing is left to remove then.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests;
