//! `--progress plain`: BuildKit's numbered text log (`#5 [build 2/4] COPY . /src`, `#5 DONE 0.3s`).
//! Every log line is printed in full, so a failing RUN shows its whole output.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::{EventKind, LogStream, ProgressEvent, Warning};

use super::log_lines::{error_text, LineBuffer};
use super::units;
use super::warnings;

/// Intermediate status updates of one item are printed at most this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct PlainVertex {
    name: Option<String>,
    index: Option<usize>,
    started: Option<SystemTime>,
    ended: bool,
    stdout: LineBuffer,
    stderr: LineBuffer,
    /// Per status id: (first update, last printed update).
    statuses: HashMap<String, (SystemTime, Option<SystemTime>)>,
}

/// Writes the plain progress log for a stream of events.
pub struct PlainPrinter<W: Write> {
    out: W,
    vertices: HashMap<VertexDigest, PlainVertex>,
    order: Vec<VertexDigest>,
    next_index: usize,
    current: Option<VertexDigest>,
    warnings: Vec<Warning>,
}

impl<W: Write> PlainPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W) -> Self {
        PlainPrinter {
            out,
            vertices: HashMap::new(),
            order: Vec::new(),
            next_index: 1,
            current: None,
            warnings: Vec::new(),
        }
    }

    /// The underlying writer (for tests).
    #[cfg_attr(not(test), allow(dead_code))] // used by the display tests
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Prints what `event` changes.
    pub fn event(&mut self, event: &ProgressEvent) -> io::Result<()> {
        let d = event.vertex;
        let at = event.at;
        if !self.vertices.contains_key(&d) {
            self.order.push(d);
        }
        let v = self.vertices.entry(d).or_default();
        match &event.kind {
            EventKind::Registered { name, .. } => {
                v.name = Some(name.clone());
            }
            EventKind::Started => {
                v.started.get_or_insert(at);
                self.focus(d)?;
            }
            EventKind::Log { stream, data } => {
                let started = *v.started.get_or_insert(at);
                let buffer = match stream {
                    LogStream::Stdout => &mut v.stdout,
                    LogStream::Stderr => &mut v.stderr,
                };
                // Out of the map while printing, which needs the printer mutably.
                let mut lines = std::mem::take(buffer);
                let mut result = Ok(());
                lines.push_each(data, |line| {
                    if result.is_ok() {
                        result = self.log_line(d, started, at, line);
                    }
                });
                if let Some(v) = self.vertices.get_mut(&d) {
                    match stream {
                        LogStream::Stdout => v.stdout = lines,
                        LogStream::Stderr => v.stderr = lines,
                    }
                }
                result?;
            }
            EventKind::Status {
                id,
                current,
                total,
                completed,
            } => {
                let (first, last_printed) = v.statuses.entry(id.clone()).or_insert((at, None));
                let first = *first;
                let due = last_printed.is_none_or(|last| {
                    at.duration_since(last).unwrap_or_default() >= STATUS_INTERVAL
                });
                if *completed || due {
                    *last_printed = Some(at);
                    let line = status_line(id, *current, *total, first, at, *completed);
                    let idx = self.focus(d)?;
                    writeln!(self.out, "#{idx} {line}")?;
                }
            }
            EventKind::Warning(w) => self.warnings.push(w.clone()),
            EventKind::Cached => self.end(d, at, |_| "CACHED".to_string())?,
            EventKind::Completed => self.end(d, at, |secs| format!("DONE {secs:.1}s"))?,
            EventKind::Errored { message } => {
                let text = error_text(v.name.as_deref().unwrap_or_default(), message);
                let line = format!("ERROR: {text}");
                self.end(d, at, |_| line)?
            }
            EventKind::Canceled => self.end(d, at, |_| "CANCELED".to_string())?,
        }
        Ok(())
    }

    /// Flushes the writer (the display does it whenever no event is waiting).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Prints unterminated log lines of unfinished vertices and the warning summary.
    pub fn finish(&mut self) -> io::Result<()> {
        for d in self.order.clone() {
            self.flush_partials(d, None)?;
        }
        let summary = warnings::summary(&self.warnings);
        if !summary.is_empty() {
            writeln!(self.out)?;
            for line in summary {
                writeln!(self.out, "{line}")?;
            }
        }
        self.out.flush()
    }

    fn end(
        &mut self,
        d: VertexDigest,
        at: SystemTime,
        text: impl FnOnce(f64) -> String,
    ) -> io::Result<()> {
        let Some(v) = self.vertices.get_mut(&d) else {
            return Ok(());
        };
        if v.ended {
            return Ok(());
        }
        v.ended = true;
        let started = *v.started.get_or_insert(at);
        self.flush_partials(d, Some(at))?;
        let idx = self.focus(d)?;
        let text = text(units::seconds_between(started, at));
        writeln!(self.out, "#{idx} {text}")
    }

    fn flush_partials(&mut self, d: VertexDigest, at: Option<SystemTime>) -> io::Result<()> {
        let Some(v) = self.vertices.get_mut(&d) else {
            return Ok(());
        };
        let rests: Vec<Vec<u8>> = [v.stdout.take_partial(), v.stderr.take_partial()]
            .into_iter()
            .flatten()
            .collect();
        let started = v.started.unwrap_or(SystemTime::UNIX_EPOCH);
        let at = at.unwrap_or(started);
        for rest in rests {
            self.log_line(d, started, at, &rest)?;
        }
        Ok(())
    }

    fn log_line(
        &mut self,
        d: VertexDigest,
        started: SystemTime,
        at: SystemTime,
        line: &[u8],
    ) -> io::Result<()> {
        let idx = self.focus(d)?;
        write!(
            self.out,
            "#{idx} {:.3} ",
            units::seconds_between(started, at)
        )?;
        self.out.write_all(line)?;
        writeln!(self.out)
    }

    /// Makes `d` the vertex being printed: numbers it on first sight and repeats its header
    /// (after a blank line) whenever output switches to it from another vertex.
    fn focus(&mut self, d: VertexDigest) -> io::Result<usize> {
        let next = self.next_index;
        let v = self.vertices.entry(d).or_default();
        let idx = *v.index.get_or_insert(next);
        if idx == next {
            self.next_index += 1;
        }
        if self.current != Some(d) {
            if self.current.is_some() {
                writeln!(self.out)?;
            }
            let name = v.name.clone().unwrap_or_else(|| d.to_string());
            writeln!(self.out, "#{idx} {name}")?;
            self.current = Some(d);
        }
        Ok(idx)
    }
}

/// `sha256:abcd 1.05MB / 2.10MB 0.4s` or `… done`.
fn status_line(
    id: &str,
    current: u64,
    total: Option<u64>,
    first: SystemTime,
    at: SystemTime,
    completed: bool,
) -> String {
    let mut s = id.to_string();
    let amount = units::progress(current, total);
    if !amount.is_empty() {
        s.push(' ');
        s.push_str(&amount);
    }
    let secs = units::seconds_between(first, at);
    if secs > 0.01 {
        s.push_str(&format!(" {secs:.1}s"));
    }
    if completed {
        s.push_str(" done");
    }
    s
}
