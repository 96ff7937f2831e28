//! Errors of the content store.

use std::path::PathBuf;

use kiln_oci::Digest;

/// What can go wrong while reading or writing the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Following the references of the store's images failed.
    #[error("walking the images of {}", root.display())]
    Walk {
        /// The store.
        root: PathBuf,
        /// Why.
        #[source]
        source: Box<kiln_oci::Error>,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename", ...).
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    /// Written content hashed to something other than what was expected.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the bytes actually written.
        actual: Digest,
    },
    /// Written content had another length than was expected.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest the blob was written for (expected, or computed when none was given).
        digest: String,
        /// The announced size.
        expected: u64,
        /// The number of bytes written.
        actual: u64,
    },
    /// A JSON document in the store (index.json, oci-layout, a manifest) did not parse.
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// The file or blob that was parsed.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The directory exists but is not an OCI image layout we can use.
    #[error("{path} is not a usable OCI image layout: {reason}")]
    InvalidLayout {
        /// The layout directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

impl ContentError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ContentError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of the content store.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;
