//! An OCI layout written as a tar stream (`-o type=oci`, `kiln save --format oci`, `copy …
//! oci-archive:`): blobs as they come, then `oci-layout` and `index.json` at the end, every
//! entry with fixed metadata so the same images give the same bytes.

use std::io::{Read, Write};
use std::sync::Mutex;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout::{named_entry, OCI_LAYOUT_FILE};
use crate::manifest::ImageIndex;
use crate::media_type::OCI_INDEX;
use crate::store::{io_to_error, ImageSink};

/// An image sink writing an OCI layout tar to `W`; [`TarSink::finish`] completes it.
pub struct TarSink<W: Write> {
    state: Mutex<State<W>>,
}

struct State<W: Write> {
    tar: tar::Builder<W>,
    written: std::collections::HashSet<Digest>,
    entries: Vec<Descriptor>,
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(size);
    h.set_mtime(0);
    h
}

impl<W: Write> TarSink<W> {
    /// Starts the tar (its `blobs/sha256/` directories).
    pub fn new(w: W) -> Result<Self> {
        let mut tar = tar::Builder::new(w);
        tar.mode(tar::HeaderMode::Deterministic);
        for dir in ["blobs/", "blobs/sha256/"] {
            tar.append_data(
                &mut header(tar::EntryType::Directory, 0),
                dir,
                std::io::empty(),
            )
            .map_err(|e| Error::store("writing the archive", e))?;
        }
        Ok(TarSink {
            state: Mutex::new(State {
                tar,
                written: Default::default(),
                entries: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<W>> {
        // A panic while holding the lock leaves a half-written tar either way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists `root` in `index.json` without a name.
    pub fn add_unnamed(&self, root: &Descriptor) {
        self.state().entries.push(root.clone());
    }

    /// Writes `oci-layout`, `index.json` and `extra` files (Docker's `manifest.json` for an
    /// archive both tools load), and returns the writer.
    pub fn finish(self, extra: &[(String, Vec<u8>)]) -> Result<W> {
        let state = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut tar = state.tar;
        let index = ImageIndex::new(OCI_INDEX, state.entries);
        let index =
            serde_json::to_vec(&index).map_err(|e| Error::store("writing index.json", e))?;
        let mut files = vec![
            ("oci-layout".to_string(), OCI_LAYOUT_FILE.to_vec()),
            ("index.json".to_string(), index),
        ];
        files.extend(extra.iter().cloned());
        for (name, data) in files {
            let mut h = header(tar::EntryType::Regular, data.len() as u64);
            tar.append_data(&mut h, &name, data.as_slice())
                .map_err(|e| Error::store(format!("writing {name} to the archive"), e))?;
        }
        tar.into_inner()
            .map_err(|e| Error::store("finishing the archive", e))
    }
}

impl<W: Write> ImageSink for TarSink<W> {
    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.state().written.contains(digest))
    }

    /// A blob that fails verification leaves the tar cut short: the export fails.
    fn write_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let mut state = self.state();
        let mut h = header(tar::EntryType::Regular, desc.size);
        let name = format!("blobs/sha256/{}", desc.digest.hex());
        state
            .tar
            .append_data(&mut h, &name, data)
            .map_err(|e| io_to_error(e, &format!("writing blob {} to the archive", desc.digest)))?;
        state.written.insert(desc.digest.clone());
        Ok(())
    }

    fn tag(&self, name: &str, root: &Descriptor) -> Result<()> {
        self.state().entries.push(named_entry(root, name));
        Ok(())
    }
}
