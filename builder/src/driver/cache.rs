//! The build's side of the remote cache that is not the import or the export itself: a
//! `--cache-from` source dropped when its blobs prove unusable, and the imported blobs an
//! image pushed only to the cache's registry may list without downloading them.

use super::BuildRequest;
use kiln_solver::scheduler::WorkerError;
use kiln_solver::worker::LocalWorker;

/// A blob of a `--cache-from` source with `ignore-error=true` turned out unusable once the
/// build relied on it (a layer is fetched only when needed): the build starts again without
/// that source.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub(super) struct DropCacheSource {
    /// The source's position in `--cache-from`.
    pub(super) index: usize,
    /// What went wrong.
    pub(super) message: String,
}

/// The source of a [`WorkerError::CacheBlob`] when that source may be ignored.
pub(super) fn ignorable_cache_blob(req: &BuildRequest, e: &WorkerError) -> Option<DropCacheSource> {
    match e {
        WorkerError::CacheBlob { source_index, .. }
            if req
                .cache_from
                .get(*source_index)
                .is_some_and(|s| s.ignore_error) =>
        {
            Some(DropCacheSource {
                index: *source_index,
                message: crate::remote_cache::chain_text(e),
            })
        }
        _ => None,
    }
}

/// The blobs of lazily imported layers an image may list without having them here: when
/// every output only pushes (`store=false`) to the registry of an imported cache, whose
/// repository the push mounts them from (issue 14: a cache hit downloads nothing).
pub(super) fn remote_blobs(
    req: &BuildRequest,
    imported: Option<&crate::remote_cache::import::Imported>,
    worker: &LocalWorker,
) -> Option<std::collections::BTreeSet<kiln_oci::Digest>> {
    use crate::export::spec::OutputKind;
    let imported = imported?;
    // Every source a registry: a layout's blobs cannot be mounted.
    if imported.repositories.is_empty() || imported.repositories.len() != imported.loaded {
        return None;
    }
    let mountable = |name: &String| {
        kiln_oci::Reference::parse(name).is_ok_and(|r| {
            imported
                .repositories
                .iter()
                .any(|(_, s)| s.registry() == r.registry())
        })
    };
    let push_only = !req.outputs.is_empty()
        && req.outputs.iter().all(|o| {
            o.kind == OutputKind::Image
                && o.push()
                && !o.flag("store", true)
                && !o.flag("force-compression", false)
                && o.names.iter().all(mountable)
        });
    push_only.then(|| worker.imported_blobs().into_iter().collect())
}
