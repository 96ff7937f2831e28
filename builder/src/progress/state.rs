//! The build as a display sees it: every vertex folded from the event stream.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::{EventKind, LogStream, ProgressEvent, Warning};

use super::log_lines::{error_text, sanitize, LineBuffer};

/// How many recent log lines the terminal display shows under a running vertex.
pub const LOG_TAIL: usize = 6;

/// How many recent log lines a vertex keeps (for the failure summary after the build).
pub const KEPT_LINES: usize = 10;

/// How many bytes of one log line the state keeps (the end of it).
const KEPT_LINE_BYTES: usize = 4096;

/// How a vertex ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken from the cache.
    Cached,
    /// Ran successfully.
    Done,
    /// Failed with this message.
    Error(String),
    /// Stopped before finishing.
    Canceled,
}

/// One status item (transfer) of a vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusState {
    /// Item id (`sha256:…`, `transferring context`).
    pub id: String,
    /// Units done.
    pub current: u64,
    /// Total units when known.
    pub total: Option<u64>,
    /// First update.
    pub started: SystemTime,
    /// Completion time, once finished.
    pub completed: Option<SystemTime>,
}

/// Everything known about one vertex.
#[derive(Debug, Clone)]
pub struct VertexState {
    /// The vertex digest.
    pub digest: VertexDigest,
    /// Display name.
    pub name: String,
    /// Input digests.
    pub inputs: Vec<VertexDigest>,
    /// When it started running.
    pub started: Option<SystemTime>,
    /// When it ended.
    pub completed: Option<SystemTime>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Status items in first-seen order.
    pub statuses: Vec<StatusState>,
    /// The last [`KEPT_LINES`] complete log lines, raw (sanitized when shown).
    log_tail: VecDeque<Vec<u8>>,
    /// Unterminated output per stream ([stdout, stderr]): a partial line of one stream must
    /// not be glued to the next chunk of the other.
    log_buffers: [LineBuffer; 2],
}

impl VertexState {
    fn new(digest: VertexDigest) -> Self {
        VertexState {
            digest,
            name: digest.to_string(),
            inputs: Vec::new(),
            started: None,
            completed: None,
            outcome: None,
            statuses: Vec::new(),
            log_tail: VecDeque::new(),
            log_buffers: [
                LineBuffer::with_limit(KEPT_LINE_BYTES),
                LineBuffer::with_limit(KEPT_LINE_BYTES),
            ],
        }
    }

    /// Whether the vertex is running now (started, not ended).
    pub fn is_running(&self) -> bool {
        self.started.is_some() && self.outcome.is_none()
    }

    /// Whether the vertex has anything to show (it started or ended).
    pub fn is_visible(&self) -> bool {
        self.started.is_some() || self.outcome.is_some()
    }

    /// The last `n` log lines, counting unterminated lines being written.
    pub fn recent_lines(&self, n: usize) -> Vec<String> {
        let partials: Vec<&[u8]> = self
            .log_buffers
            .iter()
            .map(LineBuffer::partial)
            .filter(|p| !p.is_empty())
            .collect();
        let total = self.log_tail.len() + partials.len();
        self.log_tail
            .iter()
            .map(Vec::as_slice)
            .chain(partials)
            .skip(total.saturating_sub(n))
            .map(sanitize)
            .collect()
    }

    fn push_log(&mut self, stream: LogStream, data: &[u8]) {
        let tail = &mut self.log_tail;
        let buffer = match stream {
            LogStream::Stdout => &mut self.log_buffers[0],
            LogStream::Stderr => &mut self.log_buffers[1],
        };
        buffer.push_each(data, |line| push_line(tail, line));
    }
}

/// Appends `line` to a tail of at most [`KEPT_LINES`], reusing the dropped line's buffer.
fn push_line(tail: &mut VecDeque<Vec<u8>>, line: &[u8]) {
    let mut buf = if tail.len() >= KEPT_LINES {
        tail.pop_front().unwrap_or_default()
    } else {
        Vec::new()
    };
    buf.clear();
    buf.extend_from_slice(line);
    tail.push_back(buf);
}

/// All vertices of a build in first-seen order, plus its warnings.
#[derive(Debug, Clone, Default)]
pub struct BuildState {
    order: Vec<VertexDigest>,
    vertices: HashMap<VertexDigest, VertexState>,
    /// The first event's time: the build's start.
    pub first_event: Option<SystemTime>,
    /// The latest event's time.
    pub last_event: Option<SystemTime>,
    /// Warnings with the vertex they belong to, in arrival order.
    pub warnings: Vec<(VertexDigest, Warning)>,
}

impl BuildState {
    /// Folds one event into the state.
    pub fn apply(&mut self, event: &ProgressEvent) {
        let at = event.at;
        self.first_event = Some(self.first_event.map_or(at, |t| t.min(at)));
        self.last_event = Some(self.last_event.map_or(at, |t| t.max(at)));
        let v = self.vertex_mut(event.vertex);
        match &event.kind {
            EventKind::Registered { name, inputs } => {
                v.name = name.clone();
                v.inputs = inputs.clone();
            }
            EventKind::Started => {
                v.started.get_or_insert(at);
            }
            EventKind::Log { stream, data } => v.push_log(*stream, data),
            EventKind::Status {
                id,
                current,
                total,
                completed,
            } => {
                let completed_at = completed.then_some(at);
                match v.statuses.iter_mut().find(|s| &s.id == id) {
                    Some(s) => {
                        s.current = *current;
                        s.total = *total;
                        if s.completed.is_none() {
                            s.completed = completed_at;
                        }
                    }
                    None => v.statuses.push(StatusState {
                        id: id.clone(),
                        current: *current,
                        total: *total,
                        started: at,
                        completed: completed_at,
                    }),
                }
            }
            EventKind::Warning(w) => {
                let digest = v.digest;
                self.warnings.push((digest, w.clone()));
            }
            EventKind::Cached => v.end(at, Outcome::Cached),
            EventKind::Completed => v.end(at, Outcome::Done),
            EventKind::Errored { message } => {
                let text = error_text(&v.name, message).to_string();
                v.end(at, Outcome::Error(text))
            }
            EventKind::Canceled => v.end(at, Outcome::Canceled),
        }
    }

    fn vertex_mut(&mut self, digest: VertexDigest) -> &mut VertexState {
        let order = &mut self.order;
        self.vertices.entry(digest).or_insert_with(|| {
            order.push(digest);
            VertexState::new(digest)
        })
    }

    /// Vertices in first-seen order.
    pub fn vertices(&self) -> impl Iterator<Item = &VertexState> {
        self.order.iter().filter_map(|d| self.vertices.get(d))
    }

    /// One vertex.
    #[cfg_attr(not(test), allow(dead_code))] // used by the display tests
    pub fn vertex(&self, digest: &VertexDigest) -> Option<&VertexState> {
        self.vertices.get(digest)
    }

    /// (ended, known) vertex counts, for the `(7/9)` header.
    pub fn counts(&self) -> (usize, usize) {
        let done = self.vertices().filter(|v| v.outcome.is_some()).count();
        (done, self.order.len())
    }

    /// Whether some vertex failed.
    pub fn has_error(&self) -> bool {
        self.vertices()
            .any(|v| matches!(v.outcome, Some(Outcome::Error(_))))
    }
}

impl VertexState {
    fn end(&mut self, at: SystemTime, outcome: Outcome) {
        if self.outcome.is_some() {
            return;
        }
        self.started.get_or_insert(at);
        self.completed = Some(at);
        for buffer in &mut self.log_buffers {
            if let Some(rest) = buffer.take_partial() {
                push_line(&mut self.log_tail, &rest);
            }
        }
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::{synthetic_digest, LogStream};
    use std::time::{Duration, UNIX_EPOCH};

    fn ev(name: &str, ms: u64, kind: EventKind) -> ProgressEvent {
        ProgressEvent {
            vertex: synthetic_digest(name),
            at: UNIX_EPOCH + Duration::from_millis(ms),
            kind,
        }
    }

    #[test]
    fn folds_transitions_logs_and_statuses() {
        let mut s = BuildState::default();
        for e in [
            ev(
                "a",
                0,
                EventKind::Registered {
                    name: "A".into(),
                    inputs: vec![],
                },
            ),
            ev(
                "b",
                0,
                EventKind::Registered {
                    name: "B".into(),
                    inputs: vec![],
                },
            ),
            ev("a", 10, EventKind::Started),
            ev(
                "a",
                20,
                EventKind::Log {
                    stream: LogStream::Stdout,
                    data: b"1\n2\n3\n4\n5\n6\n7\npart".to_vec(),
                },
            ),
            ev(
                "a",
                30,
                EventKind::Status {
                    id: "sha256:x".into(),
                    current: 5,
                    total: Some(10),
                    completed: false,
                },
            ),
            ev(
                "a",
                40,
                EventKind::Status {
                    id: "sha256:x".into(),
                    current: 10,
                    total: Some(10),
                    completed: true,
                },
            ),
        ] {
            s.apply(&e);
        }
        assert_eq!(s.counts(), (0, 2));
        let a = s.vertex(&synthetic_digest("a"));
        assert!(a.is_some_and(|a| a.is_running()));
        assert_eq!(
            a.map(|a| a.recent_lines(LOG_TAIL)),
            Some(
                vec!["3", "4", "5", "6", "7", "part"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        let st = a.and_then(|a| a.statuses.first()).cloned();
        assert_eq!(
            st.as_ref().map(|s| (s.current, s.completed.is_some())),
            Some((10, true))
        );
        assert_eq!(
            st.map(|s| s.started),
            Some(UNIX_EPOCH + Duration::from_millis(30))
        );

        s.apply(&ev(
            "a",
            50,
            EventKind::Errored {
                message: "exit 1".into(),
            },
        ));
        s.apply(&ev("a", 60, EventKind::Completed));
        s.apply(&ev("b", 70, EventKind::Cached));
        assert_eq!(s.counts(), (2, 2));
        assert!(s.has_error());
        let a = s.vertex(&synthetic_digest("a"));
        assert_eq!(
            a.and_then(|a| a.outcome.clone()),
            Some(Outcome::Error("exit 1".into()))
        );
        assert_eq!(a.and_then(|a| a.recent_lines(1).pop()), Some("part".into()));
        let b = s.vertex(&synthetic_digest("b"));
        assert_eq!(b.and_then(|b| b.started), b.and_then(|b| b.completed));
        let names: Vec<&str> = s.vertices().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn streams_do_not_glue_partial_lines() {
        let mut s = BuildState::default();
        let log = |stream, data: &[u8]| EventKind::Log {
            stream,
            data: data.to_vec(),
        };
        s.apply(&ev("a", 0, log(LogStream::Stdout, b"progress 50%")));
        s.apply(&ev("a", 1, log(LogStream::Stderr, b"warning: x\n")));
        s.apply(&ev("a", 2, log(LogStream::Stdout, b" 100%\n")));
        let lines = s
            .vertex(&synthetic_digest("a"))
            .map(|v| v.recent_lines(KEPT_LINES));
        assert_eq!(
            lines,
            Some(vec![
                "warning: x".to_string(),
                "progress 50% 100%".to_string()
            ])
        );
    }

    #[test]
    fn unregistered_vertex_is_named_by_digest() {
        let mut s = BuildState::default();
        s.apply(&ev("z", 0, EventKind::Started));
        let name = s.vertices().next().map(|v| v.name.clone());
        assert_eq!(name, Some(synthetic_digest("z").to_string()));
    }
}
