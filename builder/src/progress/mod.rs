//! Build progress displays: they drain the solver's progress events on their own thread and
//! draw them as buildx does (`tty`, `plain`, `rawjson`) or not at all (`quiet`).
//!
//! ```text
//! let (tx, rx) = kiln_solver::progress::channel();
//! let display = ProgressDisplay::start(mode, rx);
//! solve(&tx, …); drop(tx);           // every sender must be dropped…
//! let summary = display.finish();     // …before waiting for the display
//! for failed in &summary.failed { eprintln!("{failed}"); }
//! ```

mod log_lines;
pub mod plain;
pub mod rawjson;
mod state;
pub mod summary;
mod timestamp;
pub mod tty;
mod units;
mod warnings;

#[cfg(test)]
mod tests;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::thread::{self, JoinHandle};

use kiln_solver::progress::{ProgressEvent, ProgressReceiver, Received};

use state::BuildState;
pub use summary::BuildSummary;

/// The `--progress` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` when stderr is a terminal, else `plain`.
    #[default]
    Auto,
    /// Live redrawn frame (needs a terminal; falls back to `plain` without one).
    Tty,
    /// Numbered text log with every output line.
    Plain,
    /// One BuildKit SolveStatus JSON object per line.
    Rawjson,
    /// No progress output (errors still reach the CLI).
    #[value(alias = "none")]
    Quiet,
}

impl ProgressMode {
    /// The concrete display for this mode, given whether stderr is a terminal.
    pub fn resolve(self, stderr_is_terminal: bool) -> ProgressMode {
        match self {
            ProgressMode::Auto | ProgressMode::Tty if stderr_is_terminal => ProgressMode::Tty,
            ProgressMode::Auto | ProgressMode::Tty => ProgressMode::Plain,
            other => other,
        }
    }
}

/// A display running on its own thread.
#[derive(Debug)]
pub struct ProgressDisplay {
    thread: JoinHandle<BuildSummary>,
}

impl ProgressDisplay {
    /// Starts the display for `mode` on stderr (`auto` is resolved against stderr).
    pub fn start(mode: ProgressMode, rx: ProgressReceiver) -> Self {
        match mode.resolve(io::stderr().is_terminal()) {
            ProgressMode::Tty => ProgressDisplay {
                thread: thread::spawn(move || tty::run(rx)),
            },
            other => Self::start_with_writer(other, rx, Box::new(io::stderr())),
        }
    }

    /// Starts a text display (`plain`, `rawjson`, `quiet`) writing to `out`; `auto` and
    /// `tty` write `plain` since `out` is not a terminal.
    pub fn start_with_writer(
        mode: ProgressMode,
        rx: ProgressReceiver,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let thread = thread::spawn(move || match mode.resolve(false) {
            ProgressMode::Rawjson => drain(rx, rawjson::RawJsonPrinter::new(BufWriter::new(out))),
            ProgressMode::Quiet => drain(rx, Quiet),
            _ => drain(rx, plain::PlainPrinter::new(BufWriter::new(out))),
        });
        ProgressDisplay { thread }
    }

    /// Waits until every sender is dropped and the display has printed everything; returns
    /// the failures and warnings for the CLI to report.
    pub fn finish(self) -> BuildSummary {
        self.thread.join().unwrap_or_else(|_| BuildSummary {
            display_error: Some(io::Error::other("progress display thread panicked")),
            ..BuildSummary::default()
        })
    }
}

/// What the text printers share.
trait Printer {
    fn event(&mut self, event: &ProgressEvent) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

impl<W: Write> Printer for plain::PlainPrinter<W> {
    fn event(&mut self, event: &ProgressEvent) -> io::Result<()> {
        plain::PlainPrinter::event(self, event)
    }
    fn finish(&mut self) -> io::Result<()> {
        plain::PlainPrinter::finish(self)
    }
    fn flush(&mut self) -> io::Result<()> {
        plain::PlainPrinter::flush(self)
    }
}

impl<W: Write> Printer for rawjson::RawJsonPrinter<W> {
    fn event(&mut self, event: &ProgressEvent) -> io::Result<()> {
        rawjson::RawJsonPrinter::event(self, event)
    }
    fn finish(&mut self) -> io::Result<()> {
        rawjson::RawJsonPrinter::finish(self)
    }
    fn flush(&mut self) -> io::Result<()> {
        rawjson::RawJsonPrinter::flush(self)
    }
}

/// `--progress quiet`: prints nothing.
struct Quiet;

impl Printer for Quiet {
    fn event(&mut self, _: &ProgressEvent) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints every event, flushing whenever the queue is momentarily empty (so output is live
/// but a chatty RUN costs one write per batch, not per line). After a write error (closed
/// stderr) it keeps draining so senders never notice, and reports the first error at the end.
fn drain(rx: ProgressReceiver, mut printer: impl Printer) -> BuildSummary {
    fn keep(r: io::Result<()>, first_error: &mut Option<io::Error>) {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    let mut first_error = None;
    let mut state = BuildState::default();
    loop {
        let event = match rx.try_recv() {
            Received::Event(event) => event,
            Received::Closed => break,
            Received::Timeout => {
                if first_error.is_none() {
                    keep(printer.flush(), &mut first_error);
                }
                match rx.recv() {
                    Some(event) => event,
                    None => break,
                }
            }
        };
        state.apply(&event);
        if first_error.is_none() {
            keep(printer.event(&event), &mut first_error);
        }
    }
    if first_error.is_none() {
        keep(printer.finish(), &mut first_error);
    }
    BuildSummary {
        display_error: first_error,
        ..BuildSummary::from_state(&state)
    }
}
