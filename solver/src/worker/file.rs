//! File ops (COPY, ADD, WORKDIR's mkdir, heredoc files): the actions run on
//! an overlay of the base with a fresh layer on top, or on an empty layer
//! when there is no base (`FROM scratch`, `COPY --link`).

use super::{LocalWorker, Output};
use crate::llb::FileOp;
use crate::ops::file::{apply_file_actions_with, FileOpOptions, SourceRoot};
use crate::scheduler::WorkerError;
use crate::snapshot::view::SnapshotView;
use crate::snapshot::Snapshot;

impl LocalWorker {
    pub(super) fn file(&self, op: &FileOp, inputs: &[Output]) -> Result<Output, WorkerError> {
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
        let opts = FileOpOptions { users_root };
        apply_file_actions_with(&dest, &roots, &op.actions, &opts)?;
        drop(roots);
        if let Some(m) = mount {
            m.unmount()?;
        }
        drop(views);
        let id = self.layers.commit(pending)?;
        Ok(Output::Snapshot(base.with_layer(id)))
    }
}
