//! RUN: an exec vertex over the stage's root, with its mounts.

use super::config::{argv, join_workdir, shell_of};
use super::{Lowerer, StageState};
use crate::error::{ErrorKind, SourceError};
use crate::instructions::mount::{Mount as RunMount, MountType, Sharing};
use crate::instructions::run::{Network, Security};
use crate::instructions::{CommandLine, Run};
use crate::stages::{ResolvedInstruction, Stage};
use kiln_solver::llb::{
    CacheOpt, CacheSharing, ExecMeta, ExecOp, FileAction, FileOp, MkfileAction, Mount, MountKind,
    NetworkMode, Op, SecretEnv, SecretOpt, SecurityMode, SshOpt, TmpfsOpt, VertexRef,
};

/// Where a heredoc script with a shebang is mounted to be executed (BuildKit's place).
const PIPES_DIR: &str = "/dev/pipes/";

/// The name and body of a RUN that is a single heredoc starting with `#!`.
fn shebang_script(run: &Run) -> Option<(String, String)> {
    let CommandLine::Shell(cmd) = &run.command else {
        return None;
    };
    let cmd = cmd.trim();
    if run.heredocs.len() != 1 || !cmd.starts_with("<<") || cmd.contains(' ') {
        return None;
    }
    let h = run.heredocs.first()?;
    let body = h.chomped_content();
    body.starts_with("#!").then(|| (h.name.clone(), body))
}

/// A RUN's exec op being built: its inputs, mounts and secret env vars.
struct ExecParts {
    inputs: Vec<VertexRef>,
    mounts: Vec<Mount>,
    secret_env: Vec<SecretEnv>,
}

impl ExecParts {
    /// The root mount: input 0, or an empty root for a scratch stage.
    fn new(root: Option<VertexRef>) -> Self {
        let mut inputs: Vec<VertexRef> = Vec::new();
        let root = match root {
            Some(v) => {
                inputs.push(v);
                Mount::root()
            }
            None => Mount {
                input: None,
                ..Mount::root()
            },
        };
        ExecParts {
            inputs,
            mounts: vec![root],
            secret_env: Vec::new(),
        }
    }

    /// Adds `v` as an input; returns its index.
    fn input(&mut self, v: VertexRef) -> usize {
        self.inputs.push(v);
        self.inputs.len() - 1
    }
}

/// Build args that steer the SBOM scans, never in a RUN's environment (BuildKit's
/// `nonEnvArgs`).
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The environment of a RUN: the image's Env first, then what the stage set (ARG, ENV),
/// later wins.
fn run_env(state: &StageState, ri: &ResolvedInstruction) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = state.config.config.env_pairs();
    for (k, v) in &ri.env {
        if NON_ENV_ARGS.contains(&k.as_str()) {
            continue;
        }
        match env.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

impl Lowerer<'_> {
    /// Adds the RUN's exec vertex; returns the history's `created_by`.
    pub(super) fn lower_run(
        &mut self,
        stage: &Stage,
        state: &mut StageState,
        ri: &ResolvedInstruction,
        run: &Run,
        description: String,
    ) -> Result<String, SourceError> {
        let args = self.run_args(state, run);
        let workdir = if state.config.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            state.config.config.working_dir.clone()
        };
        let mut env = run_env(state, ri);
        let platform = state.platform.clone();
        let mut parts = ExecParts::new(state.vertex);
        if let Some((name, body)) = shebang_script(run) {
            self.mount_script(stage, ri, &platform, &mut parts, name, body)?;
        }
        for m in &run.mounts {
            self.lower_mount(ri, m, &workdir, &platform, &mut parts)?;
        }
        // As BuildKit does: the first ssh mount is the agent SSH clients find.
        let first_ssh = parts
            .mounts
            .iter()
            .find(|m| matches!(m.kind, MountKind::Ssh(_)));
        if let Some(ssh) = first_ssh {
            if !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                env.push(("SSH_AUTH_SOCK".to_string(), ssh.dest.clone()));
            }
        }
        let op = Op::Exec(ExecOp {
            meta: ExecMeta {
                args: args.clone(),
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cwd: workdir,
                user: state.config.config.user.clone(),
                proxy_env: ri.proxy_env.iter().cloned().collect(),
                extra_hosts: Vec::new(),
                hostname: self.opts.sandbox_hostname.clone(),
            },
            mounts: parts.mounts,
            network: match run.network {
                Network::Default => self.opts.default_network,
                Network::None => NetworkMode::None,
                Network::Host => NetworkMode::Host,
            },
            security: match run.security {
                Security::Sandbox => SecurityMode::Sandbox,
                Security::Insecure => SecurityMode::Insecure,
            },
            secret_env: parts.secret_env,
        });
        let meta = self.metadata(description, ri.node, stage);
        state.vertex = Some(self.add(op, &platform, &parts.inputs, meta, ri.node)?);
        let build_args = super::history::run_build_args(self.build, stage, ri.node, &env);
        Ok(format!("RUN {build_args}{} # buildkit", args.join(" ")))
    }

    /// A heredoc script with a shebang: written to a file and mounted read-only at
    /// [`PIPES_DIR`], where the shell runs it.
    fn mount_script(
        &mut self,
        stage: &Stage,
        ri: &ResolvedInstruction,
        platform: &kiln_oci::Platform,
        parts: &mut ExecParts,
        name: String,
        body: String,
    ) -> Result<(), SourceError> {
        let file = Op::File(FileOp {
            base: None,
            users: None,
            actions: vec![FileAction::Mkfile(MkfileAction {
                path: format!("/{}", name),
                mode: 0o755,
                data: body.into_bytes(),
                owner: None,
                timestamp: self.opts.source_date_epoch,
            })],
        });
        let meta = self.metadata(format!("[internal] heredoc script {name}"), ri.node, stage);
        let v = self.add(file, platform, &[], meta, ri.node)?;
        let input = parts.input(v);
        parts.mounts.push(Mount {
            input: Some(input),
            selector: None,
            dest: PIPES_DIR.to_string(),
            output: false,
            readonly: true,
            kind: MountKind::Bind,
        });
        Ok(())
    }

    /// argv of a RUN, with BuildKit's heredoc rules: a RUN that is only a
    /// heredoc runs its body as the script; otherwise the heredoc bodies follow
    /// the command line so the shell reads them.
    fn run_args(&self, state: &StageState, run: &Run) -> Vec<String> {
        let CommandLine::Shell(cmd) = &run.command else {
            return argv(&state.config, &run.command);
        };
        if run.heredocs.is_empty() {
            return argv(&state.config, &run.command);
        }
        let only_heredoc =
            run.heredocs.len() == 1 && cmd.trim().starts_with("<<") && !cmd.trim().contains(' ');
        let mut shell = shell_of(&state.config);
        if only_heredoc {
            if let Some(h) = run.heredocs.first() {
                let body = h.chomped_content();
                if body.starts_with("#!") {
                    // A shebang picks the interpreter: the script is a file
                    // (mounted by `lower_run`) that the shell runs, as
                    // BuildKit runs it (and names it in history).
                    shell.push(format!("{PIPES_DIR}{}", h.name));
                    return shell;
                }
                shell.push(body);
                return shell;
            }
        }
        let mut script = cmd.clone();
        for h in &run.heredocs {
            script.push('\n');
            script.push_str(&h.content);
            script.push_str(&h.name);
        }
        shell.push(script);
        shell
    }

    /// Adds one `--mount` to the exec op; relative targets are under `workdir`.
    fn lower_mount(
        &mut self,
        ri: &ResolvedInstruction,
        m: &RunMount,
        workdir: &str,
        platform: &kiln_oci::Platform,
        parts: &mut ExecParts,
    ) -> Result<(), SourceError> {
        let target = m.target.as_deref().map(|t| join_workdir(workdir, t));
        match m.kind {
            MountType::Bind => {
                let dest = self.mount_target(ri, m, target)?;
                let input = self.mount_input(ri, m.from.as_deref(), platform, parts)?;
                parts.mounts.push(Mount {
                    input,
                    selector: m.source.clone(),
                    dest,
                    output: false,
                    readonly: m.read_only,
                    kind: MountKind::Bind,
                });
            }
            MountType::Cache => {
                let dest = self.mount_target(ri, m, target)?;
                let input = match &m.from {
                    Some(f) => self.mount_input(ri, Some(f), platform, parts)?,
                    None => None,
                };
                let kind = MountKind::Cache(self.cache_opt(m, &dest));
                parts.mounts.push(Mount {
                    input,
                    selector: m.source.clone(),
                    dest,
                    output: false,
                    readonly: m.read_only,
                    kind,
                });
            }
            MountType::Tmpfs => {
                let dest = self.mount_target(ri, m, target)?;
                parts.mounts.push(Mount {
                    input: None,
                    selector: None,
                    dest,
                    output: false,
                    readonly: false,
                    kind: MountKind::Tmpfs(TmpfsOpt {
                        size: m.size.unwrap_or(0),
                    }),
                });
            }
            MountType::Secret => secret_mount(m, target, parts),
            MountType::Ssh => ssh_mount(m, target, parts),
        }
        Ok(())
    }

    /// The mount's target, which bind, cache and tmpfs mounts need.
    fn mount_target(
        &self,
        ri: &ResolvedInstruction,
        m: &RunMount,
        target: Option<String>,
    ) -> Result<String, SourceError> {
        target.ok_or_else(|| {
            self.err(
                ri.node,
                ErrorKind::Flag,
                format!("--mount=type={} needs a target", m.kind),
                Some("add target=/path"),
            )
        })
    }

    /// The input a mount reads `from` (a stage, image or named context; the build context
    /// when none), added to the op's inputs; `None` for a stage that is still empty.
    fn mount_input(
        &mut self,
        ri: &ResolvedInstruction,
        from: Option<&str>,
        platform: &kiln_oci::Platform,
        parts: &mut ExecParts,
    ) -> Result<Option<usize>, SourceError> {
        let v = match from {
            Some(f) => self.source_named(f, platform, ri.node)?,
            None => Some(self.local(&self.opts.context.clone(), platform, ri.node)?),
        };
        Ok(v.map(|v| parts.input(v)))
    }

    /// A cache mount's options; its id is the target unless given.
    fn cache_opt(&self, m: &RunMount, dest: &str) -> CacheOpt {
        let id = m.id.clone().unwrap_or_else(|| dest.to_string());
        CacheOpt {
            // As BuildKit: `<namespace>/<id>` when the build arg is set.
            id: match self.opts.cache_mount_ns.as_deref() {
                Some(ns) if !ns.is_empty() => format!("{ns}/{id}"),
                _ => id,
            },
            sharing: match m.sharing {
                Sharing::Shared => CacheSharing::Shared,
                Sharing::Private => CacheSharing::Private,
                Sharing::Locked => CacheSharing::Locked,
            },
            mode: m.mode.unwrap_or(0o755),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            // dockerfile2llb ignores them when a source is named.
            settings_given: (m.mode.is_some() || m.uid.is_some() || m.gid.is_some())
                && m.source
                    .as_deref()
                    .is_none_or(|s| s.trim_matches('/').is_empty()),
        }
    }
}

/// A secret mount: an env var with `env=`, a file at the target (default
/// `/run/secrets/<id>`) unless only `env=` was given. The id defaults to the target's name.
fn secret_mount(m: &RunMount, target: Option<String>, parts: &mut ExecParts) {
    let id =
        m.id.clone()
            .or_else(|| {
                target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .map(String::from)
            })
            .unwrap_or_default();
    if let Some(name) = &m.env {
        parts.secret_env.push(SecretEnv {
            id: id.clone(),
            name: name.clone(),
            optional: !m.required,
        });
    }
    // A secret with only env= is not also a file, unless a target was given.
    if m.env.is_none() || m.target.is_some() {
        parts.mounts.push(Mount {
            input: None,
            selector: None,
            dest: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
            output: false,
            readonly: true,
            kind: MountKind::Secret(SecretOpt {
                id,
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o400),
                optional: !m.required,
            }),
        });
    }
}

/// An ssh agent mount, by default at `/run/buildkit/ssh_agent.<n>` for the n-th one.
fn ssh_mount(m: &RunMount, target: Option<String>, parts: &mut ExecParts) {
    let n = parts
        .mounts
        .iter()
        .filter(|x| matches!(x.kind, MountKind::Ssh(_)))
        .count();
    parts.mounts.push(Mount {
        input: None,
        selector: None,
        dest: target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}")),
        output: false,
        readonly: true,
        kind: MountKind::Ssh(SshOpt {
            id: m.id.clone().unwrap_or_else(|| "default".to_string()),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
            mode: m.mode.unwrap_or(0o600),
            optional: !m.required,
        }),
    });
}
