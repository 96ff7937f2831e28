//! Views of snapshots as directories: an overlay of the layer chain, either
//! read-only-ish (a throwaway upper dir) for reading a stage's files, or
//! with a pending layer's upper dir to receive a step's changes.

use super::layers::{LayerStore, LayerStoreError, PendingLayer};
use super::overlay::{Overlay, OverlayError, OverlayMount};
use super::Snapshot;
use std::path::{Path, PathBuf};

/// The overlay of `snapshot` with `pending` receiving changes.
pub fn overlay_for(layers: &LayerStore, snapshot: &Snapshot, pending: &PendingLayer) -> Overlay {
    // A layer may appear twice (two steps that changed nothing have the same empty
    // layer once imported by diffID), which overlayfs refuses (ELOOP). The lower copy is
    // shadowed entry for entry by the upper one, so only the topmost is kept.
    let mut seen = std::collections::HashSet::new();
    Overlay {
        // overlayfs lists the topmost lower dir first.
        lowers: snapshot
            .layers
            .iter()
            .rev()
            .filter(|id| seen.insert(*id))
            .map(|id| layers.path(id))
            .collect(),
        upper: pending.upper(),
        work: pending.work(),
    }
}

/// A snapshot mounted for reading: the files of a stage or image, as a
/// directory. Writes land in a throwaway layer and vanish with the view.
pub struct SnapshotView {
    root: PathBuf,
    // Field order matters: unmount before the pending layer's directory goes.
    _mount: Option<OverlayMount>,
    _pending: Option<PendingLayer>,
}

impl SnapshotView {
    /// Mounts `snapshot`. A single layer is used as is (it has no whiteouts
    /// that matter without layers below); an empty snapshot is an empty dir.
    /// Nothing may write into such a view (layers share files, see
    /// [`crate::ops::file::Reuse`]): RUN's writable binds are scratch views of it.
    pub fn mount(layers: &LayerStore, snapshot: &Snapshot) -> Result<SnapshotView, ViewError> {
        layers.materialize_all(&snapshot.layers)?;
        if let [only] = snapshot.layers.as_slice() {
            return Ok(SnapshotView {
                root: layers.path(only),
                _mount: None,
                _pending: None,
            });
        }
        let pending = layers.begin()?;
        let target = pending.scratch("view");
        std::fs::create_dir_all(&target).map_err(|source| ViewError::Create {
            path: target.clone(),
            source,
        })?;
        if snapshot.layers.is_empty() {
            return Ok(SnapshotView {
                root: target,
                _mount: None,
                _pending: Some(pending),
            });
        }
        let mount = overlay_for(layers, snapshot, &pending).mount(&target)?;
        Ok(SnapshotView {
            root: target,
            _mount: Some(mount),
            _pending: Some(pending),
        })
    }

    /// The directory showing the snapshot's files.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

/// Why a view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Mounting failed.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// The layer store failed.
    #[error(transparent)]
    Layer(#[from] LayerStoreError),
    /// The view's directory could not be made.
    #[error("create {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_listed_twice_mounts_once_as_its_topmost_copy() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts)"
        );
        let d = tempfile::tempdir().unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let make = |name: &str, data: &str| {
            let p = layers.begin().unwrap();
            std::fs::write(p.upper().join(name), data).unwrap();
            layers.commit(p).unwrap()
        };
        let (a, b) = (make("a", "1"), make("b", "2"));
        let snapshot = Snapshot {
            layers: vec![a.clone(), b.clone(), a.clone()],
        };
        let pending = layers.begin().unwrap();
        let overlay = overlay_for(&layers, &snapshot, &pending);
        assert_eq!(overlay.lowers, [layers.path(&a), layers.path(&b)]);
        let view = SnapshotView::mount(&layers, &snapshot).unwrap();
        assert_eq!(std::fs::read_to_string(view.path().join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(view.path().join("b")).unwrap(), "2");
    }
}
