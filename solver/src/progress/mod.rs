//! Build progress: the events the solver emits while it works, independent of any display.
//!
//! Ops and the scheduler hold a cheap, cloneable [`ProgressSender`] (or a per-vertex
//! [`VertexProgress`]); a display drains the matching [`ProgressReceiver`] on its own thread.
//! Sending never blocks (the channel is unbounded) and never fails: when no display listens,
//! events are dropped.

mod channel;
mod event;

pub use channel::{
    channel, synthetic_digest, LogWriter, ProgressReceiver, ProgressSender, Received,
    StatusProgress, VertexProgress,
};
pub use event::{EventKind, LogStream, ProgressEvent, SourceRange, Warning, WarningLocation};

#[cfg(test)]
mod tests;
