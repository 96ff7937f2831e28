//! The `native` executor: the sandbox built with clone(2) namespaces (mount,
//! pid, ipc, uts, and net for `--network=none`), a private /dev and /proc,
//! pivot_root, Docker's default capabilities and no_new_privs.

pub mod cgroup;
pub mod plan;
pub mod spawn;
pub mod sys;

use super::caps::last_cap;
use super::netns::NetworkPool;
use super::output::OutputCallback;
use super::running::RunningSteps;
use super::world::{prepare, World};
use super::{ExecError, ExecOutcome, ExecRequest, Executor, ExecutorConfig};
use spawn::Exit;
use std::sync::Arc;

/// Runs steps with built-in namespaces (needs root).
#[derive(Debug, Clone)]
pub struct NativeExecutor {
    config: ExecutorConfig,
    running: Arc<RunningSteps>,
    networks: Arc<NetworkPool>,
}

impl NativeExecutor {
    /// An executor keeping its scratch space under `config.state_dir`; cleans
    /// up what dead kiln processes left there.
    pub fn new(config: ExecutorConfig) -> Self {
        super::sweep::sweep_runs(&config);
        NativeExecutor {
            networks: NetworkPool::new(config.runs_dir()),
            config,
            running: Arc::default(),
        }
    }

    /// Whether a step's sandbox can be made here: root (in the host's user
    /// namespace or kiln's own) that may create the namespaces a step runs
    /// in. Checked by starting a child in new ones that exits at once.
    pub fn probe() -> Result<(), ExecError> {
        require_root()?;
        spawn::probe_namespaces(plan::STEP_NAMESPACES)
            .map_err(|e| ExecError::Unavailable(format!("cannot create namespaces: {e}")))
    }

    /// Runs a prepared world.
    pub fn run_world(
        &self,
        world: &World,
        output: OutputCallback<'_>,
    ) -> Result<ExecOutcome, ExecError> {
        self.run_world_then(world, output, &|| {})
    }

    /// Runs a prepared world, calling `started` once the step's process runs.
    fn run_world_then(
        &self,
        world: &World,
        output: OutputCallback<'_>,
        started: &dyn Fn(),
    ) -> Result<ExecOutcome, ExecError> {
        // Created first and dropped last: removed once the step is gone.
        let cgroup = cgroup::StepCgroup::create(&world.id)?;
        let mut steps = cgroup.join_steps()?;
        steps.extend(plan::build_plan(world, last_cap())?);
        let result = spawn::run(
            &steps,
            plan::clone_flags(world),
            &self.running,
            output,
            started,
        );
        drop(steps);
        drop(cgroup);
        let (exit, captured) = result?;
        match exit {
            Exit::Code(0) => Ok(ExecOutcome { output: captured }),
            Exit::Code(code) => Err(ExecError::NonZeroExit {
                args: world.args.clone(),
                code,
                output: captured,
            }),
            Exit::Signal(signal) => Err(ExecError::Signaled {
                args: world.args.clone(),
                signal,
                output: captured,
            }),
        }
    }
}

/// Native sandboxes need root: the host's, or kiln's own user namespace's.
fn require_root() -> Result<(), ExecError> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(ExecError::Unavailable(
            "the native executor needs root (rootless builds need an OCI runtime)".into(),
        ));
    }
    Ok(())
}

impl Executor for NativeExecutor {
    fn name(&self) -> String {
        "native".into()
    }

    fn run(&self, req: &ExecRequest, output: OutputCallback<'_>) -> Result<ExecOutcome, ExecError> {
        require_root()?;
        if self.running.is_canceled() {
            return Err(ExecError::Canceled);
        }
        let prepared = prepare(&self.config, req, &self.networks)?;
        // The child's mount namespace holds its own binds of the secrets once it
        // runs: the host's tmpfs goes then, so a killed kiln leaves no secret behind.
        let result = self.run_world_then(&prepared.world, output, &|| prepared.release_secrets());
        prepared.finish();
        result
    }

    fn cancel(&self) {
        self.running.cancel();
        self.networks.close();
    }

    fn warm_up(&self) {
        self.networks.prestart();
    }
}
