//! The progress event model (BuildKit's `SolveStatus` vocabulary, one transition per event).

use std::time::SystemTime;

use crate::llb::VertexDigest;

/// One progress update about one vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The vertex the event is about (a graph vertex or a [`super::synthetic_digest`]).
    pub vertex: VertexDigest,
    /// When it happened (wall clock, so displays can print timestamps and durations).
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The vertex is part of the build and waits to run. Sent once, before any other event
    /// about it, so displays can count pending work.
    Registered {
        /// Display name, e.g. `[build 2/4] COPY . /src`.
        name: String,
        /// Digests of the vertices it depends on.
        inputs: Vec<VertexDigest>,
    },
    /// The vertex began to run (or to look itself up in the cache).
    Started,
    /// The result came from the cache; nothing ran. Final.
    Cached,
    /// The vertex finished successfully. Final.
    Completed,
    /// The vertex failed. Final.
    Errored {
        /// The error, as the user should read it.
        message: String,
    },
    /// The vertex was stopped because another one failed or the build was interrupted. Final.
    Canceled,
    /// Output of the vertex (a RUN's stdout/stderr), raw bytes as produced, never clipped.
    /// Chunks need not end at line boundaries.
    Log {
        /// Which stream the bytes came from.
        stream: LogStream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Progress of one item of work inside a vertex (a blob transfer, a context upload).
    Status {
        /// Identifies the item within the vertex, e.g. `sha256:…` or `transferring context`.
        id: String,
        /// Units done so far (bytes for transfers).
        current: u64,
        /// Total units, when known.
        total: Option<u64>,
        /// The item is finished; later updates for the same id are not expected.
        completed: bool,
    },
    /// A warning attached to the vertex (lint checks, deprecated usage).
    Warning(Warning),
}

impl EventKind {
    /// Whether the event ends the vertex (cached, completed, errored or canceled).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventKind::Cached
                | EventKind::Completed
                | EventKind::Errored { .. }
                | EventKind::Canceled
        )
    }
}

/// The stream a log chunk came from; the numbers are the file descriptors (BuildKit's `stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

impl LogStream {
    /// The file descriptor number.
    pub fn fd(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }
}

/// A build warning (BuildKit's `VertexWarning`), e.g. a Dockerfile lint check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Warning {
    /// Severity: 1 = warning (BuildKit uses the same scale).
    pub level: u8,
    /// One-line summary, e.g. `JSONArgsRecommended: JSON arguments recommended for CMD …`.
    pub short: String,
    /// Further explanation, one entry per paragraph.
    pub detail: Vec<String>,
    /// Documentation link.
    pub url: Option<String>,
    /// Where in the source the problem is.
    pub location: Option<WarningLocation>,
}

/// The source file and ranges a warning points at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WarningLocation {
    /// File name as shown to the user (e.g. `Dockerfile`).
    pub file: String,
    /// The ranges in that file.
    pub ranges: Vec<SourceRange>,
}

/// A range in a source file; lines and columns are 1-based (0 column = whole line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceRange {
    /// First line.
    pub start_line: u32,
    /// First column.
    pub start_column: u32,
    /// Last line (inclusive).
    pub end_line: u32,
    /// Column after the last character.
    pub end_column: u32,
}
