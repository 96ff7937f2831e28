//! The world a step runs in, prepared on the host side for either executor:
//! the overlay rootfs mounted, the user resolved, every mount's source ready and
//! its mount point present, and the /etc files written outside the rootfs.
//!
//! Mount points that do not exist in the image are created in the upper dir
//! before the step starts and removed from it after the step (BuildKit's
//! "mount stubs"), so neither they nor the /etc files end up in the new layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::env::process_env;
use super::hosts::{hosts_file, resolv_conf, DEFAULT_HOSTNAME};
use super::netns::{NetworkLease, NetworkPool};
use super::user::{ResolvedUser, UserDb};
use super::{ExecError, ExecRequest, ExecutorConfig, NetworkMode, SecurityMode};
use crate::mounts::bind::ScratchBind;
use crate::mounts::cache::{CacheLease, CacheMounts};
use crate::mounts::secret::SecretFiles;
use crate::mounts::ssh::AgentForward;
use crate::mounts::{
    sort_by_depth, CacheSpec, ContainerMount, MountKind, MountSpec, SecretSpec, SshSpec,
};
use crate::rootfs_path::{host_path, resolve_in_root};
use crate::snapshot::overlay::OverlayMount;

/// Everything an executor needs to start the process.
#[derive(Debug, Clone)]
pub struct World {
    /// A unique id (container id for OCI runtimes).
    pub id: String,
    /// The per-step scratch directory on the host.
    pub run_dir: PathBuf,
    /// The mounted rootfs on the host.
    pub rootfs: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// The final environment.
    pub env: Vec<String>,
    /// Working directory (resolved, exists).
    pub cwd: String,
    /// Credentials.
    pub user: ResolvedUser,
    /// Hostname.
    pub hostname: String,
    /// All mounts in order: /proc, /dev, /sys, the RUN mounts, the /etc files.
    pub mounts: Vec<ContainerMount>,
    /// Network mode.
    pub network: NetworkMode,
    /// The network namespace to join (the default network's, see
    /// [`super::netns`]); `None` with an isolated mode means a new empty one.
    pub netns: Option<PathBuf>,
    /// Security mode.
    pub security: SecurityMode,
}

/// A prepared world plus the resources that must outlive the process.
#[derive(Debug)]
pub struct Prepared {
    /// What the executor runs.
    pub world: World,
    _guard: Guard,
}

/// A mount stub created in the upper dir, with the metadata it had.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stub {
    is_dir: bool,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Undoes the preparation on drop, in the order that keeps the layer clean.
#[derive(Debug, Default)]
struct Guard {
    run_dir: PathBuf,
    rootfs_mount: Option<OverlayMount>,
    upper: PathBuf,
    stubs: BTreeMap<PathBuf, Stub>,
    keep: BTreeSet<PathBuf>,
    agents: Vec<AgentForward>,
    caches: Vec<CacheLease>,
    secrets: Option<SecretFiles>,
    binds: Vec<ScratchBind>,
    network: Option<NetworkLease>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A new id for a step or a network, unique on this host (`kiln-<pid>-…`,
/// which [`super::sweep`] reads to clean up after a dead kiln).
pub(crate) fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "kiln-{}-{}-{:08x}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Prepares the world for `req`; the default network comes from `networks`.
pub fn prepare(
    config: &ExecutorConfig,
    req: &ExecRequest,
    networks: &Arc<NetworkPool>,
) -> Result<Prepared, ExecError> {
    if req.args.is_empty() {
        return Err(ExecError::Invalid("empty argv".into()));
    }
    let id = unique_id();
    let run_dir = make_run_dir(config, &id)?;
    let mut guard = Guard::default();
    guard.run_dir = run_dir.clone();
    guard.upper = req.rootfs.upper.clone();
    let rootfs = mount_rootfs(req, &run_dir, &mut guard)?;
    let user = UserDb::read(&rootfs).resolve(&req.user)?;
    let before = walk(&req.rootfs.upper);

    let mut mounts = system_mounts(req.security);
    let (run_mounts, secret_env) = run_mounts(config, req, &run_dir, &rootfs, &mut guard)?;
    mounts.extend(run_mounts);
    let hostname = req
        .hostname
        .clone()
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
    etc_mounts(config, req, &hostname, &rootfs, &mut mounts)?;
    absolute_sources(&mut mounts)?;
    make_mount_points(&rootfs, &mounts, &before, &mut guard)?;
    let cwd = working_dir(&rootfs, &req.cwd, &mut guard)?;

    let env = process_env(&req.env, &user.home, &secret_env);
    if req.network == NetworkMode::Default {
        guard.network = Some(default_network(req, networks)?);
    }
    let netns = guard.network.as_ref().map(|n| n.path().to_path_buf());
    Ok(Prepared {
        world: World {
            id,
            run_dir,
            rootfs,
            args: req.args.clone(),
            env,
            cwd,
            user,
            hostname,
            mounts,
            network: req.network,
            netns,
            security: req.security,
        },
        _guard: guard,
    })
}

/// The step's scratch directory, `runs/<id>`, as an absolute path: runtimes
/// resolve relative paths against their bundle.
fn make_run_dir(config: &ExecutorConfig, id: &str) -> Result<PathBuf, ExecError> {
    let run_dir = std::path::absolute(config.runs_dir().join(id))
        .map_err(ExecError::setup("resolving the run directory"))?;
    fs::create_dir_all(&run_dir)
        .map_err(ExecError::setup(format!("creating {}", run_dir.display())))?;
    Ok(run_dir)
}

/// Mounts the step's overlay at `run_dir/rootfs`.
fn mount_rootfs(
    req: &ExecRequest,
    run_dir: &Path,
    guard: &mut Guard,
) -> Result<PathBuf, ExecError> {
    let rootfs = run_dir.join("rootfs");
    fs::create_dir(&rootfs).map_err(ExecError::setup("creating the rootfs mount point"))?;
    guard.rootfs_mount = Some(req.rootfs.mount_volatile(&rootfs)?);
    Ok(rootfs)
}

/// /proc, /dev and /sys, first of all mounts.
fn system_mounts(security: SecurityMode) -> Vec<ContainerMount> {
    vec![
        ContainerMount {
            destination: "/proc".into(),
            kind: MountKind::Proc,
        },
        ContainerMount {
            destination: "/dev".into(),
            kind: MountKind::Dev,
        },
        ContainerMount {
            destination: "/sys".into(),
            kind: MountKind::Sysfs {
                readonly: security == SecurityMode::Sandbox,
            },
        },
    ]
}

/// Secrets given as environment variables: (name, value).
type SecretEnv = Vec<(String, String)>;

/// The RUN mounts with their sources ready, parents before children, and
/// the secrets given as environment variables.
fn run_mounts(
    config: &ExecutorConfig,
    req: &ExecRequest,
    run_dir: &Path,
    rootfs: &Path,
    guard: &mut Guard,
) -> Result<(Vec<ContainerMount>, SecretEnv), ExecError> {
    let mut mounts = Vec::new();
    let mut secret_env = Vec::new();
    let mut ssh_index = 0usize;
    for (n, spec) in req.mounts.iter().enumerate() {
        let (target, kind) = match spec {
            MountSpec::Bind {
                source,
                target,
                readonly,
            } => bind_source(
                source,
                target,
                *readonly,
                &run_dir.join(format!("bind-{n}")),
                guard,
            )?,
            MountSpec::Cache(c) => cache_source(config, c, guard)?,
            // The mode is the mount point's, once resolved (below).
            MountSpec::Tmpfs { target, size } => (
                target.clone(),
                MountKind::Tmpfs {
                    size: *size,
                    mode: TMPFS_FRESH_MODE,
                },
            ),
            MountSpec::Secret(s) => {
                if let Some(var) = &s.env {
                    secret_env.push((var.clone(), secret_env_value(s)?));
                }
                match secret_source(s, run_dir, guard)? {
                    Some(m) => m,
                    None => continue,
                }
            }
            MountSpec::Ssh(s) => {
                let target = s
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
                ssh_index += 1;
                ssh_source(s, target, &run_dir.join(format!("ssh-{n}.sock")), guard)?
            }
        };
        let target = absolute(&req.cwd, &target);
        let destination = resolve(rootfs, &target)?;
        let mut kind = kind;
        if let MountKind::Tmpfs { mode, .. } = &mut kind {
            *mode = tmpfs_mode(&host_path(rootfs, &destination));
        }
        mounts.push(ContainerMount { destination, kind });
    }
    sort_by_depth(&mut mounts);
    Ok((mounts, secret_env))
}

/// A bind mount: the source itself read-only, else a writable scratch view
/// of it (`scratch`) whose writes are thrown away.
fn bind_source(
    source: &Path,
    target: &str,
    readonly: bool,
    scratch: &Path,
    guard: &mut Guard,
) -> Result<(String, MountKind), ExecError> {
    if !source.exists() {
        return Err(ExecError::Invalid(format!(
            "bind mount source {} does not exist",
            source.display()
        )));
    }
    let source = if readonly {
        source.to_path_buf()
    } else {
        let view = ScratchBind::new(source, scratch).map_err(ExecError::setup(format!(
            "preparing a writable view of {}",
            source.display()
        )))?;
        let s = view.source().to_path_buf();
        guard.binds.push(view);
        s
    };
    Ok((target.to_string(), MountKind::Bind { source, readonly }))
}

/// A cache mount: its directory, leased for the step.
fn cache_source(
    config: &ExecutorConfig,
    c: &CacheSpec,
    guard: &mut Guard,
) -> Result<(String, MountKind), ExecError> {
    let caches = CacheMounts::new(config.cache_mounts_dir())
        .map_err(ExecError::setup("opening cache-mounts"))?;
    let lease = caches
        .acquire_seeded(&c.id, c.sharing, c.mode, c.uid, c.gid, c.seed.as_deref())
        .map_err(ExecError::setup(format!(
            "acquiring cache mount {:?}",
            c.id
        )))?;
    let source = lease.dir().to_path_buf();
    guard.caches.push(lease);
    Ok((
        c.target.clone(),
        MountKind::Bind {
            source,
            readonly: c.readonly,
        },
    ))
}

/// A secret's value as an environment variable.
fn secret_env_value(s: &SecretSpec) -> Result<String, ExecError> {
    String::from_utf8(s.data.clone()).map_err(|_| {
        ExecError::Invalid(format!(
            "secret {:?} is not UTF-8 and cannot be an environment variable",
            s.id
        ))
    })
}

/// A secret file: written to the step's secrets tmpfs (made on first use)
/// and bound read-only; `None` for a secret given only as a variable.
fn secret_source(
    s: &SecretSpec,
    run_dir: &Path,
    guard: &mut Guard,
) -> Result<Option<(String, MountKind)>, ExecError> {
    let Some(target) = s.file_target() else {
        return Ok(None);
    };
    if guard.secrets.is_none() {
        guard.secrets = Some(
            SecretFiles::new(&run_dir.join("secrets"))
                .map_err(ExecError::setup("mounting the secrets tmpfs"))?,
        );
    }
    let files = guard
        .secrets
        .as_mut()
        .ok_or_else(|| ExecError::Invalid("secrets tmpfs missing".into()))?;
    let source = files
        .add(&s.data, s.mode, s.uid, s.gid)
        .map_err(ExecError::setup(format!("writing secret {:?}", s.id)))?;
    Ok(Some((
        target,
        MountKind::Bind {
            source,
            readonly: true,
        },
    )))
}

/// An ssh agent: a socket at `socket` forwarding to the agent, bound at `target`.
fn ssh_source(
    s: &SshSpec,
    target: String,
    socket: &Path,
    guard: &mut Guard,
) -> Result<(String, MountKind), ExecError> {
    let forward = AgentForward::start(&s.agent_socket, socket, s.mode, s.uid, s.gid)
        .map_err(ExecError::setup(format!("forwarding ssh agent {:?}", s.id)))?;
    let source = forward.socket().to_path_buf();
    guard.agents.push(forward);
    Ok((
        target,
        MountKind::Bind {
            source,
            readonly: false,
        },
    ))
}

/// /etc/hosts, resolv.conf and hostname, unless a RUN mount covers them.
fn etc_mounts(
    config: &ExecutorConfig,
    req: &ExecRequest,
    hostname: &str,
    rootfs: &Path,
    mounts: &mut Vec<ContainerMount>,
) -> Result<(), ExecError> {
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let etc_dir = etc_files(
        config,
        &[
            ("hosts", hosts_file(hostname, &req.extra_hosts)),
            (
                "resolv.conf",
                resolv_conf(&host_resolv, req.network.isolated()),
            ),
            ("hostname", format!("{hostname}\n")),
        ],
    )?;
    for name in ["hosts", "resolv.conf", "hostname"] {
        let target = format!("/etc/{name}");
        if mounts.iter().any(|m| m.destination == target) {
            continue;
        }
        mounts.push(ContainerMount {
            destination: resolve(rootfs, &target)?,
            kind: MountKind::Bind {
                source: etc_dir.join(name),
                readonly: true,
            },
        });
    }
    Ok(())
}

/// Makes every bind source absolute (runtimes resolve them against the bundle).
fn absolute_sources(mounts: &mut [ContainerMount]) -> Result<(), ExecError> {
    for m in mounts {
        if let MountKind::Bind { source, .. } = &mut m.kind {
            *source = std::path::absolute(&*source).map_err(ExecError::setup(format!(
                "resolving mount source {}",
                source.display()
            )))?;
        }
    }
    Ok(())
}

/// Creates the missing mount points and records what appeared in the upper
/// dir since `before` as stubs to remove after the step.
fn make_mount_points(
    rootfs: &Path,
    mounts: &[ContainerMount],
    before: &BTreeSet<PathBuf>,
    guard: &mut Guard,
) -> Result<(), ExecError> {
    for m in mounts {
        create_stub(rootfs, m)?;
    }
    for path in walk(&guard.upper).difference(before) {
        if let Ok(meta) = fs::symlink_metadata(guard.upper.join(path)) {
            guard.stubs.insert(
                path.clone(),
                Stub {
                    is_dir: meta.is_dir(),
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
            );
        }
    }
    Ok(())
}

/// Resolves and creates the working directory; it and its parents stay in
/// the layer, as BuildKit leaves them.
fn working_dir(rootfs: &Path, cwd: &str, guard: &mut Guard) -> Result<String, ExecError> {
    let cwd = resolve(rootfs, &absolute("/", cwd))?;
    let cwd_host = host_path(rootfs, &cwd);
    if !cwd_host.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&cwd_host)
            .map_err(ExecError::setup(format!(
                "creating working directory {cwd}"
            )))?;
    }
    let mut p = PathBuf::from(cwd.trim_start_matches('/'));
    while !p.as_os_str().is_empty() {
        guard.keep.insert(p.clone());
        p = p.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    Ok(cwd)
}

/// The default network for the step, from the executor's pool (see
/// [`super::netns`]); not handed on after an insecure step.
fn default_network(
    req: &ExecRequest,
    networks: &Arc<NetworkPool>,
) -> Result<NetworkLease, ExecError> {
    let mut lease = networks.take()?;
    if req.security == SecurityMode::Insecure {
        lease.discard();
    }
    Ok(lease)
}

/// The /etc files of a step, shared by every step with the same contents: they
/// are mounted read-only, so one copy (named by the hash of the contents) serves
/// all, which spares each step creating and deleting them.
fn etc_files(config: &ExecutorConfig, files: &[(&str, String)]) -> Result<PathBuf, ExecError> {
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(content.as_bytes());
        hasher.update([0]);
    }
    let key = hex::encode(hasher.finalize().get(..16).unwrap_or_default());
    let base = config.executor_dir().join("etc");
    let dir = base.join(&key);
    if dir.is_dir() {
        return Ok(dir);
    }
    let err = ExecError::setup(format!("writing /etc files to {}", base.display()));
    let tmp = base.join(format!(".tmp-{}", unique_id()));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&tmp)
        .map_err(ExecError::setup("creating the /etc files directory"))?;
    for (name, content) in files {
        fs::write(tmp.join(name), content)
            .map_err(ExecError::setup(format!("writing /etc/{name}")))?;
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        let _ = fs::remove_dir_all(&tmp);
        // Another step wrote the same files first.
        if !dir.is_dir() {
            return Err(err(e));
        }
    }
    Ok(dir)
}

/// The root mode of a tmpfs over a mount point that did not exist (tmpfs' own default).
const TMPFS_FRESH_MODE: u32 = 0o1777;

/// The root mode of a tmpfs mounted at `host`: the mode of the directory it
/// covers, as runc gives it (so BuildKit's tmpfs mounts), else tmpfs' default.
fn tmpfs_mode(host: &Path) -> u32 {
    match fs::metadata(host) {
        Ok(md) if md.is_dir() => md.mode() & 0o7777,
        _ => TMPFS_FRESH_MODE,
    }
}

/// Makes a container path absolute against `cwd`.
fn absolute(cwd: &str, target: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), target)
    }
}

fn resolve(rootfs: &Path, target: &str) -> Result<String, ExecError> {
    resolve_in_root(rootfs, target, true)
        .map(|r| r.container_path())
        .map_err(ExecError::setup(format!("resolving {target}")))
}

/// Creates a missing mount point (and its parents) in the rootfs.
fn create_stub(rootfs: &Path, m: &ContainerMount) -> Result<(), ExecError> {
    // /dev is a fresh tmpfs in the container: mount points inside it are made
    // there by the executor (runc does it itself).
    if m.destination.starts_with("/dev/") {
        return Ok(());
    }
    let host = host_path(rootfs, &m.destination);
    if fs::symlink_metadata(&host).is_ok() {
        return Ok(());
    }
    let err = ExecError::setup(format!("creating mount point {}", m.destination));
    if let Some(parent) = host.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(ExecError::setup(format!(
                "creating mount point {}",
                m.destination
            )))?;
    }
    if m.needs_file_stub() {
        fs::File::create(&host).map(drop).map_err(err)
    } else {
        fs::DirBuilder::new().mode(0o755).create(&host).map_err(err)
    }
}

/// Relative paths of everything in a directory tree.
fn walk(root: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.path().strip_prefix(root).ok().map(Path::to_path_buf))
        .collect()
}

/// Up to this many entries a new layer is made durable file by file; a bigger
/// one with a single `syncfs` of its filesystem.
pub const SYNC_EACH_MAX: usize = 64;

/// Makes a finished step's layer durable before a cache record refers to it.
///
/// The overlay is mounted `volatile`, so neither the step's own fsyncs (dpkg
/// issues thousands) nor the unmount reach the disk; this replaces them all.
/// Most RUN layers hold a handful of files: those are written back together and
/// then fsynced with their directories, which leaves alone whatever else is
/// dirty on the filesystem (`syncfs` would wait for all of it, e.g. other
/// builds' writes). Bigger layers take one `syncfs`. Failed steps skip this:
/// their upper dir is thrown away. The worker calls it off the step's path
/// (`worker::syncer`), while the next steps run.
pub fn sync_layer(upper: &Path) -> Result<(), ExecError> {
    let err = |what: &str, path: &Path| {
        let step = format!("{what} {}", path.display());
        move |source| ExecError::Setup { step, source }
    };
    let mut files = Vec::new();
    let mut dirs = vec![upper.to_path_buf()];
    for entry in walkdir::WalkDir::new(upper).min_depth(1) {
        // A tree this process cannot read whole is synced with its filesystem.
        let Ok(entry) = entry else {
            return syncfs(upper);
        };
        if files.len() + dirs.len() > SYNC_EACH_MAX {
            return syncfs(upper);
        }
        let t = entry.file_type();
        if t.is_dir() {
            dirs.push(entry.into_path());
        } else if t.is_file() {
            files.push(entry.into_path());
        }
        // Symlinks, whiteouts and fifos have no data: their parent's fsync
        // makes them durable.
    }
    let mut open = Vec::with_capacity(files.len());
    for f in &files {
        // A file this process may not open (rootless, mode 000) is still
        // covered by syncing the whole filesystem.
        let Ok(file) = fs::File::open(f) else {
            return syncfs(upper);
        };
        // Start every file's writeback first so one journal commit covers all.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        open.push(file);
    }
    for (file, path) in open.iter().zip(&files) {
        file.sync_all().map_err(err("syncing", path))?;
    }
    for d in dirs.iter().rev() {
        let Ok(dir) = fs::File::open(d) else {
            return syncfs(upper);
        };
        dir.sync_all().map_err(err("syncing", d))?;
    }
    Ok(())
}

/// One `syncfs` of the filesystem holding `upper`.
fn syncfs(upper: &Path) -> Result<(), ExecError> {
    let dir = fs::File::open(upper).map_err(ExecError::setup(format!(
        "opening the new layer {}",
        upper.display()
    )))?;
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } < 0 {
        return Err(ExecError::Setup {
            step: format!("syncing the new layer {}", upper.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl Prepared {
    /// Drops the host's view of the step's secrets: call once the step's mount
    /// namespace has bound them (its process started), so they vanish with it.
    pub fn release_secrets(&self) {
        if let Some(s) = &self._guard.secrets {
            let _ = s.release_host_view();
        }
    }

    /// Tears the world down now (the same happens on drop).
    pub fn finish(self) {
        drop(self)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.agents.clear();
        // The step's processes are gone: the next step may have the network.
        self.network = None;
        let unmounted = match self.rootfs_mount.take() {
            Some(m) => m.unmount().is_ok(),
            None => true,
        };
        // The upper dir may only be edited once overlayfs no longer uses it.
        if unmounted {
            for (path, stub) in self.stubs.iter().rev() {
                if self.keep.contains(path) {
                    continue;
                }
                let host = self.upper.join(path);
                let Ok(meta) = fs::symlink_metadata(&host) else {
                    continue;
                };
                if stub.is_dir {
                    let unchanged = meta.is_dir()
                        && meta.mode() == stub.mode
                        && meta.uid() == stub.uid
                        && meta.gid() == stub.gid;
                    if unchanged {
                        let _ = fs::remove_dir(&host);
                    }
                } else if meta.is_file() && meta.len() == 0 {
                    let _ = fs::remove_file(&host);
                }
            }
        }
        self.caches.clear();
        self.secrets = None;
        self.binds.clear();
        // Only non-recursive removals: a directory that is still a mount point
        // must never be emptied.
        let _ = fs::remove_dir(self.run_dir.join("rootfs"));
        let _ = fs::remove_file(self.run_dir.join("config.json"));
        let _ = fs::remove_file(self.run_dir.join("runtime.log"));
        let _ = fs::remove_dir(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_layer_takes_small_and_big_layers() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("small");
        fs::create_dir_all(small.join("etc/deep")).unwrap();
        fs::write(small.join("etc/deep/file"), "data").unwrap();
        std::os::unix::fs::symlink("deep/file", small.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("missing", small.join("dangling")).unwrap();
        sync_layer(&small).unwrap();
        let big = d.path().join("big");
        fs::create_dir(&big).unwrap();
        for i in 0..=SYNC_EACH_MAX {
            fs::write(big.join(format!("f{i}")), "x").unwrap();
        }
        sync_layer(&big).unwrap();
        assert!(sync_layer(&d.path().join("missing")).is_err());
    }

    #[test]
    fn relative_targets_join_cwd() {
        assert_eq!(absolute("/src", "cache"), "/src/cache");
        assert_eq!(absolute("/", "cache"), "/cache");
        assert_eq!(absolute("/src", "/abs"), "/abs");
    }
}
