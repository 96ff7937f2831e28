//! Cache-mount contents in the remote cache: one layer blob per cache id, restored into
//! the cache-mount store of the importing machine.
//!
//! SKELETON (lead): the API is fixed; the bodies are being written (issue 14).

use super::format::CacheBlob;
use super::RemoteCacheError;
use crate::content::ContentStore;
use crate::llb::Definition;
use crate::mounts::cache::CacheMounts;
use crate::snapshot::layer::Compression;

/// Writes the contents of cache mount `id` as a layer blob into the content store; `None`
/// when this machine has no such cache mount.
pub fn export_mount(
    mounts: &CacheMounts,
    id: &str,
    content: &ContentStore,
    compression: Compression,
    level: Option<i32>,
) -> Result<Option<CacheBlob>, RemoteCacheError> {
    let _ = (mounts, id, content, compression, level);
    Ok(None)
}

/// Fills cache mount `id` from `blob` (in the content store); `false` when the local cache
/// mount already had content (it is newer than any import and is kept).
pub fn restore_mount(
    mounts: &CacheMounts,
    id: &str,
    content: &ContentStore,
    blob: &CacheBlob,
) -> Result<bool, RemoteCacheError> {
    let _ = (mounts, id, content, blob);
    Ok(false)
}

/// The cache ids the RUN steps of `def` mount, each once.
pub fn cache_mount_ids(def: &Definition) -> Vec<String> {
    let _ = def;
    Vec::new()
}
