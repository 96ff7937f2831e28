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

mod colors;
pub mod feed;
mod log_lines;
pub mod plain;
pub mod rawjson;
mod state;
pub mod summary;
mod timestamp;
pub mod transfers;
pub mod tty;
mod units;
mod warnings;

#[cfg(test)]
mod tests;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use kiln_solver::progress::{ProgressEvent, ProgressReceiver};

pub use feed::Prefixes;
use feed::{Feed, Next};

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
    thread: Option<JoinHandle<BuildSummary>>,
    stop: Arc<AtomicBool>,
}

impl ProgressDisplay {
    /// Starts the display for `mode` on stderr (`auto` is resolved against stderr; a
    /// `TERM=dumb` terminal cannot move its cursor, so it gets `plain`).
    pub fn start(mode: ProgressMode, rx: ProgressReceiver) -> Self {
        Self::start_prefixed(mode, rx, Prefixes::new())
    }

    /// [`ProgressDisplay::start`], the names of the vertices in `prefixes` prefixed as buildx
    /// prefixes a bake target's (`[app 2/4] RUN …`, `[app internal] …`).
    pub fn start_prefixed(mode: ProgressMode, rx: ProgressReceiver, prefixes: Prefixes) -> Self {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        match mode.resolve(io::stderr().is_terminal() && !dumb) {
            ProgressMode::Tty => Self::spawn(rx, prefixes, tty::run),
            other => Self::spawn_writer(other, rx, prefixes, Box::new(io::stderr())),
        }
    }

    /// Starts a text display (`plain`, `rawjson`, `quiet`) writing to `out`; `auto` and
    /// `tty` write `plain` since `out` is not a terminal.
    pub fn start_with_writer(
        mode: ProgressMode,
        rx: ProgressReceiver,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Self::spawn_writer(mode, rx, Prefixes::new(), out)
    }

    fn spawn_writer(
        mode: ProgressMode,
        rx: ProgressReceiver,
        prefixes: Prefixes,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Self::spawn(rx, prefixes, move |feed| match mode.resolve(false) {
            ProgressMode::Rawjson => drain(feed, rawjson::RawJsonPrinter::new(BufWriter::new(out))),
            ProgressMode::Quiet => drain(feed, Quiet),
            _ => drain(feed, plain::PlainPrinter::new(BufWriter::new(out))),
        })
    }

    fn spawn(
        rx: ProgressReceiver,
        prefixes: Prefixes,
        run: impl FnOnce(Feed) -> BuildSummary + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let feed = Feed::new(rx, Arc::clone(&stop)).prefixed(prefixes);
        ProgressDisplay {
            thread: Some(thread::spawn(move || run(feed))),
            stop,
        }
    }

    /// Prints everything sent so far, ends the display (the final tty frame, the warning
    /// summary) and returns the failures and warnings for the CLI to report. Senders may
    /// still be alive: what they send afterwards is dropped.
    pub fn finish(mut self) -> BuildSummary {
        self.stop.store(true, Ordering::Release);
        let joined = self.thread.take().map(JoinHandle::join);
        match joined {
            Some(Ok(summary)) => summary,
            _ => BuildSummary {
                display_error: Some(io::Error::other("progress display thread panicked")),
                ..BuildSummary::default()
            },
        }
    }
}

impl Drop for ProgressDisplay {
    /// A display dropped without [`ProgressDisplay::finish`] (an early error return) stops
    /// on its own instead of waiting for senders that may never go away.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
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
fn drain(feed: Feed, mut printer: impl Printer) -> BuildSummary {
    fn keep(r: io::Result<()>, first_error: &mut Option<io::Error>) {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    let mut first_error = None;
    let mut state = BuildState::default();
    let mut unflushed = false;
    loop {
        let event = match feed.next(Duration::ZERO) {
            Next::Event(event) => event,
            Next::End => break,
            Next::Idle => {
                if unflushed && first_error.is_none() {
                    keep(printer.flush(), &mut first_error);
                }
                unflushed = false;
                match feed.next(Duration::from_secs(1)) {
                    Next::Event(event) => event,
                    Next::Idle => continue,
                    Next::End => break,
                }
            }
        };
        state.apply(&event);
        if first_error.is_none() {
            keep(printer.event(&event), &mut first_error);
            unflushed = true;
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
