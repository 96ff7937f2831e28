//! An executor chosen on first use: picking one probes the OCI runtimes by starting a
//! container (tens to hundreds of ms), which a build whose every step is cached never needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::output::OutputCallback;
use super::{select, ExecError, ExecOutcome, ExecRequest, Executor, ExecutorConfig, ExecutorKind};

/// [`select`] deferred until the first [`Executor::run`]; the choice (or its error) is kept
/// for the rest of the build.
pub struct LazyExecutor {
    kind: ExecutorKind,
    config: ExecutorConfig,
    chosen: Arc<OnceLock<Result<Box<dyn Executor>, String>>>,
    /// Set by [`Executor::cancel`]: no step starts (nor selection probes) after it.
    canceled: AtomicBool,
    /// Whether the build has steps to run, so [`Executor::warm_up`] may select.
    steps_expected: bool,
    /// The background selection started by [`Executor::warm_up`].
    warming: Mutex<Option<JoinHandle<()>>>,
}

impl LazyExecutor {
    /// An executor of `kind`, selected when a step first runs. Run directories that dead
    /// kiln processes left mounted are cleaned now, as selecting would (cheap: a directory
    /// listing); their OCI containers wait for the selection (listing them runs the runtime).
    pub fn new(kind: ExecutorKind, config: ExecutorConfig) -> LazyExecutor {
        super::sweep::sweep_runs(&config);
        LazyExecutor {
            kind,
            config,
            chosen: Arc::new(OnceLock::new()),
            canceled: AtomicBool::new(false),
            steps_expected: false,
            warming: Mutex::new(None),
        }
    }

    /// Whether the build has RUN steps at all: only then does
    /// [`Executor::warm_up`] select the executor ahead of the first step, so
    /// the probe overlaps the work before it (a build whose steps are all
    /// cached never warms up: nothing executes).
    pub fn expecting_steps(mut self, yes: bool) -> LazyExecutor {
        self.steps_expected = yes;
        self
    }

    /// Whether the executor has been selected (a step ran).
    pub fn is_selected(&self) -> bool {
        self.chosen.get().is_some()
    }

    fn get(&self) -> Result<&dyn Executor, ExecError> {
        let mut first_error = None;
        let chosen = self.chosen.get_or_init(|| {
            select(self.kind, self.config.clone()).map_err(|e| {
                let message = e.to_string();
                first_error = Some(e);
                message
            })
        });
        match (chosen, first_error) {
            (Ok(e), _) => Ok(e.as_ref()),
            // The first caller gets the selection's own error; later ones its words.
            (Err(_), Some(e)) => Err(e),
            (Err(message), None) => Err(ExecError::Unavailable(message.clone())),
        }
    }
}

impl Executor for LazyExecutor {
    fn name(&self) -> String {
        match self.chosen.get() {
            Some(Ok(e)) => e.name(),
            _ => format!("{:?} (not selected yet)", self.kind).to_lowercase(),
        }
    }

    fn run(&self, req: &ExecRequest, output: OutputCallback<'_>) -> Result<ExecOutcome, ExecError> {
        if self.canceled.load(Ordering::SeqCst) {
            return Err(ExecError::Canceled);
        }
        let chosen = self.get()?;
        // A cancel during the selection missed this executor: pass it on.
        if self.canceled.load(Ordering::SeqCst) {
            chosen.cancel();
        }
        chosen.run(req, output)
    }

    fn cancel(&self) {
        self.canceled.store(true, Ordering::SeqCst);
        if let Some(Ok(e)) = self.chosen.get() {
            e.cancel();
        }
    }

    fn warm_up(&self) {
        if !self.steps_expected
            || self.canceled.load(Ordering::SeqCst)
            || self.chosen.get().is_some()
        {
            return;
        }
        let mut warming = self
            .warming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warming.is_some() {
            return;
        }
        let (chosen, kind, config) = (Arc::clone(&self.chosen), self.kind, self.config.clone());
        // The first step blocks on the same OnceLock until this is done.
        *warming = std::thread::Builder::new()
            .name("kiln-executor-select".into())
            .spawn(move || {
                let chosen = chosen.get_or_init(|| select(kind, config).map_err(|e| e.to_string()));
                // Then what its first step needs (a network).
                if let Ok(e) = chosen {
                    e.warm_up();
                }
            })
            .ok();
    }
}

impl Drop for LazyExecutor {
    /// Waits for a background selection: its probe container is not left
    /// half made when the build ends first.
    fn drop(&mut self) {
        let warming = self
            .warming
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = warming {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_probed_until_a_step_runs() {
        let d = tempfile::tempdir().unwrap();
        let lazy = LazyExecutor::new(
            ExecutorKind::Native,
            ExecutorConfig {
                state_dir: d.path().to_path_buf(),
            },
        );
        assert!(!lazy.is_selected());
        assert!(lazy.name().contains("not selected"), "{}", lazy.name());
        assert!(lazy.get().is_ok());
        assert!(lazy.is_selected());
        assert_eq!(lazy.name(), "native");
    }

    #[test]
    fn cancel_reaches_the_chosen_executor_and_refuses_new_steps() {
        let d = tempfile::tempdir().unwrap();
        let lazy = LazyExecutor::new(
            ExecutorKind::Native,
            ExecutorConfig {
                state_dir: d.path().to_path_buf(),
            },
        );
        lazy.cancel();
        let req = ExecRequest::new(
            crate::snapshot::overlay::Overlay {
                lowers: vec![],
                upper: d.path().join("upper"),
                work: d.path().join("work"),
            },
            vec!["/bin/true".into()],
        );
        assert!(matches!(
            lazy.run(&req, &mut |_, _| {}),
            Err(ExecError::Canceled)
        ));
        assert!(!lazy.is_selected(), "a canceled build probes nothing");
    }

    #[test]
    fn warm_up_selects_in_the_background_only_when_steps_are_expected() {
        let d = tempfile::tempdir().unwrap();
        let config = ExecutorConfig {
            state_dir: d.path().to_path_buf(),
        };
        let idle = LazyExecutor::new(ExecutorKind::Native, config.clone());
        idle.warm_up();
        assert!(idle.warming.lock().unwrap().is_none());
        assert!(!idle.is_selected());

        let lazy = LazyExecutor::new(ExecutorKind::Native, config).expecting_steps(true);
        lazy.warm_up();
        lazy.warm_up();
        let thread = lazy
            .warming
            .lock()
            .unwrap()
            .take()
            .expect("a selection thread");
        thread.join().unwrap();
        assert!(lazy.is_selected());
        assert_eq!(lazy.name(), "native");
        assert!(lazy.get().is_ok());
    }
}
