//! Source ops: images (fetched by the builder, unpacked once), local
//! directories from the session, HTTP files and git repositories.

use super::{LocalDir, LocalWorker, Output};
use crate::llb::{SourceOp, Vertex};
use crate::ops::source::git::{checkout, GitSource};
use crate::scheduler::WorkerError;
use crate::snapshot::blobs::import_layer;
use crate::snapshot::Snapshot;
use std::sync::Arc;

impl LocalWorker {
    pub(super) fn source(&self, vertex: &Vertex, src: &SourceOp) -> Result<Output, WorkerError> {
        match src.scheme() {
            "docker-image" | "oci-layout" => {
                // A layout's image keeps its scheme so the fetcher reads the layout.
                let reference = match src.scheme() {
                    "oci-layout" => src.identifier.as_str(),
                    _ => src.location(),
                };
                let fetched = self.images.fetch(reference, vertex.platform())?;
                let mut snapshot = Snapshot::scratch();
                for (blob, diff_id) in &fetched.layers {
                    let record = import_layer(
                        &self.layers,
                        &self.content,
                        self.cache.meta(),
                        &blob.digest,
                        diff_id,
                    )?;
                    snapshot.layers.push(record.id);
                }
                Ok(Output::Snapshot(snapshot))
            }
            "local" => {
                let name = src.location();
                self.session
                    .locals
                    .get(name)
                    .cloned()
                    .map(Output::Dir)
                    .ok_or_else(|| -> WorkerError {
                        format!("no local source named {name:?} in this build").into()
                    })
            }
            "http" | "https" => {
                let resolved = match self.http_resolved(vertex) {
                    Some(r) => r,
                    None => tokio::runtime::Handle::current()
                        .block_on(self.resolve_http(vertex, src))?,
                };
                self.materialize_http(src, &resolved.file)
            }
            "git" => {
                let source = GitSource::from_op(src)?;
                let dir = tempfile::Builder::new()
                    .prefix("git-")
                    .tempdir_in(&self.scratch)?;
                let dest = dir.path().join("checkout");
                checkout(&source, &dest)?;
                Ok(Output::Dir(LocalDir {
                    root: dest,
                    ignore: Default::default(),
                    keep: Some(Arc::new(dir)),
                    persistent: false,
                }))
            }
            other => Err(format!("unsupported source {other}://").into()),
        }
    }
}
