//! Transfer progress events, rendered by the CLI (bars on a terminal, plain lines otherwise).

use kiln_oci::Digest;

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

/// A retry the client is about to make, so a waiting user learns why nothing moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The URL being retried.
    pub url: String,
    /// The pause before the next attempt.
    pub wait: std::time::Duration,
    /// The attempt about to be made (1-based; the first retry is attempt 2).
    pub attempt: u32,
    /// The most attempts that will be made.
    pub attempts: u32,
    /// What went wrong (`503 Service Unavailable`, `connection broken: …`).
    pub cause: String,
}

impl std::fmt::Display for RetryNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retrying {} {} in {:.1} s (attempt {}/{}): {}",
            self.method,
            self.url,
            self.wait.as_secs_f64(),
            self.attempt,
            self.attempts,
            self.cause
        )
    }
}

/// A receiver of retry notices.
type NoticeFn = dyn Fn(&RetryNotice) + Send + Sync;

/// Where retry notices go; the default drops them.
#[derive(Clone, Default)]
pub struct Notices(Option<std::sync::Arc<NoticeFn>>);

impl Notices {
    /// Sends every notice to `f`.
    pub fn new(f: impl Fn(&RetryNotice) + Send + Sync + 'static) -> Self {
        Notices(Some(std::sync::Arc::new(f)))
    }

    /// Reports one retry.
    pub fn retry(&self, notice: &RetryNotice) {
        if let Some(f) = &self.0 {
            f(notice);
        }
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notices(..)"
        } else {
            "Notices(none)"
        })
    }
}
