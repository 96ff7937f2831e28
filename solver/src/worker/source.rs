//! Source ops: images (fetched by the builder, unpacked once), local
//! directories from the session, HTTP files and git repositories.

use super::{LocalWorker, Output};
use crate::llb::{SourceOp, Vertex};
use crate::scheduler::WorkerError;
use crate::snapshot::blobs::import_layer;
use crate::snapshot::Snapshot;

impl LocalWorker {
    pub(super) fn source(&self, vertex: &Vertex, src: &SourceOp) -> Result<Output, WorkerError> {
        match src.scheme() {
            "docker-image" => {
                let fetched = self.images.fetch(src.location(), vertex.platform())?;
                let mut snapshot = Snapshot::scratch();
                for (blob, diff_id) in &fetched.layers {
                    let record = import_layer(
                        &self.layers,
                        &self.content,
                        &self.cache,
                        blob.digest(),
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
            // HTTP and git sources are wired in with their fetchers (ops::source).
            other => Err(format!("unsupported source {other}://").into()),
        }
    }
}
