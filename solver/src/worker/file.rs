//! File ops (COPY, ADD, WORKDIR's mkdir, heredoc files): the actions run on
//! an overlay of the base with a fresh layer on top, or on an empty layer
//! when there is no base (`FROM scratch`, `COPY --link`).

use sha2::{Digest as _, Sha256};

use super::{LocalWorker, Output};
use crate::cache::{InputKey, KeyParts};
use crate::llb::{FileAction, FileOp, Op, Vertex};
use crate::ops::file::{apply_file_actions_with, FileOpOptions, Reuse, SourceRoot};
use crate::scheduler::WorkerError;
use crate::snapshot::steps::{StepRecord, StepStore};
use crate::snapshot::view::SnapshotView;
use crate::snapshot::{LayerId, Snapshot};

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
        let id = LayerId::parse(id).filter(|id| self.layers.exists(id))?;
        Some((self.layers.path(&id), record))
    }

    pub(super) fn file(
        &self,
        vertex: &Vertex,
        op: &FileOp,
        inputs: &[Output],
    ) -> Result<Output, WorkerError> {
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
        let step = self.copy_step(vertex, inputs);
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
        let opts = FileOpOptions {
            users_root,
            reuse: reuse.as_ref(),
        };
        apply_file_actions_with(&dest, &roots, &op.actions, &opts)?;
        drop(roots);
        if let Some(m) = mount {
            m.unmount()?;
        }
        drop(views);
        let id = self.layers.commit(pending)?;
        if let (Some(step), Some(reuse)) = (step, reuse) {
            tracing::debug!(layer = %id, taken_over = reuse.taken(), "copy step done");
            let mut record = reuse.finish();
            record.layer = Some(id.clone());
            if let Err(e) = steps.save(&step, &record) {
                tracing::debug!(error = %e, "the copy step's record was not kept");
            }
        }
        Ok(Output::Snapshot(base.with_layer(id)))
    }
}
