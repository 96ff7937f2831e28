//! The progress channel: cloneable senders for the solver, one receiver for the display.

use std::io;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::event::{EventKind, LogStream, ProgressEvent, Warning};
use crate::llb::VertexDigest;

/// Creates a connected sender/receiver pair. The channel is unbounded so the solver never
/// waits for a slow terminal.
pub fn channel() -> (ProgressSender, ProgressReceiver) {
    let (tx, rx) = mpsc::channel();
    (ProgressSender { tx: Some(tx) }, ProgressReceiver { rx })
}

/// A digest for progress-only vertices that are not part of the build graph
/// (`[internal] load build definition from Dockerfile`, `exporting to image`).
pub fn synthetic_digest(label: &str) -> VertexDigest {
    let mut h = Sha256::new();
    h.update(b"kiln-progress\0");
    h.update(label.as_bytes());
    VertexDigest(h.finalize().into())
}

/// The sending side: cheap to clone, usable from any thread or task, never blocks.
#[derive(Debug, Clone, Default)]
pub struct ProgressSender {
    tx: Option<mpsc::Sender<ProgressEvent>>,
}

impl ProgressSender {
    /// A sender that drops every event (for callers without a display, and tests).
    pub fn discard() -> Self {
        ProgressSender { tx: None }
    }

    /// Sends one event. A closed or absent receiver is not an error: progress is advisory.
    pub fn send(&self, event: ProgressEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Sends an event about `vertex` stamped with the current time.
    pub fn emit(&self, vertex: VertexDigest, kind: EventKind) {
        self.send(ProgressEvent {
            vertex,
            at: SystemTime::now(),
            kind,
        });
    }

    /// Registers a vertex (pending) and returns its handle.
    pub fn vertex(&self, digest: VertexDigest, name: impl Into<String>) -> VertexProgress {
        self.vertex_with_inputs(digest, name, Vec::new())
    }

    /// Registers a vertex with the digests of its inputs and returns its handle.
    pub fn vertex_with_inputs(
        &self,
        digest: VertexDigest,
        name: impl Into<String>,
        inputs: Vec<VertexDigest>,
    ) -> VertexProgress {
        self.emit(
            digest,
            EventKind::Registered {
                name: name.into(),
                inputs,
            },
        );
        self.handle(digest)
    }

    /// A handle on an already registered vertex.
    pub fn handle(&self, digest: VertexDigest) -> VertexProgress {
        VertexProgress {
            sender: self.clone(),
            digest,
        }
    }
}

/// Progress reporting for one vertex; clone it freely (e.g. into a log-pumping task).
#[derive(Debug, Clone)]
pub struct VertexProgress {
    sender: ProgressSender,
    digest: VertexDigest,
}

impl VertexProgress {
    /// The vertex this handle reports on.
    pub fn digest(&self) -> VertexDigest {
        self.digest
    }

    /// The underlying sender.
    pub fn sender(&self) -> &ProgressSender {
        &self.sender
    }

    /// The vertex began running.
    pub fn start(&self) {
        self.sender.emit(self.digest, EventKind::Started);
    }

    /// The vertex's result came from the cache.
    pub fn cached(&self) {
        self.sender.emit(self.digest, EventKind::Cached);
    }

    /// The vertex finished successfully.
    pub fn done(&self) {
        self.sender.emit(self.digest, EventKind::Completed);
    }

    /// The vertex failed with `message`.
    pub fn error(&self, message: impl Into<String>) {
        self.sender.emit(
            self.digest,
            EventKind::Errored {
                message: message.into(),
            },
        );
    }

    /// The vertex was stopped before it finished.
    pub fn canceled(&self) {
        self.sender.emit(self.digest, EventKind::Canceled);
    }

    /// A chunk of output. Empty chunks are not sent.
    pub fn log(&self, stream: LogStream, data: impl Into<Vec<u8>>) {
        let data = data.into();
        if !data.is_empty() {
            self.sender
                .emit(self.digest, EventKind::Log { stream, data });
        }
    }

    /// An [`io::Write`] that turns every write into a log chunk of `stream`.
    pub fn writer(&self, stream: LogStream) -> LogWriter {
        LogWriter {
            vertex: self.clone(),
            stream,
        }
    }

    /// A handle on a status item (transfer) of this vertex, e.g. `sha256:…`.
    pub fn status(&self, id: impl Into<String>) -> StatusProgress {
        StatusProgress {
            vertex: self.clone(),
            id: id.into(),
        }
    }

    /// Attaches a warning to the vertex.
    pub fn warn(&self, warning: Warning) {
        self.sender.emit(self.digest, EventKind::Warning(warning));
    }
}

/// Progress of one item of work inside a vertex (a blob transfer, the context upload).
#[derive(Debug, Clone)]
pub struct StatusProgress {
    vertex: VertexProgress,
    id: String,
}

impl StatusProgress {
    /// The item's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reports `current` of `total` units (bytes) done.
    pub fn update(&self, current: u64, total: Option<u64>) {
        self.send(current, total, false);
    }

    /// Marks the item finished at `current` of `total` units.
    pub fn complete(&self, current: u64, total: Option<u64>) {
        self.send(current, total, true);
    }

    fn send(&self, current: u64, total: Option<u64>, completed: bool) {
        self.vertex.sender.emit(
            self.vertex.digest,
            EventKind::Status {
                id: self.id.clone(),
                current,
                total,
                completed,
            },
        );
    }
}

/// Writes into a vertex's log; see [`VertexProgress::writer`].
#[derive(Debug, Clone)]
pub struct LogWriter {
    vertex: VertexProgress,
    stream: LogStream,
}

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.vertex.log(self.stream, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving side, drained by one display. Iteration ends when every sender is dropped.
#[derive(Debug)]
pub struct ProgressReceiver {
    rx: mpsc::Receiver<ProgressEvent>,
}

impl ProgressReceiver {
    /// Waits for the next event; `None` once all senders are gone and the queue is empty.
    pub fn recv(&self) -> Option<ProgressEvent> {
        self.rx.recv().ok()
    }

    /// Waits at most `timeout` for the next event (for displays that redraw on a timer).
    pub fn recv_timeout(&self, timeout: Duration) -> Received {
        match self.rx.recv_timeout(timeout) {
            Ok(event) => Received::Event(event),
            Err(mpsc::RecvTimeoutError::Timeout) => Received::Timeout,
            Err(mpsc::RecvTimeoutError::Disconnected) => Received::Closed,
        }
    }

    /// Takes an already queued event without waiting.
    pub fn try_recv(&self) -> Received {
        match self.rx.try_recv() {
            Ok(event) => Received::Event(event),
            Err(mpsc::TryRecvError::Empty) => Received::Timeout,
            Err(mpsc::TryRecvError::Disconnected) => Received::Closed,
        }
    }
}

impl Iterator for ProgressReceiver {
    type Item = ProgressEvent;

    fn next(&mut self) -> Option<ProgressEvent> {
        self.recv()
    }
}

/// The outcome of a bounded wait on a [`ProgressReceiver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An event arrived.
    Event(ProgressEvent),
    /// Nothing arrived in time; senders are still alive.
    Timeout,
    /// Every sender is gone and the queue is drained.
    Closed,
}
