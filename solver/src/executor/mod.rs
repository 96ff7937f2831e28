//! RUN executors: one trait, two implementations.
//!
//! `oci` writes a runtime-spec bundle and runs `crun`/`runc`; `native` builds the
//! sandbox itself with Linux namespaces and `pivot_root`. Both start from the same
//! [`world::World`] (the overlay rootfs, resolved user, mounts and /etc files) so
//! they behave the same and pass the same tests.

pub mod caps;
pub mod cgroup_view;
pub mod emulation;
pub mod env;
pub mod hosts;
pub mod lazy;
pub mod native;
pub mod netns;
pub mod oci;
pub mod oci_kill;
pub mod oci_spec;
pub mod output;
pub mod pump;
pub mod running;
pub mod scratch;
pub mod sealed_exe;
pub mod seccomp;
pub mod sweep;
pub mod user;
pub mod world;

use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use crate::mounts::MountSpec;
use crate::snapshot::overlay::{Overlay, OverlayError};
pub use hosts::HostEntry;
pub use output::{CapturedOutput, OutputCallback, Stream};
use user::UserError;

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The sandbox default: an own network namespace with outbound access
    /// through slirp4netns (see [`netns`]); the host's loopback is out of reach.
    #[default]
    Default,
    /// An own network namespace with only `lo` up.
    None,
    /// The host's network namespace (needs `--allow network.host` upstream).
    Host,
}

impl NetworkMode {
    /// Whether the step gets its own network namespace.
    pub fn isolated(self) -> bool {
        self != NetworkMode::Host
    }
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// Docker's default capabilities, no_new_privs, read-only sysfs.
    #[default]
    Sandbox,
    /// All capabilities, as `--privileged` (needs `--allow security.insecure`).
    Insecure,
}

/// One RUN step to execute.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The rootfs: layers below, a fresh upper dir that receives the new layer.
    pub rootfs: Overlay,
    /// argv (see [`shell_args`] for the shell form).
    pub args: Vec<String>,
    /// `KEY=VALUE` entries; PATH and HOME are filled in when missing.
    pub env: Vec<String>,
    /// Working directory in the container, created when missing.
    pub cwd: String,
    /// `user[:group]` by name or number; empty means root.
    pub user: String,
    /// Hostname; `None` means [`hosts::DEFAULT_HOSTNAME`].
    pub hostname: Option<String>,
    /// `--add-host` entries for /etc/hosts.
    pub extra_hosts: Vec<HostEntry>,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
    /// RUN mounts.
    pub mounts: Vec<MountSpec>,
}

impl ExecRequest {
    /// A request running `args` as root in `/` with defaults for everything else.
    pub fn new(rootfs: Overlay, args: Vec<String>) -> Self {
        ExecRequest {
            rootfs,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: String::new(),
            hostname: None,
            extra_hosts: Vec::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            mounts: Vec::new(),
        }
    }
}

/// argv for the shell form of RUN: the shell (e.g. `/bin/sh -c`) plus the command.
pub fn shell_args(shell: &[String], command: &str) -> Vec<String> {
    let mut v = shell.to_vec();
    v.push(command.to_string());
    v
}

/// Where executors keep per-step scratch space and cache mounts.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The state directory (`--root`); uses `cache-mounts/` in it, and `executor/` unless
    /// a tmpfs holds steps' scratch (see [`scratch`]).
    pub state_dir: PathBuf,
}

impl ExecutorConfig {
    /// Steps' scratch: run directories, the OCI runtime's state, generated /etc files.
    pub fn executor_dir(&self) -> PathBuf {
        scratch::executor_dir(&self.state_dir)
    }

    /// Per-step scratch directories.
    pub fn runs_dir(&self) -> PathBuf {
        self.executor_dir().join("runs")
    }

    /// Persistent cache mounts.
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.state_dir.join("cache-mounts")
    }
}

/// A step that ran to completion with exit code 0.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// Everything the process wrote.
    pub output: CapturedOutput,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process exited non-zero.
    #[error("process {:?} did not complete successfully: exit code: {code}", .args.join(" "))]
    NonZeroExit {
        /// argv.
        args: Vec<String>,
        /// The exit code.
        code: i32,
        /// The whole output (see [`CapturedOutput::last_lines`]).
        output: CapturedOutput,
    },
    /// The process was killed by a signal.
    #[error("process {:?} was killed by signal {signal}", .args.join(" "))]
    Signaled {
        /// argv.
        args: Vec<String>,
        /// The signal number.
        signal: i32,
        /// The whole output.
        output: CapturedOutput,
    },
    /// The executable was not found or could not be executed.
    #[error("failed to start {program:?}: {message}")]
    Exec {
        /// argv\[0\].
        program: String,
        /// Why.
        message: String,
    },
    /// Setting up the sandbox failed.
    #[error("setting up the sandbox: {step}: {source}")]
    Setup {
        /// What was being done.
        step: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The user could not be resolved.
    #[error(transparent)]
    User(#[from] UserError),
    /// The rootfs overlay could not be mounted.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// The OCI runtime failed before or around the process.
    #[error("{runtime}: {message}")]
    Runtime {
        /// Runtime name (`runc`, `crun`).
        runtime: String,
        /// Its error message.
        message: String,
    },
    /// The seccomp profile could not be compiled (native executor).
    #[error(transparent)]
    Seccomp(#[from] seccomp::bpf::CompileError),
    /// The request itself is invalid.
    #[error("invalid exec request: {0}")]
    Invalid(String),
    /// No executor can run here.
    #[error("no usable executor: {0}")]
    Unavailable(String),
    /// The step was stopped (or never started) because the build was canceled.
    #[error("canceled")]
    Canceled,
}

impl ExecError {
    /// The captured output of a failed process, if it ran.
    pub fn output(&self) -> Option<&CapturedOutput> {
        match self {
            ExecError::NonZeroExit { output, .. } | ExecError::Signaled { output, .. } => {
                Some(output)
            }
            _ => None,
        }
    }

    pub(crate) fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> ExecError {
        let step = step.into();
        move |source| ExecError::Setup { step, source }
    }
}

/// Runs RUN steps in a sandbox.
pub trait Executor: Send + Sync {
    /// A short name for progress and errors (`native`, `oci:runc`).
    fn name(&self) -> String;

    /// Runs one step to completion, streaming output to `output`. Blocking; the
    /// scheduler calls it from a blocking thread.
    fn run(&self, req: &ExecRequest, output: OutputCallback<'_>) -> Result<ExecOutcome, ExecError>;

    /// Kills every running step's processes and refuses new steps from now on
    /// (the build is being canceled): each `run` in progress returns
    /// [`ExecError::Canceled`] once its sandbox is torn down. Not blocking.
    /// Required (no default) so that no wrapper silently drops it.
    fn cancel(&self);

    /// Starts, in the background, what the first step would otherwise wait
    /// for (choosing a runtime: a probe container). Called when a build starts
    /// doing work; not blocking.
    fn warm_up(&self) {}
}

/// `--executor auto|oci|native`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// Native where it can sandbox a step (root, or kiln's own user namespace
    /// when rootless), else an OCI runtime from PATH.
    #[default]
    Auto,
    /// crun or runc.
    Oci,
    /// Built-in namespaces.
    Native,
}

impl FromStr for ExecutorKind {
    type Err = ExecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ExecutorKind::Auto),
            "oci" => Ok(ExecutorKind::Oci),
            "native" => Ok(ExecutorKind::Native),
            other => Err(ExecError::Invalid(format!(
                "unknown executor {other:?} (expected auto, oci or native)"
            ))),
        }
    }
}

/// Picks an executor. `Auto` takes the native one where it can make a
/// sandbox here, else the first OCI runtime on PATH that works on this host
/// (crun, then runc).
///
/// Native comes first because it starts a step fastest: no runtime binary to
/// start and link, no bundle to write and parse, and the step's cgroups are
/// made without a runtime's freeze and teardown. Per RUN step on this project's
/// test host, 500 steps: native 10.9 ms, crun 19.6 ms, runc more. Both give a
/// step Docker's defaults (`builder/tests/faults_sandbox.rs` checks each).
pub fn select(kind: ExecutorKind, config: ExecutorConfig) -> Result<Box<dyn Executor>, ExecError> {
    let chosen: Box<dyn Executor> = match kind {
        ExecutorKind::Native => Box::new(native::NativeExecutor::new(config)),
        ExecutorKind::Oci => Box::new(oci::OciExecutor::detect(config)?),
        ExecutorKind::Auto => match native::NativeExecutor::probe() {
            Ok(()) => Box::new(native::NativeExecutor::new(config)),
            Err(native) => match oci::OciExecutor::detect(config) {
                Ok(e) => Box::new(e),
                Err(oci) => {
                    return Err(ExecError::Unavailable(format!(
                        "no sandbox for RUN steps here: native: {native}; {oci}"
                    )))
                }
            },
        },
    };
    tracing::debug!(asked = ?kind, executor = %chosen.name(), "executor selected");
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_kind_parses() {
        assert_eq!("auto".parse::<ExecutorKind>().unwrap(), ExecutorKind::Auto);
        assert_eq!(
            "native".parse::<ExecutorKind>().unwrap(),
            ExecutorKind::Native
        );
        assert!("docker".parse::<ExecutorKind>().is_err());
        assert_eq!(
            shell_args(&["/bin/sh".into(), "-c".into()], "echo hi"),
            vec!["/bin/sh", "-c", "echo hi"]
        );
    }
}
