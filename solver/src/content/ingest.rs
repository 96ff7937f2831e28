//! Streaming ingest: bytes are hashed while they are written to a temporary file under the
//! store, then verified, fsynced and renamed to `blobs/sha256/<hex>`. Dropping an unfinished
//! ingest deletes the temporary file, so a blob path only ever holds complete, verified content.
//! The hasher's state can be saved ([`Ingest::hash_state`]) and an ingest resumed from a saved
//! state over a copy of another blob's first bytes ([`super::ContentStore::ingest_resumed`]):
//! a blob sharing a long prefix with an earlier one is then written without hashing it again.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use kiln_oci::Digest;
use sha2_11::digest::common::hazmat::SerializableState;
use sha2_11::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use super::error::{ContentError, Result};
use crate::atomic_file::sync_parent;

/// Digest and size of a stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// sha256 digest of the blob.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// What the caller knows about the content before writing it (from a descriptor).
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The digest the content must hash to.
    pub digest: Option<Digest>,
    /// The exact size the content must have.
    pub size: Option<u64>,
}

impl Expected {
    /// Expect exactly this digest and size.
    pub fn exact(digest: Digest, size: u64) -> Self {
        Expected {
            digest: Some(digest),
            size: Some(size),
        }
    }
}

/// An in-progress write of one blob. Implements [`Write`]; finish with [`Ingest::commit`].
pub struct Ingest {
    file: BufWriter<NamedTempFile>,
    /// The thread copying a resumed ingest's prefix into the file.
    prefix: Option<std::thread::JoinHandle<io::Result<()>>>,
    hasher: Sha256,
    written: u64,
    blobs_dir: PathBuf,
    expected: Expected,
}

/// A saved sha256 state: what [`Ingest::hash_state`] returns and a resumed ingest starts from.
pub type HashState = Vec<u8>;

/// The serialized state of `hasher` (the sha2 crate's own format).
pub fn save_hash(hasher: &Sha256) -> HashState {
    hasher.serialize().to_vec()
}

/// A hasher restored from [`save_hash`]'s bytes; `None` when they are not such a state.
pub fn restore_hash(state: &[u8]) -> Option<Sha256> {
    let state = state.try_into().ok()?;
    Sha256::deserialize(state).ok()
}

/// The sha256 [`Digest`] a hasher ends with.
pub fn finish_hash(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // 64 hex digits are always a valid sha256 digest.
    Digest::from_hex(&hex).unwrap_or_else(|| Digest::of(b""))
}

impl Ingest {
    pub(crate) fn new(tmp: NamedTempFile, blobs_dir: PathBuf, expected: Expected) -> Result<Self> {
        Ok(Ingest {
            file: BufWriter::with_capacity(256 * 1024, tmp),
            prefix: None,
            hasher: Sha256::new(),
            written: 0,
            blobs_dir,
            expected,
        })
    }

    /// An ingest whose first `written` bytes, which hashed to `hasher`, `prefix` copies
    /// into the file (positioned after them) while the caller writes the rest.
    pub(crate) fn resumed(
        tmp: NamedTempFile,
        blobs_dir: PathBuf,
        hasher: Sha256,
        written: u64,
        prefix: std::thread::JoinHandle<io::Result<()>>,
    ) -> Self {
        Ingest {
            file: BufWriter::with_capacity(256 * 1024, tmp),
            prefix: Some(prefix),
            hasher,
            written,
            blobs_dir,
            expected: Expected::default(),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The hasher's state after the bytes written so far (see [`super::ContentStore::ingest_resumed`]).
    pub fn hash_state(&self) -> HashState {
        save_hash(&self.hasher)
    }

    /// Verifies digest and size, makes the content durable and moves it under its digest.
    /// If the blob already exists the new copy is discarded.
    pub fn commit(self) -> Result<BlobInfo> {
        if let Some(copy) = self.prefix {
            let copied = copy
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the prefix copy panicked")));
            copied.map_err(|e| ContentError::io("copy a blob prefix into", &self.blobs_dir, e))?;
        }
        let (digest, size) = (finish_hash(self.hasher), self.written);
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| ContentError::io("write", &self.blobs_dir, e.into_error()))?;
        if let Some(expected) = self.expected.size {
            if expected != size {
                return Err(ContentError::SizeMismatch {
                    digest: self.expected.digest.as_ref().unwrap_or(&digest).to_string(),
                    expected,
                    actual: size,
                });
            }
        }
        if let Some(expected) = self.expected.digest {
            if expected != digest {
                return Err(ContentError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        let target = self.blobs_dir.join(digest.hex());
        if target.exists() {
            return Ok(BlobInfo { digest, size });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| ContentError::io("fsync", tmp.path(), e))?;
        tmp.persist(&target)
            .map_err(|e| ContentError::io("rename into", &target, e.error))?;
        sync_parent(&target).map_err(|e| ContentError::io("fsync", &self.blobs_dir, e))?;
        Ok(BlobInfo { digest, size })
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Refuse to grow past the announced size: a lying server cannot fill the disk.
        if let Some(limit) = self.expected.size {
            if self.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob is larger than the expected {limit} bytes"),
                ));
            }
        }
        let n = self.file.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hasher.update(done);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
