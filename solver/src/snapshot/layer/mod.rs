//! Layers: directory ↔ tar with OCI whiteouts, compression, diffID and blob digest.

mod apply;
mod compression;
mod diff;
mod pargzip;
mod pax;
mod resume;

use std::path::PathBuf;

pub use apply::{apply_layer, AppliedLayer, ApplyOptions, WhiteoutMode};
pub(crate) use compression::compression_name;
pub use compression::{decompress, Compression, Encoder};
pub(crate) use diff::{entry_of, file_piece, Changed, Piece};
pub use diff::{write_layer, write_tar, DiffOptions, LayerBlob};
pub use resume::write_layer_indexed;
pub(crate) use resume::{write_streamed, Entries};

use crate::content::ContentError;

/// Prefix of an OCI whiteout entry hiding `<name>` of lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The entry that marks its directory opaque (lower layers' contents hidden).
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// overlayfs' private xattrs: never copied into or out of a tar.
pub(crate) fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// Errors while writing or applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The layer tar is malformed.
    #[error("malformed layer tar (applying onto {dest}): {source}")]
    Tar {
        /// The directory being written.
        dest: PathBuf,
        /// The parser's error.
        #[source]
        source: std::io::Error,
    },
    /// An entry would write outside the destination or through a symlink.
    #[error("refusing layer entry {entry:?}: {reason}")]
    UnsafePath {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// An entry type kiln cannot create.
    #[error("unsupported entry type {kind} for layer entry {entry:?}")]
    UnsupportedEntry {
        /// The entry's path.
        entry: String,
        /// Its tar type.
        kind: String,
    },
    /// A blob compressed with something that is no layer compression.
    #[error("layer blob {blob} is {kind}-compressed; layers are gzip, zstd or uncompressed tar")]
    UnsupportedCompression {
        /// The blob's digest.
        blob: String,
        /// Its compression (`bzip2`, `xz`).
        kind: String,
    },
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The uncompressed layer is over the size limit (a decompression bomb, say).
    #[error("the layer unpacks to more than {limit} bytes, the layer size limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
}

impl LayerError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LayerError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
