//! The native sandbox as data: a list of steps the child process performs
//! between `clone` and `execve`.
//!
//! The plan is built in the parent (all allocation happens there) and applied in
//! the child through the [`Sys`] trait, which lets tests check the sequence of
//! privileged calls without root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::executor::caps::cap_mask;
use crate::executor::env::path_of;
use crate::executor::oci_spec::{MASKED_PATHS, READONLY_PATHS};
use crate::executor::seccomp::bpf::{sandbox_program, BpfProgram};
use crate::executor::world::World;
use crate::executor::{ExecError, SecurityMode};
use crate::mounts::{ContainerMount, MountKind};
use crate::rootfs_path::host_path;

/// One thing the child does. Paths are host paths until [`Step::PivotRoot`].
#[derive(Debug)]
pub enum Step {
    /// Unblock all signals and restore default dispositions (Rust ignores SIGPIPE).
    ResetSignals,
    /// Set the umask.
    Umask(u32),
    /// Be killed when the thread that started the step dies (an interrupted build).
    ParentDeathSignal,
    /// Stop mount events from propagating back to the host.
    MakeRslave,
    /// `mount(2)`.
    Mount {
        /// Source.
        source: Option<CString>,
        /// Target.
        target: CString,
        /// Filesystem type.
        fstype: Option<CString>,
        /// Flags.
        flags: libc::c_ulong,
        /// Options.
        data: Option<CString>,
    },
    /// Set a mount's per-mount flags (`MS_RDONLY`, `MS_NODEV`) with a bind remount.
    RemountBind {
        /// The mount point.
        target: CString,
        /// The flags it gets (all others are cleared).
        flags: libc::c_ulong,
    },
    /// Create a character device.
    Mknod {
        /// Path.
        path: CString,
        /// Permission bits.
        mode: u32,
        /// Device major.
        major: u32,
        /// Device minor.
        minor: u32,
    },
    /// Create a directory.
    Mkdir {
        /// Path.
        path: CString,
        /// Permission bits.
        mode: u32,
    },
    /// Create a mount point inside an earlier mount unless something is there
    /// already (left as it is, as runc does): a directory (0755) or an empty file.
    MountPoint {
        /// Path.
        path: CString,
        /// An empty file rather than a directory.
        file: bool,
    },
    /// Create an empty file (a mount point for a file bind) unless it exists.
    Touch {
        /// Path.
        path: CString,
    },
    /// Create a symlink `link -> target`.
    Symlink {
        /// What it points to.
        target: CString,
        /// Where it is created.
        link: CString,
    },
    /// Hide a /proc or /sys path (a file gets /dev/null, a directory an empty ro tmpfs).
    Mask {
        /// Path.
        path: CString,
    },
    /// Make an existing path read-only.
    ReadonlyPath {
        /// Path.
        path: CString,
    },
    /// Set the UTS hostname.
    Sethostname(CString),
    /// Bring `lo` up in a fresh network namespace.
    LoopbackUp,
    /// Join a prepared network namespace (the default network's).
    JoinNetns(std::fs::File),
    /// Join a cgroup: write 0 to its `cgroup.procs`.
    JoinCgroup(std::fs::File),
    /// `pivot_root` into the rootfs and detach the old root.
    PivotRoot(CString),
    /// Change directory.
    Chdir(CString),
    /// Drop every capability outside `keep` from the bounding set.
    DropBounding {
        /// Capabilities to keep.
        keep: u64,
        /// The kernel's last capability.
        last_cap: u32,
    },
    /// Set supplementary groups.
    SetGroups(Vec<libc::gid_t>),
    /// Set real/effective/saved gid.
    SetGid(u32),
    /// Set real/effective/saved uid.
    SetUid(u32),
    /// Set effective, permitted and inheritable capabilities.
    Capset(u64),
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Install a seccomp filter (after no_new_privs, which it needs without
    /// CAP_SYS_ADMIN; last before exec, as runc does).
    Seccomp(&'static BpfProgram),
    /// Execute the program.
    Exec(ExecArgs),
}

/// argv, envp and the candidate paths of the program (PATH search done up front).
#[derive(Debug)]
pub struct ExecArgs {
    /// Paths to try in order.
    pub candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecArgs {
    /// Builds the NUL-terminated pointer arrays.
    pub fn new(program: &str, args: &[String], env: &[String]) -> Result<Self, ExecError> {
        let argv = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let envp = env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
        let candidates = if program.contains('/') {
            vec![c(program)?]
        } else {
            path_of(env)
                .split(':')
                .map(|d| if d.is_empty() { "." } else { d })
                .map(|d| c(&format!("{}/{program}", d.trim_end_matches('/'))))
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ExecArgs {
            candidates,
            argv,
            envp,
            argv_ptrs,
            envp_ptrs,
        })
    }

    /// NUL-terminated argv.
    pub fn argv(&self) -> *const *const libc::c_char {
        self.argv_ptrs.as_ptr()
    }

    /// NUL-terminated envp.
    pub fn envp(&self) -> *const *const libc::c_char {
        self.envp_ptrs.as_ptr()
    }

    /// The argument strings.
    pub fn args(&self) -> &[CString] {
        &self.argv
    }

    /// The environment strings.
    pub fn env(&self) -> &[CString] {
        &self.envp
    }
}

fn c(s: &str) -> Result<CString, ExecError> {
    CString::new(s).map_err(|_| ExecError::Invalid(format!("{s:?} contains a NUL byte")))
}

fn cp(p: &Path) -> Result<CString, ExecError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ExecError::Invalid(format!("{} contains a NUL byte", p.display())))
}

/// The namespaces every step gets (a network one too unless it joins one).
pub const STEP_NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// The clone flags the plan expects.
pub fn clone_flags(world: &World) -> libc::c_int {
    let mut flags = STEP_NAMESPACES;
    if world.network.isolated() && world.netns.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// The device nodes of a sandbox's /dev, bound from the host's /dev.
pub const DEV_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Builds the child's steps for `world`.
///
/// Device access in the sandbox is what runc's device cgroup allows, without a
/// cgroup: every mount the step can reach is `nodev` (the rootfs, /dev, bind
/// mounts; proc, sysfs and tmpfs mounts always are) except the host's own
/// device nodes bound into /dev and the step's devpts. Nodes the step creates
/// (CAP_MKNOD is a default capability) cannot be opened. `--security=insecure`
/// opens every device, as Docker's `--privileged` does.
pub fn build_plan(world: &World, last_cap: u32) -> Result<Vec<Step>, ExecError> {
    let sandbox = world.security == SecurityMode::Sandbox;
    let nodev = if sandbox { libc::MS_NODEV } else { 0 };
    let mut steps = vec![
        Step::ResetSignals,
        Step::ParentDeathSignal,
        Step::Umask(0),
        Step::MakeRslave,
    ];
    // Before sysfs is mounted: it shows the interfaces of the mounter's namespace.
    if let Some(path) = &world.netns {
        let ns =
            std::fs::File::open(path).map_err(ExecError::setup("opening the network namespace"))?;
        steps.push(Step::JoinNetns(ns));
    }
    if sandbox {
        steps.push(Step::RemountBind {
            target: cp(&world.rootfs)?,
            flags: libc::MS_NODEV,
        });
    }
    let none = || -> Option<CString> { None };
    for m in &world.mounts {
        let target = host_path(&world.rootfs, &m.destination);
        let t = cp(&target)?;
        // Mount points inside the container's /dev tmpfs (see world::create_stub).
        if let Some(rest) = m.destination.strip_prefix("/dev/") {
            let mut dir = host_path(&world.rootfs, "/dev");
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                dir.push(part);
                if i + 1 == parts.len() && m.needs_file_stub() {
                    steps.push(Step::Touch { path: cp(&dir)? });
                } else {
                    steps.push(Step::Mkdir {
                        path: cp(&dir)?,
                        mode: 0o755,
                    });
                }
            }
        }
        // Mount points inside an earlier mount (a tmpfs, a bind, a cache) are made
        // there: the stub world::create_stub made in the rootfs is hidden by it.
        if let Some(parent) = covering_mount(&world.mounts, m) {
            let mut dir = host_path(&world.rootfs, parent);
            let rest = m.destination[parent.len()..].trim_start_matches('/');
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                dir.push(part);
                steps.push(Step::MountPoint {
                    path: cp(&dir)?,
                    file: i + 1 == parts.len() && m.needs_file_stub(),
                });
            }
        }
        match &m.kind {
            MountKind::Proc => {
                steps.push(Step::Mount {
                    source: Some(c("proc")?),
                    target: t,
                    fstype: Some(c("proc")?),
                    flags: libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
                    data: none(),
                });
                if sandbox {
                    for p in MASKED_PATHS.iter().filter(|p| p.starts_with("/proc/")) {
                        steps.push(Step::Mask {
                            path: cp(&host_path(&world.rootfs, p))?,
                        });
                    }
                    for p in READONLY_PATHS {
                        steps.push(Step::ReadonlyPath {
                            path: cp(&host_path(&world.rootfs, p))?,
                        });
                    }
                }
            }
            MountKind::Dev => {
                steps.push(Step::Mount {
                    source: Some(c("tmpfs")?),
                    target: t,
                    fstype: Some(c("tmpfs")?),
                    flags: libc::MS_NOSUID | libc::MS_STRICTATIME | nodev,
                    data: Some(c("mode=755,size=65536k")?),
                });
                for &(name, major, minor) in DEV_NODES {
                    let path = cp(&target.join(name))?;
                    if sandbox {
                        steps.push(Step::Touch { path: path.clone() });
                        steps.push(Step::Mount {
                            source: Some(c(&format!("/dev/{name}"))?),
                            target: path,
                            fstype: none(),
                            flags: libc::MS_BIND,
                            data: none(),
                        });
                    } else {
                        steps.push(Step::Mknod {
                            path,
                            mode: 0o666,
                            major,
                            minor,
                        });
                    }
                }
                steps.push(Step::Mkdir {
                    path: cp(&target.join("pts"))?,
                    mode: 0o755,
                });
                steps.push(Step::Mount {
                    source: Some(c("devpts")?),
                    target: cp(&target.join("pts"))?,
                    fstype: Some(c("devpts")?),
                    flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                    data: Some(c("newinstance,ptmxmode=0666,mode=0620")?),
                });
                steps.push(Step::Mkdir {
                    path: cp(&target.join("shm"))?,
                    mode: 0o1777,
                });
                steps.push(Step::Mount {
                    source: Some(c("shm")?),
                    target: cp(&target.join("shm"))?,
                    fstype: Some(c("tmpfs")?),
                    flags: libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
                    data: Some(c("mode=1777,size=65536k")?),
                });
                for (link, to) in [
                    ("ptmx", "pts/ptmx"),
                    ("fd", "/proc/self/fd"),
                    ("stdin", "/proc/self/fd/0"),
                    ("stdout", "/proc/self/fd/1"),
                    ("stderr", "/proc/self/fd/2"),
                ] {
                    steps.push(Step::Symlink {
                        target: c(to)?,
                        link: cp(&target.join(link))?,
                    });
                }
            }
            MountKind::Sysfs { readonly } => {
                let mut flags = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
                if *readonly {
                    flags |= libc::MS_RDONLY;
                }
                steps.push(Step::Mount {
                    source: Some(c("sysfs")?),
                    target: t,
                    fstype: Some(c("sysfs")?),
                    flags,
                    data: none(),
                });
                if sandbox {
                    for p in MASKED_PATHS.iter().filter(|p| p.starts_with("/sys/")) {
                        steps.push(Step::Mask {
                            path: cp(&host_path(&world.rootfs, p))?,
                        });
                    }
                }
            }
            MountKind::Bind { source, readonly } => {
                steps.push(Step::Mount {
                    source: Some(cp(source)?),
                    target: t.clone(),
                    fstype: none(),
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: none(),
                });
                let flags = if *readonly { libc::MS_RDONLY } else { 0 } | nodev;
                if flags != 0 {
                    steps.push(Step::RemountBind { target: t, flags });
                }
            }
            MountKind::Tmpfs { size, mode } => {
                let mut data = format!("mode={mode:o}");
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                steps.push(Step::Mount {
                    source: Some(c("tmpfs")?),
                    target: t,
                    fstype: Some(c("tmpfs")?),
                    flags: libc::MS_NOSUID | libc::MS_NODEV,
                    data: Some(c(&data)?),
                });
            }
        }
    }
    steps.push(Step::Sethostname(c(&world.hostname)?));
    if world.netns.is_none() && world.network.isolated() {
        steps.push(Step::LoopbackUp);
    }
    steps.push(Step::PivotRoot(cp(&world.rootfs)?));
    if sandbox {
        steps.push(Step::DropBounding {
            keep: cap_mask(false, last_cap),
            last_cap,
        });
    }
    steps.push(Step::SetGroups(world.user.additional_gids.clone()));
    steps.push(Step::SetGid(world.user.gid));
    steps.push(Step::SetUid(world.user.uid));
    if sandbox && world.user.uid == 0 {
        steps.push(Step::Capset(cap_mask(false, last_cap)));
    }
    steps.push(Step::Chdir(c(&world.cwd)?));
    if sandbox {
        steps.push(Step::NoNewPrivs);
    }
    steps.push(Step::Umask(0o022));
    if sandbox {
        steps.push(Step::Seccomp(sandbox_program()?));
    }
    let program = world
        .args
        .first()
        .ok_or_else(|| ExecError::Invalid("empty argv".into()))?;
    steps.push(Step::Exec(ExecArgs::new(program, &world.args, &world.env)?));
    Ok(steps)
}

/// What a path is, for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Does not exist.
    Missing,
    /// A directory.
    Dir,
    /// Anything else.
    Other,
}

/// The destination of the deepest user mount before `m` that `m` lies inside
/// (/dev's mount points are made with /dev itself).
fn covering_mount<'a>(mounts: &'a [ContainerMount], m: &ContainerMount) -> Option<&'a str> {
    mounts
        .iter()
        .take_while(|o| !std::ptr::eq(*o, m))
        .filter(|o| matches!(o.kind, MountKind::Bind { .. } | MountKind::Tmpfs { .. }))
        .map(|o| o.destination.as_str())
        .filter(|d| Path::new(&m.destination).starts_with(d) && *d != m.destination)
        .max_by_key(|d| d.len())
}

/// The privileged calls the child makes. Errors are raw errno values; the real
/// implementation must not allocate (it runs between clone and exec).
pub trait Sys {
    /// `mount(2)`.
    fn mount(
        &mut self,
        source: Option<&CString>,
        target: &CString,
        fstype: Option<&CString>,
        flags: libc::c_ulong,
        data: Option<&CString>,
    ) -> Result<(), i32>;
    /// What is at `path`.
    fn path_kind(&mut self, path: &CString) -> Result<PathKind, i32>;
    /// `mknod(2)` of a character device.
    fn mknod(&mut self, path: &CString, mode: u32, major: u32, minor: u32) -> Result<(), i32>;
    /// `mkdir(2)` followed by `chmod` (the umask is 0 but sticky bits need it).
    fn mkdir(&mut self, path: &CString, mode: u32) -> Result<(), i32>;
    /// `symlink(2)`.
    fn symlink(&mut self, target: &CString, link: &CString) -> Result<(), i32>;
    /// Create an empty file if missing.
    fn touch(&mut self, path: &CString) -> Result<(), i32>;
    /// `sethostname(2)`.
    fn sethostname(&mut self, name: &CString) -> Result<(), i32>;
    /// Bring `lo` up.
    fn loopback_up(&mut self) -> Result<(), i32>;
    /// `setns(fd, CLONE_NEWNET)`.
    fn join_netns(&mut self, fd: i32) -> Result<(), i32>;
    /// Move this process into the cgroup whose `cgroup.procs` is open as `fd`.
    fn join_cgroup(&mut self, fd: i32) -> Result<(), i32>;
    /// `pivot_root` into `root`, detach the old root, `chdir("/")`.
    fn pivot_root(&mut self, root: &CString) -> Result<(), i32>;
    /// `chdir(2)`.
    fn chdir(&mut self, path: &CString) -> Result<(), i32>;
    /// Drop one capability from the bounding set.
    fn drop_bounding(&mut self, cap: u32) -> Result<(), i32>;
    /// `setgroups(2)`.
    fn setgroups(&mut self, gids: &[libc::gid_t]) -> Result<(), i32>;
    /// `setresgid(2)`.
    fn setgid(&mut self, gid: u32) -> Result<(), i32>;
    /// `setresuid(2)`.
    fn setuid(&mut self, uid: u32) -> Result<(), i32>;
    /// `capset(2)` with the same mask for effective, permitted and inheritable.
    fn capset(&mut self, mask: u64) -> Result<(), i32>;
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    fn no_new_privs(&mut self) -> Result<(), i32>;
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` with `program`.
    fn seccomp(&mut self, program: &BpfProgram) -> Result<(), i32>;
    /// `umask(2)`.
    fn umask(&mut self, mask: u32);
    /// `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
    fn parent_death_signal(&mut self) -> Result<(), i32>;
    /// Reset signal mask and dispositions.
    fn reset_signals(&mut self);
    /// `execve(2)`; returns only on failure.
    fn execve(&mut self, path: &CString, args: &ExecArgs) -> i32;
}

/// Applies the steps in order. On failure returns the failing step's index and errno.
pub fn apply<S: Sys>(steps: &[Step], sys: &mut S) -> Result<(), (usize, i32)> {
    for (i, step) in steps.iter().enumerate() {
        let r = match step {
            Step::ResetSignals => {
                sys.reset_signals();
                Ok(())
            }
            Step::Umask(m) => {
                sys.umask(*m);
                Ok(())
            }
            Step::ParentDeathSignal => sys.parent_death_signal(),
            Step::MakeRslave => sys.mount(None, &ROOT, None, libc::MS_REC | libc::MS_SLAVE, None),
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => sys.mount(
                source.as_ref(),
                target,
                fstype.as_ref(),
                *flags,
                data.as_ref(),
            ),
            Step::RemountBind { target, flags } => sys.mount(
                None,
                target,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_REC | flags,
                None,
            ),
            Step::Mknod {
                path,
                mode,
                major,
                minor,
            } => sys.mknod(path, *mode, *major, *minor),
            Step::Mkdir { path, mode } => sys.mkdir(path, *mode),
            Step::Symlink { target, link } => sys.symlink(target, link),
            Step::Touch { path } => sys.touch(path),
            Step::MountPoint { path, file } => match sys.path_kind(path) {
                Ok(PathKind::Missing) if *file => sys.touch(path),
                Ok(PathKind::Missing) => sys.mkdir(path, 0o755),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            Step::Mask { path } => match sys.path_kind(path) {
                Ok(PathKind::Missing) => Ok(()),
                Ok(PathKind::Dir) => {
                    sys.mount(Some(&TMPFS), path, Some(&TMPFS), libc::MS_RDONLY, None)
                }
                Ok(PathKind::Other) => sys.mount(Some(&DEV_NULL), path, None, libc::MS_BIND, None),
                Err(e) => Err(e),
            },
            Step::ReadonlyPath { path } => match sys.path_kind(path) {
                Ok(PathKind::Missing) => Ok(()),
                Ok(_) => sys
                    .mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)
                    .and_then(|_| {
                        sys.mount(
                            None,
                            path,
                            None,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                            None,
                        )
                    }),
                Err(e) => Err(e),
            },
            Step::Sethostname(name) => sys.sethostname(name),
            Step::LoopbackUp => sys.loopback_up(),
            Step::JoinNetns(f) => sys.join_netns(std::os::fd::AsRawFd::as_raw_fd(f)),
            Step::JoinCgroup(f) => sys.join_cgroup(std::os::fd::AsRawFd::as_raw_fd(f)),
            Step::PivotRoot(root) => sys.pivot_root(root),
            Step::Chdir(p) => sys.chdir(p),
            Step::DropBounding { keep, last_cap } => {
                let mut r = Ok(());
                for cap in 0..=*last_cap {
                    if cap < 64 && keep & (1u64 << cap) == 0 {
                        r = sys.drop_bounding(cap);
                        if r.is_err() {
                            break;
                        }
                    }
                }
                r
            }
            Step::SetGroups(g) => sys.setgroups(g),
            Step::SetGid(g) => sys.setgid(*g),
            Step::SetUid(u) => sys.setuid(*u),
            Step::Capset(m) => sys.capset(*m),
            Step::NoNewPrivs => sys.no_new_privs(),
            Step::Seccomp(p) => sys.seccomp(p),
            Step::Exec(args) => {
                // execvp semantics: skip candidates that do not exist, remember EACCES.
                let mut err = libc::ENOENT;
                for path in &args.candidates {
                    let e = sys.execve(path, args);
                    match e {
                        libc::ENOENT | libc::ENOTDIR => {}
                        libc::EACCES => err = libc::EACCES,
                        other => {
                            err = other;
                            break;
                        }
                    }
                }
                Err(err)
            }
        };
        r.map_err(|e| (i, e))?;
    }
    Ok(())
}

static ROOT: std::sync::LazyLock<CString> = std::sync::LazyLock::new(|| CString::from(c"/"));
static TMPFS: std::sync::LazyLock<CString> = std::sync::LazyLock::new(|| CString::from(c"tmpfs"));
static DEV_NULL: std::sync::LazyLock<CString> =
    std::sync::LazyLock::new(|| CString::from(c"/dev/null"));

/// Forces the lazily built constants so the child never initialises them.
pub fn init_constants() {
    let _ = (&*ROOT, &*TMPFS, &*DEV_NULL);
}

impl Step {
    /// A human description for error messages.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::ResetSignals => "resetting signals".into(),
            Step::Umask(m) => format!("umask {m:o}"),
            Step::ParentDeathSignal => "setting the parent death signal".into(),
            Step::MakeRslave => "making / a slave mount".into(),
            Step::Mount {
                fstype,
                target,
                source,
                ..
            } => format!(
                "mounting {} ({}) at {}",
                source.as_ref().map(s).unwrap_or_default(),
                fstype.as_ref().map(s).unwrap_or_else(|| "bind".into()),
                s(target)
            ),
            Step::RemountBind { target, flags } => {
                let what = match (flags & libc::MS_RDONLY != 0, flags & libc::MS_NODEV != 0) {
                    (true, true) => "read-only and without devices",
                    (true, false) => "read-only",
                    (false, true) => "without devices",
                    (false, false) => "plain",
                };
                format!("making {} {what}", s(target))
            }
            Step::Mknod { path, .. } => format!("creating device {}", s(path)),
            Step::Mkdir { path, .. } => format!("creating {}", s(path)),
            Step::Symlink { link, .. } => format!("creating symlink {}", s(link)),
            Step::Touch { path } | Step::MountPoint { path, .. } => {
                format!("creating {}", s(path))
            }
            Step::Mask { path } => format!("masking {}", s(path)),
            Step::ReadonlyPath { path } => format!("making {} read-only", s(path)),
            Step::Sethostname(n) => format!("setting hostname {}", s(n)),
            Step::LoopbackUp => "bringing up lo".into(),
            Step::JoinNetns(_) => "joining the network namespace".into(),
            Step::JoinCgroup(_) => "joining the step's cgroup".into(),
            Step::PivotRoot(r) => format!("pivot_root into {}", s(r)),
            Step::Chdir(p) => format!("changing to working directory {}", s(p)),
            Step::DropBounding { .. } => "dropping capabilities".into(),
            Step::SetGroups(_) => "setting supplementary groups".into(),
            Step::SetGid(g) => format!("setting gid {g}"),
            Step::SetUid(u) => format!("setting uid {u}"),
            Step::Capset(_) => "setting capabilities".into(),
            Step::NoNewPrivs => "setting no_new_privs".into(),
            Step::Seccomp(_) => "installing the seccomp filter".into(),
            Step::Exec(a) => format!("executing {}", a.args().first().map(s).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::user::ResolvedUser;
    use crate::executor::NetworkMode;

    #[test]
    fn mount_points_go_in_the_deepest_earlier_mount() {
        let m = |d: &str, kind: MountKind| ContainerMount {
            destination: d.into(),
            kind,
        };
        let tmpfs = || MountKind::Tmpfs {
            size: None,
            mode: 0o1777,
        };
        let mounts = vec![
            m("/dev", MountKind::Dev),
            m("/t", tmpfs()),
            m("/tx", tmpfs()),
            m("/t/a", tmpfs()),
            m("/t/a/b/c", tmpfs()),
            m("/dev/x", tmpfs()),
        ];
        let parent = |i: usize| covering_mount(&mounts, &mounts[i]);
        assert_eq!(parent(1), None);
        assert_eq!(parent(2), None, "/tx is not inside /t");
        assert_eq!(parent(3), Some("/t"));
        assert_eq!(parent(4), Some("/t/a"));
        assert_eq!(parent(5), None, "/dev makes its own");
    }

    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        existing: Vec<String>,
        exec_ok: Vec<String>,
    }

    fn s(c: &CString) -> String {
        c.to_string_lossy().into_owned()
    }

    impl Sys for Recorder {
        fn mount(
            &mut self,
            source: Option<&CString>,
            target: &CString,
            fstype: Option<&CString>,
            flags: libc::c_ulong,
            data: Option<&CString>,
        ) -> Result<(), i32> {
            self.calls.push(format!(
                "mount {} {} {} {flags:#x} {}",
                source.map(s).unwrap_or("-".into()),
                s(target),
                fstype.map(s).unwrap_or("-".into()),
                data.map(s).unwrap_or("-".into())
            ));
            Ok(())
        }
        fn path_kind(&mut self, path: &CString) -> Result<PathKind, i32> {
            Ok(if self.existing.contains(&s(path)) {
                PathKind::Other
            } else {
                PathKind::Missing
            })
        }
        fn mknod(&mut self, path: &CString, mode: u32, major: u32, minor: u32) -> Result<(), i32> {
            self.calls
                .push(format!("mknod {} {mode:o} {major}:{minor}", s(path)));
            Ok(())
        }
        fn mkdir(&mut self, path: &CString, mode: u32) -> Result<(), i32> {
            self.calls.push(format!("mkdir {} {mode:o}", s(path)));
            Ok(())
        }
        fn symlink(&mut self, target: &CString, link: &CString) -> Result<(), i32> {
            self.calls
                .push(format!("symlink {} -> {}", s(link), s(target)));
            Ok(())
        }
        fn touch(&mut self, path: &CString) -> Result<(), i32> {
            self.calls.push(format!("touch {}", s(path)));
            Ok(())
        }
        fn sethostname(&mut self, name: &CString) -> Result<(), i32> {
            self.calls.push(format!("hostname {}", s(name)));
            Ok(())
        }
        fn loopback_up(&mut self) -> Result<(), i32> {
            self.calls.push("lo up".into());
            Ok(())
        }
        fn join_netns(&mut self, fd: i32) -> Result<(), i32> {
            self.calls.push(format!("setns {}", fd >= 0));
            Ok(())
        }
        fn join_cgroup(&mut self, fd: i32) -> Result<(), i32> {
            self.calls.push(format!("cgroup {}", fd >= 0));
            Ok(())
        }
        fn pivot_root(&mut self, root: &CString) -> Result<(), i32> {
            self.calls.push(format!("pivot_root {}", s(root)));
            Ok(())
        }
        fn chdir(&mut self, path: &CString) -> Result<(), i32> {
            self.calls.push(format!("chdir {}", s(path)));
            Ok(())
        }
        fn drop_bounding(&mut self, cap: u32) -> Result<(), i32> {
            self.calls.push(format!("capbset_drop {cap}"));
            Ok(())
        }
        fn setgroups(&mut self, gids: &[libc::gid_t]) -> Result<(), i32> {
            self.calls.push(format!("setgroups {gids:?}"));
            Ok(())
        }
        fn setgid(&mut self, gid: u32) -> Result<(), i32> {
            self.calls.push(format!("setgid {gid}"));
            Ok(())
        }
        fn setuid(&mut self, uid: u32) -> Result<(), i32> {
            self.calls.push(format!("setuid {uid}"));
            Ok(())
        }
        fn capset(&mut self, mask: u64) -> Result<(), i32> {
            self.calls.push(format!("capset {mask:#x}"));
            Ok(())
        }
        fn no_new_privs(&mut self) -> Result<(), i32> {
            self.calls.push("nnp".into());
            Ok(())
        }
        fn seccomp(&mut self, program: &BpfProgram) -> Result<(), i32> {
            let n = program.instructions().len();
            self.calls.push(format!("seccomp {}", n.min(1)));
            Ok(())
        }
        fn umask(&mut self, mask: u32) {
            self.calls.push(format!("umask {mask:o}"));
        }
        fn reset_signals(&mut self) {}
        fn parent_death_signal(&mut self) -> Result<(), i32> {
            self.calls.push("pdeathsig".into());
            Ok(())
        }
        fn execve(&mut self, path: &CString, _args: &ExecArgs) -> i32 {
            self.calls.push(format!("execve {}", s(path)));
            if self.exec_ok.contains(&s(path)) {
                0
            } else {
                libc::ENOENT
            }
        }
    }

    fn world(uid: u32, network: NetworkMode, security: SecurityMode) -> World {
        World {
            id: "t".into(),
            run_dir: "/r".into(),
            rootfs: "/r/rootfs".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/src".into(),
            user: ResolvedUser {
                uid,
                gid: uid,
                additional_gids: vec![],
                home: "/".into(),
            },
            hostname: "box".into(),
            mounts: vec![
                ContainerMount {
                    destination: "/proc".into(),
                    kind: MountKind::Proc,
                },
                ContainerMount {
                    destination: "/etc/hosts".into(),
                    kind: MountKind::Bind {
                        source: "/r/etc/hosts".into(),
                        readonly: true,
                    },
                },
            ],
            network,
            netns: None,
            security,
        }
    }

    #[test]
    fn sandbox_plan_order_and_exec_search() {
        let plan = build_plan(&world(0, NetworkMode::None, SecurityMode::Sandbox), 40).unwrap();
        let mut rec = Recorder {
            existing: vec!["/r/rootfs/proc/kcore".into()],
            exec_ok: vec![],
            ..Recorder::default()
        };
        let err = apply(&plan, &mut rec).unwrap_err();
        assert_eq!(err, (plan.len() - 1, libc::ENOENT));
        let calls = rec.calls.join("\n");
        assert!(calls.contains("mount proc /r/rootfs/proc proc 0xe -"));
        assert!(calls.contains("mount /dev/null /r/rootfs/proc/kcore - 0x1000 -"));
        assert!(calls.contains("mount /r/etc/hosts /r/rootfs/etc/hosts - 0x5000 -"));
        assert!(calls.contains("mount - /r/rootfs/etc/hosts - 0x5025 -"));
        assert!(
            calls.contains("mount - /r/rootfs - 0x5024 -"),
            "the rootfs is nodev: {calls}"
        );
        let order: Vec<usize> = [
            "hostname box",
            "lo up",
            "pivot_root /r/rootfs",
            "capbset_drop 2",
            "setuid 0",
            "capset",
            "chdir /src",
            "nnp",
            "seccomp 1",
            "execve /usr/bin/sh",
            "execve /bin/sh",
        ]
        .iter()
        .map(|needle| {
            calls
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing in\n{calls}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{calls}");
        assert!(!calls.contains("capbset_drop 0\n"), "CHOWN is kept");
    }

    #[test]
    fn insecure_non_root_plan_keeps_caps_and_host_net() {
        let plan = build_plan(&world(1000, NetworkMode::Host, SecurityMode::Insecure), 40).unwrap();
        let mut rec = Recorder {
            exec_ok: vec!["/bin/sh".into()],
            ..Recorder::default()
        };
        apply(&plan, &mut rec).unwrap_err();
        let calls = rec.calls.join("\n");
        assert!(!calls.contains("capbset_drop"));
        assert!(!calls.contains("capset"));
        assert!(!calls.contains("nnp"));
        assert!(!calls.contains("seccomp"), "insecure is unconfined");
        assert!(!calls.contains("lo up"));
        assert!(calls.contains("setgid 1000\nsetuid 1000"));
        assert!(!calls.contains("kcore"));
        assert!(calls.contains("mount - /r/rootfs/etc/hosts - 0x5021 -"));
        assert!(!calls.contains("mount - /r/rootfs - "), "{calls}");
    }

    #[test]
    fn default_network_joins_the_prepared_namespace() {
        let mut w = world(0, NetworkMode::Default, SecurityMode::Sandbox);
        assert_ne!(clone_flags(&w) & libc::CLONE_NEWNET, 0, "no namespace yet");
        w.netns = Some("/proc/self/ns/net".into());
        assert_eq!(clone_flags(&w) & libc::CLONE_NEWNET, 0);
        let mut rec = Recorder::default();
        apply(&build_plan(&w, 40).unwrap(), &mut rec).unwrap_err();
        let calls = rec.calls.join("\n");
        assert!(
            calls.contains("pdeathsig\numask 0\nmount - / - 0x84000 -\nsetns true\n"),
            "{calls}"
        );
        assert!(!calls.contains("lo up"), "{calls}");
    }

    #[test]
    fn sandbox_dev_binds_host_nodes_and_insecure_makes_them() {
        let mut w = world(0, NetworkMode::Default, SecurityMode::Sandbox);
        w.mounts.push(ContainerMount {
            destination: "/dev".into(),
            kind: MountKind::Dev,
        });
        let run = |w: &World| {
            let mut rec = Recorder::default();
            apply(&build_plan(w, 40).unwrap(), &mut rec).unwrap_err();
            rec.calls.join("\n")
        };
        let calls = run(&w);
        assert!(calls.contains("mount tmpfs /r/rootfs/dev tmpfs 0x1000006 mode=755,size=65536k"));
        assert!(calls
            .contains("touch /r/rootfs/dev/null\nmount /dev/null /r/rootfs/dev/null - 0x1000 -"));
        assert!(!calls.contains("mknod"), "{calls}");
        w.security = SecurityMode::Insecure;
        let calls = run(&w);
        assert!(calls.contains("mount tmpfs /r/rootfs/dev tmpfs 0x1000002 mode=755,size=65536k"));
        assert!(calls.contains("mknod /r/rootfs/dev/null 666 1:3"));
    }
}
