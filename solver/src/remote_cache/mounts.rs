//! Cache-mount contents in the remote cache: one layer blob per cache id, restored into
//! the cache-mount store of the importing machine.
//!
//! A mount travels by its store id (what [`CacheMounts`] is keyed by), only its main
//! directory (a `private` user's numbered siblings stay local) and only when it has
//! content: an empty mount restores to nothing. A restore fills only a missing or empty
//! directory, since local content is newer than any import.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::format::CacheBlob;
use super::RemoteCacheError;
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
    let opts = DiffOptions {
        compression,
        level,
        source_date_epoch: None,
    };
    let made = write_layer(lease.dir(), content, &opts).map_err(BlobError::from)?;
    Ok(Some(CacheBlob {
        digest: made.blob.digest,
        size: made.blob.size,
        media_type: compression.oci_media_type().to_string(),
        diff_id: made.diff_id,
    }))
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
    mounts.install(&lease, id, staging.dir()).map_err(io_err)?;
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
