//! Makes the layers of RUN steps durable on a thread of their own, while the next steps
//! run: a step's overlay is mounted `volatile`, so its files reach the disk only when
//! synced. Nothing needs them on disk until a cache record refers to them, so the batch
//! that commits records waits for the syncs of their layers ([`LayerSyncer::barrier`])
//! instead of each step waiting for its own fsyncs. The same thread removes what steps
//! leave behind (overlayfs' work dirs), which no step waits for either.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use crate::executor::world::sync_layer;

/// Where the syncs stand.
#[derive(Debug, Default)]
struct Progress {
    /// Layers handed over so far.
    queued: u64,
    /// Layers synced (or failed) so far, in order.
    done: u64,
    /// The first failure: every later barrier reports it.
    failed: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// Work for the thread.
#[derive(Debug)]
enum Job {
    /// Make a committed layer durable.
    Sync(PathBuf),
    /// Remove a tree nothing refers to (a leftover kill leaves it to `prune`).
    Remove(PathBuf),
}

/// The syncing thread, started on the first job.
#[derive(Debug, Default)]
pub(crate) struct LayerSyncer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
}

impl LayerSyncer {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.shared
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a job, starting the thread first if needed.
    fn send(&self, job: Job) -> std::io::Result<bool> {
        let mut sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sender.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let shared = Arc::clone(&self.shared);
            std::thread::Builder::new()
                .name("kiln-layer-sync".into())
                .spawn(move || sync_loop(&rx, &shared))?;
            *sender = Some(tx);
        }
        if matches!(job, Job::Sync(_)) {
            self.progress().queued += 1;
        }
        Ok(matches!(
            sender.as_ref().map(|tx| tx.send(job)),
            Some(Ok(()))
        ))
    }

    /// Removes `tree` on the thread (it must not be needed any more).
    pub(crate) fn discard(&self, tree: PathBuf) -> std::io::Result<()> {
        self.send(Job::Remove(tree)).map(drop)
    }

    /// Queues `layer` (a committed layer directory) to be synced.
    pub(crate) fn submit(&self, layer: PathBuf) -> std::io::Result<()> {
        if !self.send(Job::Sync(layer))? {
            // The thread is gone (it never exits while the sender lives): say so at the
            // next barrier rather than hang there.
            let mut p = self.progress();
            p.failed
                .get_or_insert_with(|| "the layer sync thread stopped".into());
            p.done += 1;
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    /// A wait for every layer queued so far: call it before a record refers to them.
    pub(crate) fn barrier(&self) -> impl Fn() -> std::io::Result<()> + Send + Sync + 'static {
        let target = self.progress().queued;
        let shared = Arc::clone(&self.shared);
        move || {
            let mut p = shared
                .progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            while p.done < target && p.failed.is_none() {
                p = shared
                    .changed
                    .wait(p)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            match &p.failed {
                Some(why) => Err(std::io::Error::other(why.clone())),
                None => Ok(()),
            }
        }
    }
}

/// Fails the barriers still waiting when the thread ends without having done all it was
/// given (a panic): they would wait forever otherwise.
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut p = self
            .0
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if p.done < p.queued {
            p.failed
                .get_or_insert_with(|| "the layer sync thread stopped".into());
        }
        self.0.changed.notify_all();
    }
}

fn sync_loop(rx: &mpsc::Receiver<Job>, shared: &Shared) {
    let _ended = Ended(shared);
    while let Ok(job) = rx.recv() {
        let layer = match job {
            Job::Sync(layer) => layer,
            Job::Remove(tree) => {
                let _ = std::fs::remove_dir_all(&tree);
                continue;
            }
        };
        // The rename into `layers/` too: its directory is synced after the layer.
        let synced = sync_layer(&layer)
            .map_err(|e| e.to_string())
            .and_then(|()| match layer.parent().map(std::fs::File::open) {
                Some(Ok(dir)) => dir.sync_all().map_err(|e| e.to_string()),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            });
        let mut p = shared
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(why) = synced {
            p.failed.get_or_insert(why);
        }
        p.done += 1;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_waits_for_the_layers_queued_before_it() {
        let d = tempfile::tempdir().unwrap();
        let s = LayerSyncer::default();
        assert!(s.barrier()().is_ok(), "nothing queued: nothing to wait for");
        for i in 0..20 {
            let layer = d.path().join(format!("l{i}"));
            std::fs::create_dir(&layer).unwrap();
            std::fs::write(layer.join("f"), "x").unwrap();
            s.submit(layer).unwrap();
        }
        let wait = s.barrier();
        wait().unwrap();
        assert!(s.progress().done >= 20);
        let doomed = d.path().join("doomed");
        std::fs::create_dir_all(doomed.join("a/b")).unwrap();
        s.discard(doomed.clone()).unwrap();
        s.submit(d.path().join("l0")).unwrap();
        s.barrier()().unwrap();
        assert!(
            !doomed.exists(),
            "removed in order, before the sync after it"
        );
        // A layer that cannot be synced fails the barriers after it.
        s.submit(d.path().join("missing")).unwrap();
        assert!(s.barrier()().is_err());
    }
}
