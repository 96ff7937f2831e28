//! Streaming ingest: bytes are hashed while they are written to a temporary file under the
//! store, then verified, fsynced and renamed to `blobs/sha256/<hex>`. Dropping an unfinished
//! ingest deletes the temporary file, so a blob path only ever holds complete, verified content.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use kiln_oci::Digest;
use tempfile::NamedTempFile;

use super::error::{ContentError, Result};
use crate::atomic_file::sync_parent;
use kiln_oci::HashingWriter;

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
    writer: HashingWriter<BufWriter<NamedTempFile>>,
    blobs_dir: PathBuf,
    expected: Expected,
}

impl Ingest {
    pub(crate) fn new(tmp: NamedTempFile, blobs_dir: PathBuf, expected: Expected) -> Result<Self> {
        Ok(Ingest {
            writer: HashingWriter::new(BufWriter::with_capacity(256 * 1024, tmp)),
            blobs_dir,
            expected,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Verifies digest and size, makes the content durable and moves it under its digest.
    /// If the blob already exists the new copy is discarded.
    pub fn commit(self) -> Result<BlobInfo> {
        let (buf, digest, size) = self.writer.finish();
        let tmp = buf
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
            if self.writer.written() + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob is larger than the expected {limit} bytes"),
                ));
            }
        }
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
