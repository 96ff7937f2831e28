//! Transfer progress events, rendered by the CLI (bars on a terminal, plain lines otherwise).

use crate::digest::Digest;

/// What became of one blob or manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// Already present locally (pull) or remotely (push).
    Exists,
    /// Downloaded and verified.
    Downloaded,
    /// Uploaded.
    Pushed,
    /// Mounted from another repository.
    Mounted,
}

/// Receives transfer events; all methods default to doing nothing.
pub trait Progress: Send + Sync {
    /// A blob transfer starts.
    fn start(&self, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of a blob moved.
    fn advance(&self, _digest: &Digest, _n: u64) {}
    /// A blob is finished.
    fn done(&self, _digest: &Digest, _status: BlobStatus) {}
    /// A status line ("latest: Pulling from library/busybox").
    fn message(&self, _line: &str) {}
}

/// Discards progress.
pub struct NoProgress;

impl Progress for NoProgress {}
