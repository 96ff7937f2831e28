//! Stopping a step's OCI container when the build is canceled.
//!
//! `runc run` in the foreground forwards signals to the container's init, but
//! init (pid 1 of its namespace) ignores every signal it has no handler for;
//! only `runc kill <id> KILL` stops it for sure. The container may not exist yet
//! when the cancel comes (the runtime is still creating it), so the kill is
//! retried from a thread until the runtime process has exited.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::oci::OciRuntime;

/// After this long without a successful kill, force-delete the container too.
const DELETE_AFTER: Duration = Duration::from_secs(2);

/// One running container's kill switch; dropping it says the runtime process
/// has exited, which ends any kill loop.
#[derive(Debug)]
pub struct ContainerKill {
    runtime: OciRuntime,
    state_root: PathBuf,
    id: String,
    done: Arc<AtomicBool>,
}

impl ContainerKill {
    /// The kill switch of container `id` in `state_root`.
    pub fn new(runtime: &OciRuntime, state_root: PathBuf, id: &str) -> ContainerKill {
        ContainerKill {
            runtime: runtime.clone(),
            state_root,
            id: id.to_string(),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A closure starting the kill loop (for [`super::running::RunningSteps::track`]):
    /// it returns at once; the loop runs until this switch is dropped.
    pub fn killer(&self) -> impl Fn() + Send + Sync + 'static {
        let (runtime, root, id) = (
            self.runtime.clone(),
            self.state_root.clone(),
            self.id.clone(),
        );
        let done = Arc::clone(&self.done);
        move || {
            let (rt, r, i, d) = (runtime.clone(), root.clone(), id.clone(), Arc::clone(&done));
            let spawned = std::thread::Builder::new()
                .name("kiln-kill".into())
                .spawn(move || kill_loop(&rt, &r, &i, &d));
            if spawned.is_err() {
                // No thread to spare: one attempt from here is better than none.
                kill(&runtime, &root, &id);
            }
        }
    }

    /// Removes what is left of the container (after a canceled run).
    pub fn delete(&self) {
        delete(&self.runtime, &self.state_root, &self.id);
    }
}

impl Drop for ContainerKill {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn kill_loop(runtime: &OciRuntime, root: &Path, id: &str, done: &AtomicBool) {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    let mut deleted = false;
    while !done.load(Ordering::SeqCst) {
        if !kill(runtime, root, id) && !deleted && start.elapsed() > DELETE_AFTER {
            delete(runtime, root, id);
            deleted = true;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// `<runtime> kill <id> KILL`; whether it succeeded.
fn kill(runtime: &OciRuntime, root: &Path, id: &str) -> bool {
    runtime
        .base_command(root)
        .args(["kill", id, "KILL"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `<runtime> delete --force <id>`, errors ignored (it may be gone already).
pub(crate) fn delete(runtime: &OciRuntime, root: &Path, id: &str) {
    let _ = runtime
        .base_command(root)
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
