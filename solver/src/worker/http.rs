//! HTTP sources in the worker: resolved once per build (by the scheduler's
//! `pin`, before the cache lookup) against the state directory's HTTP cache,
//! then written into a fresh directory for the ops that read them.

use super::{LocalDir, LocalWorker, Output};
use crate::llb::{SourceOp, Vertex};
use crate::ops::source::http::HttpSource;
use crate::ops::source::http_cache::{CachedFile, Resolved};
use crate::scheduler::WorkerError;
use std::sync::Arc;

impl LocalWorker {
    /// The content of an HTTP source: from this build's earlier resolution, else
    /// revalidated or downloaded now (`--no-cache` skips the validators).
    pub(super) async fn resolve_http(
        &self,
        vertex: &Vertex,
        src: &SourceOp,
    ) -> Result<Resolved, WorkerError> {
        if let Some(r) = self.http_resolved(vertex) {
            return Ok(r);
        }
        let source = HttpSource::from_op(src)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let resolved = self
            .http
            .resolve(&client, &source, !vertex.metadata().ignore_cache)
            .await?;
        if let Ok(mut map) = self.http_resolved.lock() {
            map.insert(vertex.digest(), resolved.clone());
        }
        Ok(resolved)
    }

    /// What [`LocalWorker::resolve_http`] found for `vertex` in this build.
    pub(super) fn http_resolved(&self, vertex: &Vertex) -> Option<Resolved> {
        self.http_resolved
            .lock()
            .ok()
            .and_then(|m| m.get(&vertex.digest()).cloned())
    }

    /// A directory holding the file as the source op describes it (name, mode,
    /// owner, mtime).
    pub(super) fn materialize_http(
        &self,
        src: &SourceOp,
        file: &CachedFile,
    ) -> Result<Output, WorkerError> {
        let source = HttpSource::from_op(src)?;
        let dir = tempfile::Builder::new()
            .prefix("http-")
            .tempdir_in(&self.scratch)?;
        self.http.materialize(file, &source, dir.path())?;
        Ok(Output::Dir(LocalDir {
            root: dir.path().to_path_buf(),
            ignore: Default::default(),
            keep: Some(Arc::new(dir)),
            persistent: false,
        }))
    }
}
