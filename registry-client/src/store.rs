//! Where pulled blobs go and pushed blobs come from. The CLI adapts kiln's content store to
//! [`BlobStore`]; an OCI layout directory (`kiln_oci::layout::LayoutDir`) is one too, which
//! also stages copies.

use crate::error::{Error, Result};
use kiln_oci::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A content-addressed blob store as seen by pull and push.
pub trait BlobStore: Send + Sync {
    /// Whether the blob is present (and so need not be downloaded).
    fn has_blob(&self, digest: &Digest) -> bool;
    /// A fresh temporary path on the store's filesystem to download into.
    fn temp_path(&self) -> Result<PathBuf>;
    /// Moves a verified temporary file into place under its digest.
    fn commit_blob(&self, digest: &Digest, tmp: &Path) -> Result<()>;
    /// Opens a stored blob for reading.
    fn open_blob(&self, digest: &Digest) -> Result<std::fs::File>;

    /// Reads a small blob (manifest, config) fully.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut f = self.open_blob(digest)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(|e| Error::io(format!("reading blob {digest}"), e))?;
        Ok(v)
    }

    /// Stores small content (manifests) after checking its digest.
    fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        let actual = Digest::of(data);
        if &actual != digest {
            return Err(Error::Oci(kiln_oci::Error::Verification {
                what: "blob".into(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            }));
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        let tmp = self.temp_path()?;
        write_synced(&tmp, data)?;
        self.commit_blob(digest, &tmp)
    }
}

/// A [`BlobStore`] seen as an image source and sink of the vocabulary (`kiln_oci`), so the
/// stores pulls write into are read and written by the same walk and copy as every other
/// image store. It holds no names: `resolve` fails, `tag` does nothing.
pub struct Blobs<'a>(pub &'a dyn BlobStore);

impl kiln_oci::ImageSource for Blobs<'_> {
    fn resolve(&self, name: &str) -> kiln_oci::Result<kiln_oci::Descriptor> {
        Err(kiln_oci::Error::store(
            format!("looking up {name}"),
            "a blob store has no names",
        ))
    }

    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        Ok(self.0.has_blob(digest))
    }

    fn open_blob(
        &self,
        desc: &kiln_oci::Descriptor,
    ) -> kiln_oci::Result<Box<dyn std::io::Read + '_>> {
        if !self.0.has_blob(&desc.digest) {
            return Err(kiln_oci::Error::Missing {
                digest: desc.digest.clone(),
                what: desc.media_type.clone(),
            });
        }
        let f = self
            .0
            .open_blob(&desc.digest)
            .map_err(|e| kiln_oci::Error::store(format!("opening blob {}", desc.digest), e))?;
        Ok(Box::new(f))
    }
}

impl kiln_oci::ImageSink for Blobs<'_> {
    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        Ok(self.0.has_blob(digest))
    }

    fn write_blob(
        &self,
        desc: &kiln_oci::Descriptor,
        data: &mut dyn std::io::Read,
    ) -> kiln_oci::Result<()> {
        let context = format!("storing blob {}", desc.digest);
        let tmp = self
            .0
            .temp_path()
            .map_err(|e| kiln_oci::Error::store(context.clone(), e))?;
        kiln_oci::store::write_file_from(&tmp, data, &context)?;
        self.0
            .commit_blob(&desc.digest, &tmp)
            .map_err(|e| kiln_oci::Error::store(context, e))
    }

    fn tag(&self, _name: &str, _root: &kiln_oci::Descriptor) -> kiln_oci::Result<()> {
        Ok(())
    }
}

/// An OCI layout directory as a blob store, so pushes and pulls use layouts directly.
impl BlobStore for kiln_oci::layout::LayoutDir {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn temp_path(&self) -> Result<PathBuf> {
        let dir = self.root().join("blobs/sha256");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!(".pull-{}-{n}.kiln-tmp", std::process::id())))
    }

    fn commit_blob(&self, digest: &Digest, tmp: &Path) -> Result<()> {
        let dest = self.blob_path(digest);
        std::fs::rename(tmp, &dest).map_err(|e| Error::io(format!("storing {}", dest.display()), e))
    }

    fn open_blob(&self, digest: &Digest) -> Result<std::fs::File> {
        let p = self.blob_path(digest);
        std::fs::File::open(&p).map_err(|e| Error::io(format!("opening {}", p.display()), e))
    }
}

/// Numbers the temporary files of layout directories.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file and fsyncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_blob_verifies() {
        let d = tempfile::tempdir().unwrap();
        let s = kiln_oci::layout::LayoutDir::create(d.path()).unwrap();
        let good = Digest::of(b"x");
        s.write_blob(&good, b"x").unwrap();
        assert!(s.has_blob(&good));
        assert_eq!(s.read_blob(&good).unwrap(), b"x");
        let err = s.write_blob(&good, b"y").unwrap_err();
        assert!(err.to_string().contains("verification"));
    }
}
