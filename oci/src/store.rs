//! Images as sources and sinks (go-containerregistry's model): every place kiln reads images
//! from — the local content store, a registry, an OCI layout directory or tar, a Docker
//! archive — is an [`ImageSource`]; every place it writes them is an [`ImageSink`]. Copying,
//! saving, loading, pushing, pulling and exporting are [`crate::copy::copy_image`] between
//! the two.

use std::io::Read;

use crate::descriptor::Descriptor;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};

/// The most kiln reads into memory for one manifest, index or config (the distribution
/// registry's own manifest limit is 4 MiB).
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// Where images are read from.
pub trait ImageSource {
    /// The root (manifest or index) named `name`: a tag or a full reference, as the source
    /// names its images.
    fn resolve(&self, name: &str) -> Result<Descriptor>;

    /// Whether the source holds the blob (a pull of one platform holds some of an index's
    /// images only).
    fn has_blob(&self, digest: &Digest) -> Result<bool>;

    /// Which of `digests` the source holds, in their order: [`ImageSource::has_blob`] of
    /// each, unless the source can answer for many at once (a registry asks in parallel).
    fn has_blobs(&self, digests: &[Digest]) -> Result<Vec<bool>> {
        digests.iter().map(|d| self.has_blob(d)).collect()
    }

    /// A stream of the blob's bytes, unverified ([`read_verified`] and the copy verify).
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + '_>>;
}

/// Where images are written.
pub trait ImageSink {
    /// Whether the sink already has the blob (it is then not written again).
    fn has_blob(&self, digest: &Digest) -> Result<bool>;

    /// Stores the blob `desc` from `data`, which fails on a digest or size mismatch at its
    /// end: a sink keeps nothing unless `data` was read to its end without error.
    fn write_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()>;

    /// Names `root` (whose blobs are all written) `name`: a tag or a full reference, as the
    /// sink names its images.
    fn tag(&self, name: &str, root: &Descriptor) -> Result<()>;
}

/// Reads a manifest, index or config whole, refusing more than [`MAX_DOCUMENT_SIZE`] and
/// content that does not match `desc`.
pub fn read_verified(source: &dyn ImageSource, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if desc.size > MAX_DOCUMENT_SIZE {
        return Err(Error::TooLarge {
            what: what.to_string(),
            digest: desc.digest.clone(),
            size: desc.size,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(desc.size as usize);
    let mut r = verifying(source.open_blob(desc)?, desc, what);
    r.read_to_end(&mut bytes)
        .map_err(|e| io_to_error(e, &format!("reading {what} {}", desc.digest)))?;
    Ok(bytes)
}

/// Wraps `inner` so that reading it to the end fails (with `InvalidData` holding an
/// [`Error::Verification`]) when its content is not `desc`'s, or is longer than `desc.size`.
pub fn verifying<'a>(
    inner: Box<dyn Read + 'a>,
    desc: &Descriptor,
    what: &str,
) -> VerifyingReader<'a> {
    VerifyingReader {
        inner: Some(HashingReader::new(inner.take(desc.size.saturating_add(1)))),
        expected: desc.digest.clone(),
        size: desc.size,
        what: format!("{what} {}", desc.digest),
    }
}

/// See [`verifying`].
pub struct VerifyingReader<'a> {
    inner: Option<HashingReader<std::io::Take<Box<dyn Read + 'a>>>>,
    expected: Digest,
    size: u64,
    what: String,
}

impl Read for VerifyingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // The end: check before the caller may commit what it read.
            if let Some(done) = self.inner.take() {
                done.verify(&self.what, &self.expected, Some(self.size))
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            }
        }
        Ok(n)
    }
}

/// Turns an I/O error from a [`VerifyingReader`] back into the verification error it carries,
/// or wraps it with `context`.
pub fn io_to_error(e: std::io::Error, context: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::store(context, "verification failed");
    }
    Error::store(context, e)
}

/// Writes `data` to a new file at `path` and syncs it; on any error (a verification failure
/// at the end of `data` included) the file is removed and the error returned with `context`.
pub fn write_file_from(path: &std::path::Path, data: &mut dyn Read, context: &str) -> Result<()> {
    let mut copy = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        std::io::copy(data, &mut f)?;
        f.sync_all()
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(path);
        io_to_error(e, context)
    })
}
