//! What can be wrong with a piece of OCI vocabulary: a malformed name, or content that does
//! not match its descriptor.

/// A malformed reference, digest, platform or manifest, or content that fails verification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference does not follow Docker's grammar.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// What the user wrote.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// A platform string that containerd's `platforms.Parse` would refuse.
    #[error("invalid platform {0:?}: expected os/arch[/variant] (e.g. linux/arm64), or a known os or architecture alone")]
    InvalidPlatform(String),
    /// Content did not match its digest or size.
    #[error("{what}: content verification failed: expected {expected}, got {actual}")]
    Verification {
        /// Which blob or manifest.
        what: String,
        /// Expected digest or size.
        expected: String,
        /// What was received.
        actual: String,
    },
    /// Docker schema 1 manifests are not supported.
    #[error("{0}: Docker schema 1 manifests are deprecated and not supported; push the image again with a current tool")]
    Schema1(String),
    /// The manifest has a media type or shape kiln cannot use.
    #[error("{reference}: unsupported or malformed manifest: {reason}")]
    BadManifest {
        /// What was being read (a reference, a digest, a path).
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A blob a descriptor points at is not in the source.
    #[error("blob {digest} ({what}) is missing")]
    Missing {
        /// The missing blob.
        digest: crate::Digest,
        /// What it is (`layer of sha256:…`, `config of sha256:…`).
        what: String,
    },
    /// A manifest, index or config larger than kiln reads into memory.
    #[error("{what} {digest} is {size} bytes, more than the {limit} bytes a manifest or config may have")]
    TooLarge {
        /// What it is.
        what: String,
        /// Its digest.
        digest: crate::Digest,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A source or sink failed (a file, an archive, a registry).
    #[error("{context}")]
    Store {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A source's or sink's own failure, with what it was doing.
    pub fn store(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Store {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
