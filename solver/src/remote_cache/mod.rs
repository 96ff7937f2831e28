//! The remote build cache (`--cache-to` / `--cache-from`): a build's cache records and the
//! layers they need, written as an image that any OCI registry or layout holds, and read
//! back on another machine so its build finds those results instead of running the steps.
//!
//! The cache image follows BuildKit's shape (an image manifest or an index whose config blob
//! is `application/vnd.buildkit.cacheconfig.v0` and whose layers are the cache blobs); the
//! config's content is kiln's own ([`format`], documented in `docs/remote-cache.md`).
//! [`export`] turns solved results into that image in the content store; [`import`] indexes
//! an imported config so the worker can answer cache lookups from it, fetching a layer's
//! bytes only when a step or an exporter needs them ([`import::BlobFetcher`]);
//! [`mounts`] carries cache-mount contents; [`explain`] says why a step missed.
//! Moving the image to and from a registry or a layout is the builder's job.

pub mod explain;
pub mod export;
pub mod format;
pub mod import;
pub mod mounts;

pub use export::{
    export_cache, inline_config, CacheImage, CacheMode, ExportOptions, ExportRecord, ExportStores,
};
pub use format::{CacheBlob, CacheConfig, CacheMountRecord, CacheRecord, SelectionChecksum};
pub use import::{BlobFetcher, ImportedCache, ImportedRecord};

/// Errors of the remote cache.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    /// The config blob is not a kiln cache config (or one of a version kiln cannot read).
    #[error("cache config {digest}: {reason}")]
    BadConfig {
        /// The config blob's digest (or the image's, for an inline cache).
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// The config was written by a kiln with another format version: a miss, not damage
    /// (CI runners upgrade at different times), so importers skip it with a warning.
    #[error("cache config {digest}: format version {found} (this kiln reads version {supported})")]
    OtherVersion {
        /// The config blob's digest (or the image's, for an inline cache).
        digest: String,
        /// The version it has.
        found: u32,
        /// The version this kiln reads.
        supported: u32,
    },
    /// Making or reading a layer blob failed.
    #[error(transparent)]
    Blob(#[from] crate::snapshot::blobs::BlobError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] crate::content::ContentError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    /// `image-manifest=true` with Docker media types: a Docker manifest cannot carry the
    /// cache config (buildx refuses the combination too).
    #[error("a cache written as an image manifest needs OCI media types")]
    ImageManifestNeedsOci,
    /// Reading or writing a cache mount failed.
    #[error("cache mount {id:?}: {source}")]
    Mount {
        /// The cache id.
        id: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
