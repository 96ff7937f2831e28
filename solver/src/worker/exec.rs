//! Exec ops (RUN): the executor runs the process on an overlay of the root
//! input with a fresh layer on top; that layer is the result.

use super::{LocalDir, LocalWorker, Output};
use crate::executor::{ExecRequest, HostEntry, NetworkMode, SecurityMode, Stream};
use crate::llb::{self, ExecOp, MountKind, Vertex};
use crate::llb::{CopyAction, FileAction};
use crate::mounts::pin::PinnedSources;
use crate::mounts::{CacheSharing, CacheSpec, MountSpec, SecretSpec, SshSpec};
use crate::ops::file::{apply_file_actions, SourceRoot};
use crate::progress::LogStream;
use crate::scheduler::WorkerError;
use crate::snapshot::view::SnapshotView;
use crate::snapshot::Snapshot;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `source=` of a mount inside its input `root`, resolved inside it (a symlink
/// never leads out) and pinned; the whole input when there is no selector.
fn source_path(
    pins: &mut PinnedSources,
    root: &Path,
    selector: Option<&str>,
) -> std::io::Result<PathBuf> {
    match selector.map(crate::cache::contenthash::clean_selector) {
        Some(s) if !s.is_empty() => pins.pin(root, &s),
        // An executor may run in another directory: never hand it a relative path.
        _ => std::path::absolute(root),
    }
}

/// The error for a mount source that cannot be resolved in its input.
fn source_error(dest: &str, selector: Option<&str>, e: std::io::Error) -> WorkerError {
    let path = selector.unwrap_or("/");
    if e.kind() == std::io::ErrorKind::NotFound {
        WorkerError::MountSourceNotFound {
            dest: dest.to_string(),
            path: path.to_string(),
            source: e,
        }
    } else {
        WorkerError::other(format!("mount {dest}: resolving source {path}: {e}"))
    }
}

impl LocalWorker {
    /// The directory a RUN mount of `dir` shows: `dir` itself, or with a
    /// `.dockerignore` a copy without the paths it hides (BuildKit's context
    /// never holds them), made at the first use in the build.
    fn mount_view(&self, dir: &LocalDir) -> Result<PathBuf, WorkerError> {
        if dir.ignore.is_empty() {
            return Ok(dir.root.clone());
        }
        let mut views = self
            .mount_views
            .lock()
            .map_err(|_| "mount views lock poisoned")?;
        if let Some(v) = views.get(&dir.root) {
            return Ok(v.path().to_path_buf());
        }
        let view = tempfile::Builder::new()
            .prefix("context-view-")
            .tempdir_in(&self.scratch)?;
        let source = SourceRoot {
            path: &dir.root,
            ignore: Some(&dir.ignore),
        };
        let copy = FileAction::Copy(CopyAction::whole_tree(0));
        apply_file_actions(view.path(), &[source], &[copy]).map_err(|e| -> WorkerError {
            format!("preparing {} for a RUN mount: {e}", dir.root.display()).into()
        })?;
        let path = view.path().to_path_buf();
        views.insert(dir.root.clone(), Arc::new(view));
        Ok(path)
    }

    pub(super) fn exec(
        &self,
        vertex: &Vertex,
        op: &ExecOp,
        inputs: &[Output],
    ) -> Result<Output, WorkerError> {
        self.check_canceled()?;
        let root_mount = op.mounts.first().ok_or("exec op without a root mount")?;
        // A foreign platform runs through QEMU's binfmt_misc handler: say how to get one.
        if let Some(p) = vertex.platform() {
            crate::executor::emulation::check_can_run(p)?;
        }
        let base = match root_mount.input {
            Some(i) => Self::snapshot_of(inputs.get(i).ok_or("exec root input missing")?)?,
            None => Snapshot::scratch(),
        };
        let network = self.network_mode(op.network)?;
        let security = self.security_mode(op.security)?;
        let pending = self.layers.begin()?;
        let mut views = Vec::new();
        // Declared after the views: dropped first, as a pin may sit in a view.
        let mut pins = PinnedSources::new(&self.scratch);
        let mut mounts = Vec::new();
        for m in op.mounts.iter().skip(1) {
            if let Some(spec) = self.run_mount(m, inputs, &mut pins, &mut views)? {
                mounts.push(spec);
            }
        }
        mounts.extend(self.secret_env_mounts(op)?);
        let mut env = op.meta.env.clone();
        env.extend(op.meta.proxy_env.iter().map(|(k, v)| format!("{k}={v}")));
        let req = ExecRequest {
            rootfs: self.flats.overlay_for(&self.layers, &base, &pending)?,
            args: op.meta.args.clone(),
            env,
            cwd: op.meta.cwd.clone(),
            user: op.meta.user.clone(),
            hostname: op.meta.hostname.clone(),
            extra_hosts: self.extra_hosts(op)?,
            network,
            security,
            mounts,
        };
        self.run_step(vertex, &req)?;
        drop(pins);
        drop(views);
        // A step that ended after a cancel is thrown away, whatever its exit
        // status: the cancel may have cut it short.
        self.check_canceled()?;
        self.discard_work_dir(&pending);
        let id = self.layers.commit(pending)?;
        // Durable before a record refers to it (see `syncer`), not before the next step.
        self.syncer.submit(self.layers.path(&id))?;
        Ok(Output::Snapshot(base.with_layer(id)))
    }

    /// Moves the step's overlayfs work dir out of its pending layer and has the syncer's
    /// thread remove it: a dozen removals the next step need not wait for. Left where it
    /// is when it cannot move (the pending layer's drop removes it then).
    fn discard_work_dir(&self, pending: &crate::snapshot::layers::PendingLayer) {
        let work = pending.work();
        let Some(dir) = work.parent() else { return };
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".work");
        let aside = dir.with_file_name(name);
        if std::fs::rename(&work, &aside).is_ok() && self.syncer.discard(aside.clone()).is_err() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }

    /// `RUN --network`; host needs its entitlement.
    fn network_mode(&self, mode: llb::NetworkMode) -> Result<NetworkMode, WorkerError> {
        Ok(match mode {
            llb::NetworkMode::Default => NetworkMode::Default,
            llb::NetworkMode::None => NetworkMode::None,
            llb::NetworkMode::Host => {
                if !self.session.allow_network_host {
                    return Err(WorkerError::NotEntitled {
                        entitlement: "network.host",
                        option: "--network=host",
                    });
                }
                NetworkMode::Host
            }
        })
    }

    /// `RUN --security`; insecure needs its entitlement.
    fn security_mode(&self, mode: llb::SecurityMode) -> Result<SecurityMode, WorkerError> {
        Ok(match mode {
            llb::SecurityMode::Sandbox => SecurityMode::Sandbox,
            llb::SecurityMode::Insecure => {
                if !self.session.allow_insecure {
                    return Err(WorkerError::NotEntitled {
                        entitlement: "security.insecure",
                        option: "--security=insecure",
                    });
                }
                SecurityMode::Insecure
            }
        })
    }

    /// The executor's view of one RUN mount; `None` for an optional secret or
    /// ssh agent that was not given. Snapshot sources are mounted into `views`.
    fn run_mount(
        &self,
        m: &llb::Mount,
        inputs: &[Output],
        pins: &mut PinnedSources,
        views: &mut Vec<SnapshotView>,
    ) -> Result<Option<MountSpec>, WorkerError> {
        Ok(Some(match &m.kind {
            MountKind::Bind => self.bind_mount(m, inputs, pins, views)?,
            MountKind::Cache(c) => self.cache_mount(m, c, inputs, pins, views)?,
            MountKind::Tmpfs(t) => MountSpec::Tmpfs {
                target: m.dest.clone(),
                size: (t.size > 0).then_some(t.size),
            },
            MountKind::Secret(s) => match self.session.secrets.get(&s.id) {
                Some(data) => MountSpec::Secret(SecretSpec {
                    id: s.id.clone(),
                    data: data.clone(),
                    target: Some(m.dest.clone()),
                    env: None,
                    mode: s.mode,
                    uid: s.uid,
                    gid: s.gid,
                }),
                None if s.optional => return Ok(None),
                None => {
                    return Err(WorkerError::SecretNotFound {
                        id: s.id.clone(),
                        env: false,
                    })
                }
            },
            MountKind::Ssh(s) => match self.session.ssh.get(&s.id) {
                Some(socket) => MountSpec::Ssh(SshSpec {
                    id: s.id.clone(),
                    agent_socket: socket.clone(),
                    target: Some(m.dest.clone()),
                    mode: s.mode,
                    uid: s.uid,
                    gid: s.gid,
                }),
                None if s.optional => return Ok(None),
                None => return Err(WorkerError::SshNotFound { id: s.id.clone() }),
            },
        }))
    }

    /// A bind mount of a context or stage, its `source=` pinned.
    fn bind_mount(
        &self,
        m: &llb::Mount,
        inputs: &[Output],
        pins: &mut PinnedSources,
        views: &mut Vec<SnapshotView>,
    ) -> Result<MountSpec, WorkerError> {
        let sel = m.selector.as_deref();
        let source = match m.input.and_then(|i| inputs.get(i)) {
            Some(Output::Dir(d)) => source_path(pins, &self.mount_view(d)?, sel),
            Some(Output::Snapshot(s)) => {
                let view = SnapshotView::mount(&self.layers, s)?;
                let p = source_path(pins, view.path(), sel);
                views.push(view);
                p
            }
            None => return Err(format!("bind mount {} has no source", m.dest).into()),
        }
        .map_err(|e| source_error(&m.dest, sel, e))?;
        Ok(MountSpec::Bind {
            source,
            target: m.dest.clone(),
            readonly: m.readonly,
        })
    }

    /// A cache mount, its id keyed by its `from=` seed as BuildKit keys it.
    fn cache_mount(
        &self,
        m: &llb::Mount,
        c: &llb::CacheOpt,
        inputs: &[Output],
        pins: &mut PinnedSources,
        views: &mut Vec<SnapshotView>,
    ) -> Result<MountSpec, WorkerError> {
        // `from=`: a new directory starts as the source; the id is keyed by
        // that source (as BuildKit keys it by the source's ref).
        // A source missing from its input seeds nothing.
        let sel = m.selector.as_deref();
        let seed_of = |pins: &mut PinnedSources, root: &Path| match source_path(pins, root, sel) {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(source_error(&m.dest, sel, e)),
        };
        let selector = sel.unwrap_or("/");
        let (id, seed) = match m.input.and_then(|i| inputs.get(i)) {
            Some(Output::Dir(d)) => (
                format!("{}:{}:{selector}", c.id, d.root.display()),
                seed_of(pins, &self.mount_view(d)?)?,
            ),
            Some(Output::Snapshot(s)) => {
                let view = SnapshotView::mount(&self.layers, s)?;
                let p = seed_of(pins, view.path())?;
                views.push(view);
                let layers: Vec<String> = s.layers.iter().map(|l| l.to_string()).collect();
                (format!("{}:{}:{selector}", c.id, layers.join(",")), p)
            }
            None => (c.id.clone(), None),
        };
        // BuildKit keys a cache by its seed; with mode/uid/gid that is a
        // `mkdir` made with them, so each setting is a cache of its own.
        let id =
            crate::mounts::cache::store_id(&id, c.settings_given.then_some((c.mode, c.uid, c.gid)));
        Ok(MountSpec::Cache(CacheSpec {
            id,
            target: m.dest.clone(),
            sharing: match c.sharing {
                llb::CacheSharing::Shared => CacheSharing::Shared,
                llb::CacheSharing::Private => CacheSharing::Private,
                llb::CacheSharing::Locked => CacheSharing::Locked,
            },
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            readonly: m.readonly,
            seed,
        }))
    }

    /// Secrets given as environment variables (`--mount=type=secret,env=`).
    fn secret_env_mounts(&self, op: &ExecOp) -> Result<Vec<MountSpec>, WorkerError> {
        let mut mounts = Vec::new();
        for se in &op.secret_env {
            match self.session.secrets.get(&se.id) {
                Some(data) => mounts.push(MountSpec::Secret(SecretSpec {
                    id: se.id.clone(),
                    data: data.clone(),
                    target: None,
                    env: Some(se.name.clone()),
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                })),
                None if se.optional => {}
                None => {
                    return Err(WorkerError::SecretNotFound {
                        id: se.id.clone(),
                        env: true,
                    })
                }
            }
        }
        Ok(mounts)
    }

    /// The session's `--add-host` entries, then the step's own.
    fn extra_hosts(&self, op: &ExecOp) -> Result<Vec<HostEntry>, WorkerError> {
        let mut extra_hosts = self.session.extra_hosts.clone();
        for h in &op.meta.extra_hosts {
            let ip = h.ip.parse().map_err(|_| -> WorkerError {
                format!("--add-host {}: {:?} is not an IP address", h.host, h.ip).into()
            })?;
            extra_hosts.push(HostEntry {
                name: h.host.clone(),
                ip,
            });
        }
        Ok(extra_hosts)
    }

    /// Runs the step, its output streamed to the vertex's progress log.
    fn run_step(&self, vertex: &Vertex, req: &ExecRequest) -> Result<(), WorkerError> {
        let progress = self.progress.handle(vertex.digest());
        let mut on_output = |stream: Stream, data: &[u8]| {
            let s = match stream {
                Stream::Stdout => LogStream::Stdout,
                Stream::Stderr => LogStream::Stderr,
            };
            progress.log(s, data.to_vec());
        };
        self.executor.run(req, &mut on_output)?;
        Ok(())
    }
}
