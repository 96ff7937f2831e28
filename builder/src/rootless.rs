//! Rootless mode: an unprivileged kiln re-executes itself inside a new user and
//! mount namespace, mapped from the user's `/etc/subuid` and `/etc/subgid` ranges
//! by the set-uid `newuidmap`/`newgidmap` (Debian's `uidmap`), the shape of
//! rootlesskit. Inside, uid 0 is the user and uids 1..=count are the subordinate
//! range, so layer unpacking with owners, overlay mounts and RUN all work as "root"
//! there, and files owned by other uids keep their ids in the image.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

/// One thing a user namespace needs that this host or user lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No `/etc/subuid` (or `/etc/subgid`) line for the user.
    SubordinateRange { file: &'static str, user: String },
    /// `newuidmap` or `newgidmap` is not on `PATH`.
    MapTool(&'static str),
    /// The process runs with `no_new_privs` (Kubernetes' `allowPrivilegeEscalation:
    /// false`, `setpriv --no-new-privs`): the set-uid map tools would gain nothing.
    NoNewPrivs,
    /// A sysctl forbids unprivileged user namespaces.
    Sysctl { name: &'static str, value: String },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::SubordinateRange { file, user } => {
                write!(f, "{file} has no range for user {user}")
            }
            Missing::MapTool(tool) => write!(f, "{tool} is not installed (not found on PATH)"),
            Missing::NoNewPrivs => write!(
                f,
                "kiln runs with no_new_privs, so the set-uid newuidmap/newgidmap cannot map ids"
            ),
            Missing::Sysctl { name, value } => {
                write!(f, "sysctl {name} is {value}, which forbids user namespaces")
            }
        }
    }
}

/// Why kiln could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// Prerequisites are missing (all of them are listed).
    #[error("kiln runs unprivileged (uid {uid}) and cannot create a user namespace:\n{}", list(.missing))]
    Missing { uid: u32, missing: Vec<Missing> },
    /// The kernel (or a seccomp/AppArmor policy) refused `unshare(CLONE_NEWUSER|CLONE_NEWNS)`.
    #[error("kiln runs unprivileged (uid {uid}) and the kernel refused a new user namespace")]
    Unshare {
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap`/`newgidmap` failed.
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Map {
        tool: &'static str,
        args: String,
        status: String,
        stderr: String,
    },
    /// Reading the user database or the range files, or starting kiln again.
    #[error("rootless mode: {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn list(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| format!("  - {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A subordinate id range: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u64,
    pub count: u64,
}

/// The first range of `/etc/subuid`-format `text` for `name` or numeric `id`.
pub fn find_range(text: &str, name: &str, id: u32) -> Option<IdRange> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        if owner != name && owner != id {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (count > 0).then_some(IdRange { start, count })
    })
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: called once at start, before any other thread reads the user database.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: getpwuid returned a valid entry whose pw_name is a C string.
    let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `/proc/self/status` text says `NoNewPrivs: 1`.
fn no_new_privs(status: &str) -> bool {
    status.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k == "NoNewPrivs" && v.trim() == "1")
    })
}

/// The sysctls (read through `read`, by /proc path) that forbid user namespaces.
fn sysctl_blocks(read: impl Fn(&str) -> Option<String>) -> Vec<Missing> {
    const SWITCHES: [(&str, &str, &str); 3] = [
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
            "0",
        ),
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
            "0",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ];
    SWITCHES
        .iter()
        .filter_map(|&(name, path, forbids)| {
            let value = read(path).filter(|v| v == forbids)?;
            Some(Missing::Sysctl { name, value })
        })
        .collect()
}

/// What entering the namespace needs, or everything that is missing.
struct Plan {
    uid: u32,
    gid: u32,
    uids: IdRange,
    gids: IdRange,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

fn plan() -> Result<Plan, RootlessError> {
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let mut missing = Vec::new();
    let mut range = |file: &'static str, id: u32| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let r = find_range(&text, &name, id);
        if r.is_none() {
            missing.push(Missing::SubordinateRange {
                file,
                user: name.clone(),
            });
        }
        r
    };
    let (uids, gids) = (range("/etc/subuid", uid), range("/etc/subgid", uid));
    let newuidmap = find_on_path("newuidmap");
    let newgidmap = find_on_path("newgidmap");
    for (tool, found) in [("newuidmap", &newuidmap), ("newgidmap", &newgidmap)] {
        if found.is_none() {
            missing.push(Missing::MapTool(tool));
        }
    }
    if no_new_privs(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()) {
        missing.push(Missing::NoNewPrivs);
    }
    missing.extend(sysctl_blocks(read_sysctl));
    match (uids, gids, newuidmap, newgidmap) {
        (Some(uids), Some(gids), Some(newuidmap), Some(newgidmap)) if missing.is_empty() => {
            Ok(Plan {
                uid,
                gid,
                uids,
                gids,
                newuidmap,
                newgidmap,
            })
        }
        _ => Err(RootlessError::Missing { uid, missing }),
    }
}

/// The child's pid, for the parent's signal handler to pass SIGTERM/SIGHUP on.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// When kiln runs unprivileged, runs this same command line again inside a new
/// user and mount namespace and returns its exit code; `None` when already root
/// (really, or in a namespace) and the caller goes on. `state_root` is the state
/// directory chosen as the user, passed on since inside kiln is "root".
pub fn reexec_if_unprivileged(state_root: &Path) -> Result<Option<ExitCode>, RootlessError> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(None);
    }
    let plan = plan()?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| RootlessError::Io {
        what: "cannot find kiln's own executable".into(),
        source,
    })?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = Command::new(exe);
    cmd.args(args).env(kiln_solver::state::ROOT_ENV, state_root);
    let status = spawn_mapped(&mut cmd, &plan)?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(Some(ExitCode::from(code.clamp(0, 255) as u8)))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RootlessError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RootlessError::Io {
            what: "pipe".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds are fresh and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes the child's id maps once it has unshared: the child sends its pid on
/// `ready`, gets one byte `1` on `go` when mapped (0 when mapping failed).
fn map_when_ready(
    ready: OwnedFd,
    go: OwnedFd,
    plan: &Plan,
) -> std::thread::JoinHandle<Result<(), RootlessError>> {
    let maps = [
        ("newuidmap", plan.newuidmap.clone(), plan.uid, plan.uids),
        ("newgidmap", plan.newgidmap.clone(), plan.gid, plan.gids),
    ];
    std::thread::spawn(move || {
        let (mut ready, mut go) = (File::from(ready), File::from(go));
        let mut pid = [0u8; 4];
        if ready.read_exact(&mut pid).is_err() {
            return Ok(()); // the child failed before unsharing; spawn reports why
        }
        let pid = i32::from_ne_bytes(pid).to_string();
        let mut result = Ok(());
        for (tool, path, id, range) in &maps {
            let args = [
                pid.clone(),
                "0".into(),
                id.to_string(),
                "1".into(),
                "1".into(),
                range.start.to_string(),
                range.count.to_string(),
            ];
            let out = Command::new(path).args(&args).output();
            let failed = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some((
                    o.status.to_string(),
                    String::from_utf8_lossy(&o.stderr).trim().to_string(),
                )),
                Err(e) => Some(("not started".into(), e.to_string())),
            };
            if let Some((status, stderr)) = failed {
                result = Err(RootlessError::Map {
                    tool,
                    args: args.join(" "),
                    status,
                    stderr,
                });
                break;
            }
        }
        let _ = go.write_all(&[result.is_ok() as u8]);
        result
    })
}

fn spawn_mapped(cmd: &mut Command, plan: &Plan) -> Result<std::process::ExitStatus, RootlessError> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (ready_fd, go_fd) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let mapper = map_when_ready(ready_r, go_w, plan);
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || enter_in_child(ready_fd, go_fd));
    }
    let spawned = cmd.spawn();
    // The mapper sees end-of-file when the child died before unsharing.
    drop((ready_w, go_r));
    let mapped = mapper.join().unwrap_or(Ok(()));
    let mut child = match (spawned, mapped) {
        (Ok(child), _) => child,
        (Err(_), Err(map)) => return Err(map),
        (Err(e), Ok(()))
            if e.raw_os_error() == Some(libc::EPERM)
                || e.raw_os_error() == Some(libc::ENOSPC)
                || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            return Err(RootlessError::Unshare {
                uid: plan.uid,
                source: e,
            })
        }
        (Err(source), Ok(())) => {
            return Err(RootlessError::Io {
                what: "cannot start kiln in its user namespace".into(),
                source,
            })
        }
    };
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    // The terminal sends SIGINT/SIGQUIT to both processes: the child handles them.
    // SAFETY: setting dispositions; `forward` is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward as *const () as libc::sighandler_t);
    }
    child.wait().map_err(|source| RootlessError::Io {
        what: "waiting for kiln in its user namespace".into(),
        source,
    })
}

/// In the forked child, before exec: unshare, hand the pid over, wait to be
/// mapped, and keep our mounts from propagating to the host.
fn enter_in_child(ready: i32, go: i32) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: raw system calls on fds this process owns; no allocation.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
            return Err(err());
        }
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) < 0 {
            return Err(err());
        }
        let pid = libc::getpid().to_ne_bytes();
        if libc::write(ready, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
            return Err(err());
        }
        let mut ok = 0u8;
        if libc::read(go, (&mut ok as *mut u8).cast(), 1) != 1 || ok != 1 {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
            return Err(err());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
        {
            return Err(err());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_by_name_or_uid_and_skip_others() {
        let text = "alice:100000:65536\n1001:200000:65536\nbad line\nbob:x:1\n";
        assert_eq!(
            find_range(text, "alice", 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(find_range(text, "carol", 1001).unwrap().start, 200000);
        assert_eq!(find_range(text, "bob", 1002), None);
        assert_eq!(find_range("", "alice", 1000), None);
    }

    #[test]
    fn only_forbidding_sysctl_values_are_missing() {
        let host = |zero: &'static str| {
            move |path: &str| match path {
                p if p.ends_with(zero) => Some("0".to_string()),
                p if p.ends_with("apparmor_restrict_unprivileged_userns") => Some("0".into()),
                p if p.ends_with("max_user_namespaces") => Some("15000".into()),
                _ => None, // unprivileged_userns_clone: not on this kernel
            }
        };
        assert_eq!(sysctl_blocks(host("none")), vec![]);
        assert_eq!(
            sysctl_blocks(host("max_user_namespaces")),
            vec![Missing::Sysctl {
                name: "user.max_user_namespaces",
                value: "0".into()
            }]
        );
        assert_eq!(
            sysctl_blocks(host("unprivileged_userns_clone")),
            vec![Missing::Sysctl {
                name: "kernel.unprivileged_userns_clone",
                value: "0".into()
            }]
        );
        let apparmor = |p: &str| {
            p.ends_with("apparmor_restrict_unprivileged_userns")
                .then(|| "1".into())
        };
        assert_eq!(sysctl_blocks(apparmor).len(), 1);
    }

    #[test]
    fn no_new_privs_is_read_from_status() {
        assert!(no_new_privs("Name:\tkiln\nNoNewPrivs:\t1\nSeccomp:\t0\n"));
        assert!(!no_new_privs("Name:\tkiln\nNoNewPrivs:\t0\n"));
        assert!(!no_new_privs(""));
    }

    #[test]
    fn missing_items_are_each_listed() {
        let e = RootlessError::Missing {
            uid: 1000,
            missing: vec![
                Missing::SubordinateRange {
                    file: "/etc/subuid",
                    user: "alice".into(),
                },
                Missing::MapTool("newuidmap"),
            ],
        };
        let text = e.to_string();
        assert!(
            text.contains("  - /etc/subuid has no range for user alice"),
            "{text}"
        );
        assert!(text.contains("  - newuidmap is not installed"), "{text}");
    }
}
