//! Read-write bind mounts whose writes are discarded: a directory gets a
//! throwaway overlay over the source, a file a throwaway copy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::snapshot::overlay::{Overlay, OverlayMount};

/// A scratch view of a bind source; removed (and unmounted) on drop.
#[derive(Debug)]
pub struct ScratchBind {
    dir: PathBuf,
    source: PathBuf,
    mount: Option<OverlayMount>,
}

impl ScratchBind {
    /// Builds the scratch view of `source` inside `dir` (created, must not exist).
    pub fn new(source: &Path, dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        if source.is_dir() {
            let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
            for d in [&upper, &work, &merged] {
                fs::create_dir(d)?;
            }
            let overlay = Overlay {
                lowers: vec![source.to_path_buf()],
                upper,
                work,
            };
            let mount = overlay.mount_volatile(&merged).map_err(io::Error::other)?;
            Ok(ScratchBind {
                dir: dir.to_path_buf(),
                source: merged,
                mount: Some(mount),
            })
        } else {
            let copy = dir.join("file");
            fs::copy(source, &copy)?;
            Ok(ScratchBind {
                dir: dir.to_path_buf(),
                source: copy,
                mount: None,
            })
        }
    }

    /// What to bind-mount (read-write) into the container.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

impl Drop for ScratchBind {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            // Never recurse into a view that is still mounted.
            if m.unmount().is_err() {
                return;
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
