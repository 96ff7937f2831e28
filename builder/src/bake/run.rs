//! Runs a [`Plan`]: each job a `kiln build` child process, independent ones together
//! (bounded), dependents after their dependencies; a failure stops the others unless
//! `--keep-going`.

use super::plan::{Job, Plan};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The number of the first SIGINT or SIGTERM kiln bake receives (0: none yet), so that the
/// runner passes it on to the builds and waits for their cleanup instead of dying first.
fn watch_signals() -> Arc<AtomicI32> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicI32::new(0));
    let set = flag.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(());
            return;
        };
        rt.block_on(async move {
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(());
                return;
            };
            let _ = ready_tx.send(());
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                };
                set.store(sig, Ordering::SeqCst);
            }
        });
    });
    // The handlers are in place before any build starts (bounded: the thread answers at once).
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    flag
}

/// How to run the plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `kiln` executable.
    pub kiln: PathBuf,
    /// `--root`, passed on.
    pub root: Option<PathBuf>,
    /// Build what can be built when a target fails.
    pub keep_going: bool,
    /// Builds at once.
    pub parallel: usize,
    /// Prefix each build's stderr lines with `[target] ` (several builds at once).
    pub prefix: bool,
}

/// What happened to each target.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Built.
    pub succeeded: Vec<String>,
    /// Failed, with the exit status.
    pub failed: Vec<(String, i32)>,
    /// Not built: a dependency failed, or another target's failure stopped the bake.
    pub skipped: Vec<String>,
    /// Each built target's metadata (`--metadata-file` of its build).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// SIGINT or SIGTERM stopped the bake (passed on to the running builds).
    pub signal: Option<i32>,
}

struct Running {
    job: Job,
    child: Child,
    relay: Option<std::thread::JoinHandle<()>>,
}

/// Runs every job of the plan.
pub fn run(plan: &Plan, opts: &RunOptions) -> Outcome {
    let mut pending: Vec<Job> = plan.waves.iter().flatten().cloned().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut out = Outcome::default();
    let mut stopping = false;
    let signal = watch_signals();
    loop {
        let sig = signal.load(Ordering::SeqCst);
        if sig != 0 && out.signal.is_none() {
            out.signal = Some(sig);
            stopping = true;
            stop(&mut running, &mut out, sig);
        }
        // Jobs whose dependency failed or was skipped will not run.
        let mut i = 0;
        while i < pending.len() {
            let blocked = stopping
                || pending[i]
                    .needs
                    .iter()
                    .any(|n| out.failed.iter().any(|(f, _)| f == n) || out.skipped.contains(n));
            if blocked {
                out.skipped.push(pending.remove(i).name);
            } else {
                i += 1;
            }
        }
        while running.len() < opts.parallel.max(1) {
            let Some(pos) = pending
                .iter()
                .position(|j| j.needs.iter().all(|n| out.succeeded.contains(n)))
            else {
                break;
            };
            let job = pending.remove(pos);
            match spawn(&job, opts) {
                Ok(r) => running.push(r),
                Err(e) => {
                    eprintln!("[{}] cannot start kiln build: {e}", job.name);
                    out.failed.push((job.name, 1));
                    stopping |= !opts.keep_going;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut still = Vec::new();
        for mut r in running.drain(..) {
            match r.child.try_wait() {
                Ok(None) => still.push(r),
                Ok(Some(status)) => {
                    if let Some(h) = r.relay.take() {
                        let _ = h.join();
                    }
                    if status.success() {
                        if let Ok(text) = std::fs::read_to_string(&r.job.metadata) {
                            if let Ok(v) = serde_json::from_str(&text) {
                                out.metadata.insert(r.job.name.clone(), v);
                            }
                        }
                        out.succeeded.push(r.job.name);
                    } else {
                        out.failed.push((r.job.name, status.code().unwrap_or(1)));
                        stopping |= !opts.keep_going;
                    }
                }
                Err(e) => {
                    eprintln!("[{}] waiting for kiln build: {e}", r.job.name);
                    out.failed.push((r.job.name, 1));
                    stopping |= !opts.keep_going;
                }
            }
        }
        running = still;
        if stopping {
            stop(&mut running, &mut out, libc::SIGTERM);
        }
    }
    out
}

fn spawn(job: &Job, opts: &RunOptions) -> std::io::Result<Running> {
    tracing::debug!(target = %job.name, args = ?job.args, "bake: starting kiln build");
    let mut cmd = Command::new(&opts.kiln);
    if let Some(root) = &opts.root {
        cmd.arg("--root").arg(root);
    }
    cmd.arg("build").args(&job.args).stdin(Stdio::null());
    if opts.prefix {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let relay = child.stderr.take().map(|err| {
        let name = job.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
            }
        })
    });
    Ok(Running {
        job: job.clone(),
        child,
        relay,
    })
}

/// Stops running builds (with `sig`: they cancel and clean up), waiting for each.
fn stop(running: &mut Vec<Running>, out: &mut Outcome, sig: i32) {
    for r in running.iter() {
        // SAFETY: a signal to our own child, whose id we hold until it is reaped.
        unsafe {
            libc::kill(r.child.id() as libc::pid_t, sig);
        }
    }
    for mut r in running.drain(..) {
        let _ = r.child.wait();
        if let Some(h) = r.relay.take() {
            let _ = h.join();
        }
        out.skipped.push(r.job.name);
    }
}
