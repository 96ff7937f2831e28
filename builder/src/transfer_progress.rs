//! Progress of blob transfers: per-blob bars (indicatif) on a terminal, docker-like plain lines
//! otherwise ("<id>: Pull complete", "<id>: Pushed").

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_oci::Digest;
use kiln_registry::progress::Notices;
use kiln_registry::progress::{BlobStatus, Progress};
use kiln_solver::units::human_size;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// Direction of the transfer, for the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Downloads.
    Pull,
    /// Uploads.
    Push,
}

/// Renders transfer events to stderr (bars) or stdout (plain lines).
pub struct TransferProgress {
    direction: Direction,
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl TransferProgress {
    /// Bars when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(direction: Direction, quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        TransferProgress {
            direction,
            quiet,
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Retry notices on stderr, above the bars when there are bars (even with `quiet`: a
    /// command that waits says why).
    pub fn notices(self: &Arc<Self>) -> Notices {
        let me = Arc::clone(self);
        Notices::new(move |n| match &me.multi {
            Some(m) => m.suspend(|| eprintln!("{n}")),
            None => eprintln!("{n}"),
        })
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => println!("{s}"),
        }
    }
}

impl Progress for TransferProgress {
    fn start(&self, digest: &Digest, size: u64) {
        let Some(m) = &self.multi else { return };
        let bar = m.add(ProgressBar::new(size));
        // Sizes as docker's pull/push bars print them (go-units HumanSize), not indicatif's
        // binary `{bytes}`.
        let style = ProgressStyle::with_template("{prefix}: {msg:12} [{bar:30}] {amount} {rate}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "amount",
                |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let total = s.len().map(human_size).unwrap_or_default();
                    let _ = write!(w, "{}/{total}", human_size(s.pos()));
                },
            )
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", human_size(s.per_sec() as u64));
            })
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(digest.short().to_string());
        bar.set_message(match self.direction {
            Direction::Pull => "Downloading",
            Direction::Push => "Pushing",
        });
        if let Ok(mut b) = self.bars.lock() {
            b.insert(digest.clone(), bar);
        }
    }

    fn advance(&self, digest: &Digest, n: u64) {
        if let Ok(b) = self.bars.lock() {
            if let Some(bar) = b.get(digest) {
                bar.inc(n);
            }
        }
    }

    fn done(&self, digest: &Digest, status: BlobStatus) {
        if let Ok(mut b) = self.bars.lock() {
            if let Some(bar) = b.remove(digest) {
                bar.finish_and_clear();
            }
        }
        let word = match (self.direction, status) {
            (Direction::Pull, BlobStatus::Exists) => "Already exists",
            (Direction::Pull, _) => "Pull complete",
            (Direction::Push, BlobStatus::Exists) => "Layer already exists",
            (Direction::Push, BlobStatus::Mounted) => "Mounted from source",
            (Direction::Push, _) => "Pushed",
        };
        self.line(&format!("{}: {word}", digest.short()));
    }

    fn message(&self, line: &str) {
        self.line(line);
    }
}
