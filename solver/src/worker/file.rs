//! File ops (COPY, ADD, WORKDIR's mkdir, heredoc files): the actions run on
//! an overlay of the base with a fresh layer on top, or on an empty layer
//! when there is no base (`FROM scratch`, `COPY --link`).

use sha2::{Digest as _, Sha256};

use super::{LocalWorker, Output};
use crate::cache::{InputKey, KeyParts};
use crate::llb::{Definition, FileAction, FileOp, Op, Vertex, VertexRef};
use crate::ops::file::{
    apply_file_actions_with, FileOpError, FileOpOptions, Reuse, SourceRoot, Stream,
};
use crate::scheduler::WorkerError;
use crate::snapshot::blobs::BlobError;
use crate::snapshot::layers::PendingLayer;
use crate::snapshot::steps::{StepRecord, StepStore};
use crate::snapshot::view::SnapshotView;
use crate::snapshot::{BlobRecord, LayerId, LayerRecord, Snapshot};

impl LocalWorker {
    /// Remembers the identity of a copy step (see [`Reuse`]): its key's parts without the
    /// content of the inputs it copies from, nor the base unless `--chown` names are
    /// resolved there (a copied file's bytes and metadata follow from its source and the
    /// op alone; where it lands in the base is in its path).
    pub(super) fn remember_copy_step(&self, vertex: &Vertex, parts: &KeyParts) {
        let Op::File(op) = vertex.op() else { return };
        if !Reuse::applies_to(&op.actions) || vertex.metadata().ignore_cache {
            return;
        }
        let mut h = Sha256::new();
        h.update(b"kiln-copy-step-v1\0");
        h.update(parts.op.as_bytes());
        h.update([0]);
        h.update(parts.pin.as_deref().unwrap_or_default().as_bytes());
        let chown = op
            .actions
            .iter()
            .any(|a| matches!(a, FileAction::Copy(c) if c.owner.is_some()));
        for (i, input) in parts.inputs.iter().enumerate() {
            let users = op.users.unwrap_or(usize::MAX) == i || (op.users.is_none() && chown);
            match input {
                _ if op.base == Some(i) && !users => h.update([b'b']),
                InputKey::Key(k) => {
                    h.update([b'k']);
                    h.update(k.0);
                }
                // The `--chown` names' passwd and group files.
                InputKey::Content(c) if op.users == Some(i) => {
                    h.update([b'u']);
                    h.update(c.0);
                }
                InputKey::Content(_) => h.update([b'c']),
            }
        }
        if let Ok(mut steps) = self.copy_steps.lock() {
            steps.insert(vertex.digest(), h.finalize().into());
        }
    }

    /// The identity of the copy step `vertex` with these inputs: the remembered one and
    /// the host directories it copies from (two contexts are two steps).
    fn copy_step(&self, vertex: &Vertex, inputs: &[Output]) -> Option<[u8; 32]> {
        let known = *self.copy_steps.lock().ok()?.get(&vertex.digest())?;
        let mut h = Sha256::new();
        h.update(known);
        for input in inputs {
            if let Output::Dir(d) = input {
                h.update(d.root.as_os_str().as_encoded_bytes());
                h.update([0]);
            }
        }
        Some(h.finalize().into())
    }

    /// The previous result of a copy step: its layer's directory and record, when the
    /// layer is still here.
    fn previous_copy(
        &self,
        steps: &StepStore,
        step: &[u8; 32],
    ) -> Option<(std::path::PathBuf, StepRecord)> {
        let record = steps.load(step)?;
        let id = record.layer.as_ref().map(LayerId::as_str)?;
        // A streamed layer not unpacked has no files to link.
        let id = LayerId::parse(id).filter(|id| self.layers.path(id).is_dir())?;
        Some((self.layers.path(&id), record))
    }

    /// Notes which copies of this solve may stream their layer (see [`Stream`]): those
    /// whose result only exporters use — a target, or merged (`COPY --link`) into one —
    /// so no step needs their files (anything else unpacks it). `KILN_STREAMED_COPY=0`
    /// turns streaming off.
    pub fn plan_streamed_copies(&self, def: &Definition, targets: &[VertexRef]) {
        if std::env::var_os("KILN_STREAMED_COPY").is_some_and(|v| v == "0")
            || !nix::unistd::geteuid().is_root()
        {
            return;
        }
        let Ok(mut streamable) = self.streamable.lock() else {
            return;
        };
        for r in def.closure(targets) {
            let Some(v) = def.vertex(r) else { continue };
            let Op::File(op) = v.op() else { continue };
            let copies_only = op
                .actions
                .iter()
                .all(|a| matches!(a, FileAction::Copy(c) if !c.attempt_unpack));
            if copies_only && !op.actions.is_empty() && only_exported(def, r) {
                streamable.insert(v.digest());
            }
        }
    }

    /// Whether the copy `vertex` streams: planned so, and every source a directory.
    fn streams(&self, vertex: &Vertex, op: &FileOp, inputs: &[Output]) -> bool {
        let planned = self
            .streamable
            .lock()
            .is_ok_and(|s| s.contains(&vertex.digest()));
        planned
            && op.actions.iter().all(|a| match a {
                FileAction::Copy(c) => matches!(inputs.get(c.src_input), Some(Output::Dir(_))),
                _ => false,
            })
    }

    pub(super) fn file(
        &self,
        vertex: &Vertex,
        op: &FileOp,
        inputs: &[Output],
    ) -> Result<Output, WorkerError> {
        if self.streams(vertex, op, inputs) {
            if let Some(done) = self.file_with(vertex, op, inputs, true)? {
                return Ok(done);
            }
            tracing::debug!("streamed copy clashed with its own files; copying again");
        }
        self.file_with(vertex, op, inputs, false)?
            .ok_or_else(|| FileOpError::StreamConflict.into())
    }

    /// Runs the file op, streaming its copied files into the layer tar when `stream`;
    /// `None` when the streamed copy must be made again unstreamed.
    fn file_with(
        &self,
        vertex: &Vertex,
        op: &FileOp,
        inputs: &[Output],
        stream: bool,
    ) -> Result<Option<Output>, WorkerError> {
        let base = match op.base {
            Some(i) => Self::snapshot_of(inputs.get(i).ok_or("file op base input missing")?)?,
            None => Snapshot::scratch(),
        };
        // Mount every input that is a snapshot, so copies can read it.
        let mut views = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            views.push(match input {
                Output::Snapshot(s) if Some(i) != op.base => {
                    Some(SnapshotView::mount(&self.layers, s)?)
                }
                _ => None,
            });
        }
        let pending = self.layers.begin()?;
        let steps = StepStore::new(self.layers.dir());
        // A streamed copy's layer has no directory to take files over from.
        let step = self.copy_step(vertex, inputs).filter(|_| !stream);
        let reuse = step.map(|s| Reuse::new(self.previous_copy(&steps, &s), pending.upper()));
        let mount = if base.layers.is_empty() {
            None
        } else {
            let target = pending.scratch("root");
            std::fs::create_dir_all(&target)?;
            Some(
                self.flats
                    .overlay_for(&self.layers, &base, &pending)?
                    .mount(&target)?,
            )
        };
        let dest = match &mount {
            Some(m) => m.target().to_path_buf(),
            None => pending.upper(),
        };
        let roots: Vec<SourceRoot<'_>> = inputs
            .iter()
            .zip(&views)
            .map(|(input, view)| match (input, view) {
                (Output::Dir(d), _) => SourceRoot {
                    path: &d.root,
                    ignore: Some(&d.ignore),
                },
                (_, Some(v)) => SourceRoot::new(v.path()),
                // The base itself: what the actions write to.
                (_, None) => SourceRoot::new(&dest),
            })
            .collect();
        // `--chown` names resolve in the users input's root when the op names one.
        let users_root = match op.users {
            Some(i) if Some(i) != op.base => {
                Some(roots.get(i).ok_or("file op users input missing")?.path)
            }
            _ => None,
        };
        let streamed = stream.then(|| Stream::new(&dest, &pending.upper()));
        let opts = FileOpOptions {
            users_root,
            reuse: reuse.as_ref(),
            stream: streamed.as_ref(),
        };
        let applied = apply_file_actions_with(&dest, &roots, &op.actions, &opts);
        drop(roots);
        if let Some(m) = mount {
            m.unmount()?;
        }
        drop(views);
        match applied {
            Err(FileOpError::StreamConflict) => return Ok(None),
            other => other?,
        }
        if let Some(streamed) = streamed.filter(|s| !s.is_empty()) {
            let Some(id) = self.commit_streamed(pending, streamed)? else {
                return Ok(None);
            };
            return Ok(Some(Output::Snapshot(base.with_layer(id))));
        }
        let id = self.layers.commit(pending)?;
        if let (Some(step), Some(reuse)) = (step, reuse) {
            tracing::debug!(layer = %id, taken_over = reuse.taken(), "copy step done");
            let mut record = reuse.finish();
            record.layer = Some(id.clone());
            if let Err(e) = steps.save(&step, &record) {
                tracing::debug!(error = %e, "the copy step's record was not kept");
            }
        }
        Ok(Some(Output::Snapshot(base.with_layer(id))))
    }

    /// Keeps a streamed copy's layer as its blob, recorded with its diffID as an export
    /// would record it (an export of the image then finds the blob made).
    fn commit_streamed(
        &self,
        pending: PendingLayer,
        streamed: Stream,
    ) -> Result<Option<LayerId>, WorkerError> {
        let files = streamed.len();
        let Some(made) = streamed.write_layer(&self.content)? else {
            return Ok(None);
        };
        let blob_path = self
            .content
            .blob_path(&made.blob.digest)
            .map_err(BlobError::from)?;
        let id = self.layers.commit_streamed(
            pending,
            &blob_path,
            &made.diff_id,
            made.uncompressed_size,
        )?;
        let record_diff = made.diff_id.clone();
        let record = LayerRecord {
            id: id.clone(),
            diff_id: Some(made.diff_id),
            size: Some(made.uncompressed_size),
            blobs: vec![BlobRecord {
                digest: made.blob.digest,
                size: made.blob.size,
                compression: made.compression,
            }],
        };
        let mut w = self.cache.meta().writer().map_err(BlobError::from)?;
        w.put_layer(&record, crate::meta::now_secs())
            .map_err(BlobError::from)?;
        w.commit().map_err(BlobError::from)?;
        tracing::debug!(layer = %id, files, diff_id = %record_diff, "copy streamed");
        Ok(Some(id))
    }
}

/// Whether only exporters use `r`'s result: nothing depends on it but merges whose
/// results only exporters use (a merge stacks layers, it needs no files).
fn only_exported(def: &Definition, r: VertexRef) -> bool {
    def.dependents(r).into_iter().all(|d| {
        def.vertex(d)
            .is_some_and(|v| matches!(v.op(), Op::Merge(_)))
            && only_exported(def, d)
    })
}
