//! The `oci` executor: a runtime-spec bundle run by `crun` or `runc`.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::cgroup_view;
use super::netns::NetworkPool;
use super::oci_kill::ContainerKill;
use super::oci_spec::{build_spec, write_bundle};
use super::output::OutputCallback;
use super::pump::pump;
use super::running::RunningSteps;
use super::sealed_exe;
use super::seccomp::bpf::sandbox_program;
use super::user::ResolvedUser;
use super::world::{prepare, World};
use super::{
    ExecError, ExecOutcome, ExecRequest, Executor, ExecutorConfig, NetworkMode, SecurityMode,
};
use crate::mounts::{ContainerMount, MountKind};

/// Runtimes tried in order: crun starts faster, runc works on more hosts.
pub const RUNTIMES: &[&str] = &["crun", "runc"];

/// An OCI runtime binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    /// `crun` or `runc` (decides the log flag syntax).
    pub name: String,
    /// Path to the binary.
    pub path: PathBuf,
    /// Start it in a mount namespace that hides the v2 hierarchy of a hybrid
    /// cgroup host (see [`super::cgroup_view`]): crun refuses such hosts.
    pub v1_view: bool,
}

impl OciRuntime {
    /// Finds `name` on PATH.
    pub fn find(name: &str) -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
            .map(|path| OciRuntime {
                name: name.to_string(),
                path,
                v1_view: name == "crun" && cgroup_view::hybrid_with_v2_controllers(),
            })
    }

    /// The runtime binary with `--root state_root`, in the cgroup view it
    /// needs; every invocation (run, list, kill, delete) must start here so
    /// they all see the same cgroups.
    pub fn base_command(&self, state_root: &Path) -> Command {
        let mut cmd = Command::new(sealed_exe::program_for(&self.path));
        cmd.arg0(&self.path);
        if self.v1_view {
            cgroup_view::show_v1_only(&mut cmd);
        }
        cmd.arg("--root").arg(state_root);
        cmd
    }

    fn command(&self, state_root: &Path, log: &Path) -> Command {
        let mut cmd = self.base_command(state_root);
        if self.name == "crun" {
            cmd.arg(format!("--log=file:{}", log.display()));
        } else {
            cmd.arg("--log").arg(log);
        }
        cmd.arg("--log-format").arg("json");
        cmd
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs steps with an OCI runtime.
#[derive(Debug)]
pub struct OciExecutor {
    config: ExecutorConfig,
    runtime: OciRuntime,
    running: Arc<RunningSteps>,
    networks: Arc<NetworkPool>,
}

impl OciExecutor {
    /// The first runtime of [`RUNTIMES`] on PATH that can start a container
    /// here (the probe notices one that cannot, e.g. for its cgroups).
    pub fn detect(config: ExecutorConfig) -> Result<Self, ExecError> {
        let mut why = Vec::new();
        for name in RUNTIMES {
            let Some(rt) = OciRuntime::find(name) else {
                why.push(format!("{name}: not on PATH"));
                continue;
            };
            match Self::with_runtime(config.clone(), rt) {
                Ok(e) => return Ok(e),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(ExecError::Unavailable(why.join("; ")))
    }

    /// Uses `runtime` after checking that it can start a container.
    pub fn with_runtime(config: ExecutorConfig, runtime: OciRuntime) -> Result<Self, ExecError> {
        let e = OciExecutor {
            networks: NetworkPool::new(config.runs_dir()),
            config,
            runtime,
            running: Arc::default(),
        };
        super::sweep::sweep_runs(&e.config);
        super::sweep::sweep_containers(&e.runtime, &e.state_root());
        e.probe()?;
        Ok(e)
    }

    /// The runtime in use.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    fn state_root(&self) -> PathBuf {
        self.config
            .executor_dir()
            .join(format!("{}-state", self.runtime.name))
    }

    /// Starts a container whose program does not exist: a runtime that gets as
    /// far as exec works here, one failing earlier (cgroups) does not.
    fn probe(&self) -> Result<(), ExecError> {
        // crun sometimes loses the exec error to a race on its sync socket
        // ("read from sync socket: Connection reset by peer"), more often on a
        // loaded machine; a runtime that cannot work here fails every attempt
        // the same way, so a few cheap retries (a probe takes ~7 ms) cost little.
        let mut result = self.probe_once();
        for attempt in 1..5 {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
            result = self.probe_once();
        }
        result
    }

    fn probe_once(&self) -> Result<(), ExecError> {
        let dir = self.config.runs_dir().join(format!(
            "probe-{}-{}",
            self.runtime.name,
            std::process::id()
        ));
        let rootfs = dir.join("rootfs");
        // crun wants /dev to exist even when the spec mounts nothing there.
        fs::create_dir_all(rootfs.join("dev"))
            .map_err(ExecError::setup("creating the runtime probe"))?;
        let world = World {
            id: format!("kiln-probe-{}", std::process::id()),
            run_dir: dir.clone(),
            rootfs: rootfs.clone(),
            args: vec!["/kiln-probe".into()],
            env: vec![],
            cwd: "/".into(),
            user: ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                home: "/".into(),
            },
            hostname: "probe".into(),
            mounts: vec![ContainerMount {
                destination: "/proc".into(),
                kind: MountKind::Proc,
            }],
            network: NetworkMode::None,
            netns: None,
            security: SecurityMode::Sandbox,
        };
        let result = self.run_world(&world, &mut |_, _| {});
        let _ = fs::remove_dir_all(&dir);
        match result {
            Err(ExecError::Runtime { message, .. }) if message.contains("kiln-probe") => Ok(()),
            Err(ExecError::NonZeroExit { output, .. })
                if output.to_string().contains("kiln-probe") =>
            {
                Ok(())
            }
            Err(ExecError::Runtime { runtime, message }) => Err(ExecError::Unavailable(format!(
                "{runtime} cannot start containers here: {message}"
            ))),
            Err(e) => Err(ExecError::Unavailable(format!(
                "{} cannot start containers here: {e}",
                self.runtime.name
            ))),
            Ok(_) => Err(ExecError::Unavailable(format!(
                "{} ran a program that does not exist",
                self.runtime.name
            ))),
        }
    }

    /// Runs a prepared world.
    pub fn run_world(
        &self,
        world: &World,
        output: OutputCallback<'_>,
    ) -> Result<ExecOutcome, ExecError> {
        // The run dir is the bundle: one directory fewer to make and remove.
        let bundle = world.run_dir.clone();
        let mut spec = build_spec(world)?;
        release_secrets_after_start(&mut spec, world);
        if self.runtime.name == "crun" {
            precompiled_seccomp(&mut spec, world)?;
        }
        write_bundle(&bundle, &spec)?;
        let log = world.run_dir.join("runtime.log");
        let state_root = self.state_root();
        fs::create_dir_all(&state_root)
            .map_err(ExecError::setup("creating the runtime state dir"))?;
        let mut child = self
            .runtime
            .command(&state_root, &log)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&world.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches kiln only,
            // which cancels the build and stops the container itself.
            .process_group(0)
            .spawn()
            .map_err(ExecError::setup(format!(
                "starting {}",
                self.runtime.path.display()
            )))?;
        let container = ContainerKill::new(&self.runtime, state_root.clone(), &world.id);
        let tracked = self.running.track(container.killer());
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExecError::Invalid("runtime pipes missing".into()));
        };
        let captured = pump(OwnedFd::from(out), OwnedFd::from(err), output);
        let status = child.wait().map_err(ExecError::setup(format!(
            "waiting for {}",
            self.runtime.name
        )))?;
        if tracked.was_canceled() {
            drop(tracked);
            container.delete();
            let _ = fs::remove_file(&log);
            return Err(ExecError::Canceled);
        }
        drop(tracked);
        drop(container);
        let captured = captured.map_err(ExecError::setup("reading the step's output"))?;
        let runtime_error = fs::read_to_string(&log).ok().and_then(|l| last_error(&l));
        let _ = fs::remove_file(&log);
        if status.success() {
            return Ok(ExecOutcome { output: captured });
        }
        if let Some(message) = runtime_error {
            return Err(ExecError::Runtime {
                runtime: self.runtime.name.clone(),
                message,
            });
        }
        // Runtimes report a signal death as 128 + signal, as a shell does, so
        // it stays an exit code here.
        let code = status.code().unwrap_or(-1);
        Err(ExecError::NonZeroExit {
            args: world.args.clone(),
            code,
            output: captured,
        })
    }
}

/// Has the runtime drop the host's view of the step's secrets once its process
/// runs: the container's own binds keep them as long as the step lives.
fn release_secrets_after_start(spec: &mut oci_spec::runtime::Spec, world: &World) {
    let secrets = world.run_dir.join("secrets");
    if !secrets.is_dir() {
        return;
    }
    let Some(hook) = crate::mounts::secret::release_hook(&secrets) else {
        return;
    };
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    let mut poststart = hooks.poststart().clone().unwrap_or_default();
    poststart.push(hook);
    hooks.set_poststart(Some(poststart));
    spec.set_hooks(Some(hooks));
}

/// crun's annotation for a filter compiled ahead: the sandbox profile as
/// this process compiled it once ([`sandbox_program`], the same libseccomp
/// compilation crun would make of the spec's profile), which spares crun
/// compiling it again for every step (~10 ms of CPU). crun then ignores
/// `linux.seccomp`, which stays in the spec as the profile's statement.
pub const SECCOMP_BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";

fn precompiled_seccomp(spec: &mut oci_spec::runtime::Spec, world: &World) -> Result<(), ExecError> {
    if world.security != SecurityMode::Sandbox {
        return Ok(());
    }
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(
        SECCOMP_BPF_ANNOTATION.to_string(),
        seccomp_bpf_data()?.to_string(),
    );
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// [`sandbox_program`] in base64, encoded once per process.
fn seccomp_bpf_data() -> Result<&'static str, ExecError> {
    static ENCODED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(e) = ENCODED.get() {
        return Ok(e);
    }
    let encoded = sandbox_program()?.to_base64();
    Ok(ENCODED.get_or_init(|| encoded))
}

/// The last `"level":"error"` message of a runtime's JSON log.
fn last_error(log: &str) -> Option<String> {
    log.split_inclusive('}')
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
}

impl Executor for OciExecutor {
    fn name(&self) -> String {
        format!("oci:{}", self.runtime.name)
    }

    fn run(&self, req: &ExecRequest, output: OutputCallback<'_>) -> Result<ExecOutcome, ExecError> {
        if self.running.is_canceled() {
            return Err(ExecError::Canceled);
        }
        let prepared = prepare(&self.config, req, &self.networks)?;
        let result = self.run_world(&prepared.world, output);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crun_gets_the_compiled_sandbox_filter() {
        use base64::Engine;
        let data = seccomp_bpf_data().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let program: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(program, sandbox_program().unwrap().instructions());
    }

    #[test]
    fn last_error_of_json_log() {
        let log = r#"{"level":"info","msg":"a"}{"msg":"cgroups in hybrid mode not supported","level":"error","time":"t"}
{"level":"warning","msg":"b"}"#;
        assert_eq!(
            last_error(log).as_deref(),
            Some("cgroups in hybrid mode not supported")
        );
        assert_eq!(last_error(r#"{"level":"info","msg":"a"}"#), None);
    }
}
