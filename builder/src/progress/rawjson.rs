//! `--progress rawjson`: one BuildKit `SolveStatus` JSON object per event per line, as
//! `buildx build --progress rawjson` prints (`vertexes`, `statuses`, `logs`, `warnings`).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::SystemTime;

use base64::Engine as _;
use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::{EventKind, ProgressEvent, Warning};
use serde::Serialize;

use super::log_lines::error_text;
use super::timestamp::rfc3339_nano;

/// BuildKit's `client.SolveStatus` with only the non-empty lists written.
#[derive(Serialize, Default)]
struct SolveStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<JsonVertex>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<JsonLog>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<JsonWarning>,
}

/// BuildKit's `client.Vertex`: the whole vertex is repeated on every change.
#[derive(Serialize, Default, Clone)]
struct JsonVertex {
    digest: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// BuildKit's `client.VertexStatus`.
#[derive(Serialize)]
struct JsonStatus {
    id: String,
    vertex: String,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    current: u64,
    timestamp: String,
    started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
}

/// BuildKit's `client.VertexLog`; `data` is base64 like Go's `[]byte`.
#[derive(Serialize)]
struct JsonLog {
    vertex: String,
    stream: u8,
    data: String,
    timestamp: String,
}

/// BuildKit's `client.VertexWarning`; `short` and `detail` are base64 like Go's `[]byte`.
#[derive(Serialize)]
struct JsonWarning {
    vertex: String,
    #[serde(skip_serializing_if = "is_zero_u8")]
    level: u8,
    short: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detail: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(rename = "sourceInfo", skip_serializing_if = "Option::is_none")]
    source_info: Option<JsonSourceInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    range: Vec<JsonRange>,
}

#[derive(Serialize)]
struct JsonSourceInfo {
    filename: String,
}

#[derive(Serialize)]
struct JsonRange {
    start: JsonPosition,
    end: JsonPosition,
}

#[derive(Serialize)]
struct JsonPosition {
    #[serde(skip_serializing_if = "is_zero_u32")]
    line: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    character: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Writes one JSON line per event.
pub struct RawJsonPrinter<W: Write> {
    out: W,
    vertices: HashMap<VertexDigest, JsonVertex>,
    status_started: HashMap<(VertexDigest, String), SystemTime>,
}

impl<W: Write> RawJsonPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W) -> Self {
        RawJsonPrinter {
            out,
            vertices: HashMap::new(),
            status_started: HashMap::new(),
        }
    }

    /// The underlying writer (for tests).
    #[cfg_attr(not(test), allow(dead_code))] // used by the display tests
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes the JSON line for `event`.
    pub fn event(&mut self, event: &ProgressEvent) -> io::Result<()> {
        let status = self.status_for(event);
        serde_json::to_writer(&mut self.out, &status)?;
        self.out.write_all(b"\n")
    }

    /// Flushes the writer (the display does it whenever no event is waiting).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Nothing is pending in this format; flushes the writer.
    pub fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn status_for(&mut self, event: &ProgressEvent) -> SolveStatus {
        let d = event.vertex;
        let at = rfc3339_nano(event.at);
        let digest = d.to_string();
        let mut out = SolveStatus::default();
        let v = self.vertices.entry(d).or_insert_with(|| JsonVertex {
            digest: digest.clone(),
            ..Default::default()
        });
        match &event.kind {
            EventKind::Registered { name, inputs } => {
                v.name = name.clone();
                v.inputs = inputs.iter().map(|i| i.to_string()).collect();
                out.vertexes.push(v.clone());
            }
            EventKind::Started => {
                v.started.get_or_insert(at);
                out.vertexes.push(v.clone());
            }
            EventKind::Cached | EventKind::Completed | EventKind::Canceled => {
                v.started.get_or_insert_with(|| at.clone());
                v.completed = Some(at);
                v.cached = matches!(event.kind, EventKind::Cached);
                if matches!(event.kind, EventKind::Canceled) {
                    // BuildKit reports a cancelled vertex with Go's context error.
                    v.error = "context canceled".to_string();
                }
                out.vertexes.push(v.clone());
            }
            EventKind::Errored { message } => {
                v.started.get_or_insert_with(|| at.clone());
                v.completed = Some(at);
                v.error = error_text(&v.name, message).to_string();
                out.vertexes.push(v.clone());
            }
            EventKind::Log { stream, data } => out.logs.push(JsonLog {
                vertex: digest,
                stream: stream.fd(),
                data: b64(data),
                timestamp: at,
            }),
            EventKind::Status {
                id,
                current,
                total,
                completed,
            } => {
                let started = *self
                    .status_started
                    .entry((d, id.clone()))
                    .or_insert(event.at);
                out.statuses.push(JsonStatus {
                    id: id.clone(),
                    vertex: digest,
                    total: total.unwrap_or(0),
                    current: *current,
                    started: rfc3339_nano(started),
                    completed: completed.then(|| at.clone()),
                    timestamp: at,
                });
            }
            EventKind::Warning(w) => out.warnings.push(json_warning(digest, w)),
        }
        out
    }
}

fn json_warning(vertex: String, w: &Warning) -> JsonWarning {
    let (source_info, range) = match &w.location {
        Some(loc) => (
            Some(JsonSourceInfo {
                filename: loc.file.clone(),
            }),
            loc.ranges
                .iter()
                .map(|r| JsonRange {
                    start: JsonPosition {
                        line: r.start_line,
                        character: r.start_column,
                    },
                    end: JsonPosition {
                        line: r.end_line,
                        character: r.end_column,
                    },
                })
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    JsonWarning {
        vertex,
        level: w.level,
        short: b64(w.short.as_bytes()),
        detail: w.detail.iter().map(|d| b64(d.as_bytes())).collect(),
        url: w.url.clone(),
        source_info,
        range,
    }
}
