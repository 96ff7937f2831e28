//! A cgroup of its own for each native step, as runc makes for a container
//! without a `cgroupsPath`: `<this process's cgroup>/<step id>` in every
//! hierarchy this process is in (each v1 hierarchy, and the v2 one where it
//! is mounted), so limits and accounting apply to the step alone. The child
//! joins them first thing (writing 0 to `cgroup.procs` moves the writer);
//! they are removed once the step's processes are gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::plan::Step;
use crate::executor::ExecError;
use crate::sysmount::unescape;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// The cgroup shown at the mount point (`/` unless a sub-tree is bound).
    root: String,
    /// v2 (`cgroup2`).
    v2: bool,
    /// Super options (the v1 controllers, `name=systemd`).
    options: Vec<String>,
}

/// The cgroup hierarchies in `/proc/self/mountinfo`.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or_default();
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Hierarchy {
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                root: unescape(left.get(3)?),
                v2: fstype == "cgroup2",
                options: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The directory of `id` under our own cgroup in each hierarchy of
/// `/proc/self/cgroup` (`ID:CONTROLLERS:PATH`) that is mounted.
fn step_dirs(own: &str, mounts: &[Hierarchy], id: &str) -> Vec<(PathBuf, bool)> {
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = mounts.iter().find(|h| {
            if controllers.is_empty() {
                h.v2
            } else {
                !h.v2
                    && controllers
                        .split(',')
                        .all(|c| h.options.iter().any(|o| o == c))
            }
        });
        let Some(h) = found else { continue };
        let Some(rel) = path.strip_prefix(h.root.trim_end_matches('/')) else {
            continue;
        };
        if !rel.is_empty() && !rel.starts_with('/') {
            continue;
        }
        let dir = h.mount_point.join(rel.trim_start_matches('/')).join(id);
        if !dirs.iter().any(|(d, _)| d == &dir) {
            let cpuset = controllers.split(',').any(|c| c == "cpuset");
            dirs.push((dir, cpuset));
        }
    }
    dirs
}

/// Our own cgroup in each mounted hierarchy (see [`step_dirs`]), read once
/// per process: kiln does not move itself between cgroups, and parsing
/// mountinfo for every step showed in profiles.
fn parent_dirs() -> &'static [(PathBuf, bool)] {
    static DIRS: OnceLock<Vec<(PathBuf, bool)>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        step_dirs(&own, &hierarchies(&mountinfo), "")
    })
}

/// A new v1 cpuset cgroup has no CPUs or memory nodes, and joining it fails:
/// it gets its parent's, as runc does.
fn inherit_cpuset(dir: &Path) -> io::Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if mine.trim().is_empty() {
            let theirs = fs::read_to_string(parent.join(file))?;
            fs::write(dir.join(file), theirs.trim())?;
        }
    }
    Ok(())
}

/// The step's cgroups; removed on drop.
#[derive(Debug, Default)]
pub struct StepCgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
}

impl StepCgroup {
    /// Creates `id`'s cgroups. A read-only cgroup filesystem (no cgroups
    /// delegated here), or in a user namespace one the user may not write, is
    /// skipped; any other failure is an error.
    pub fn create(id: &str) -> Result<Self, ExecError> {
        let mut cg = StepCgroup::default();
        for (parent, cpuset) in parent_dirs().iter().cloned() {
            let dir = parent.join(id);
            let what = || format!("creating the step's cgroup {}", dir.display());
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => continue,
                // Rootless (as runc's rootless mode): a hierarchy not delegated to
                // the user is skipped too.
                Err(e)
                    if crate::userns::inside()
                        && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(ExecError::Setup {
                        step: what(),
                        source: e,
                    })
                }
            }
            cg.dirs.push(dir.clone());
            if cpuset {
                inherit_cpuset(&dir).map_err(ExecError::setup(what()))?;
            }
            let procs = OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(ExecError::setup(what()))?;
            cg.procs.push(procs);
        }
        Ok(cg)
    }

    /// The child's first steps: join each cgroup.
    pub fn join_steps(&self) -> Result<Vec<Step>, ExecError> {
        self.procs
            .iter()
            .map(|f| {
                f.try_clone()
                    .map(Step::JoinCgroup)
                    .map_err(ExecError::setup("duplicating a cgroup.procs handle"))
            })
            .collect()
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        // The step's init is reaped, but the rest of its pid namespace may
        // still be exiting for a moment (EBUSY): a few bounded retries.
        for dir in self.dirs.iter().rev() {
            for attempt in 0..200 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 199 => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn one_dir_per_mounted_hierarchy_under_our_own_cgroup() {
        let own =
            "9:name=systemd:/\n4:memory:/jobs/a\n3:cpuset:/\n2:cpu,cpuacct:/\n1:pids:/\n0::/x\n";
        let dirs = step_dirs(own, &hierarchies(MOUNTINFO), "kiln-1");
        let dirs: Vec<(String, bool)> = dirs
            .into_iter()
            .map(|(d, c)| (d.display().to_string(), c))
            .collect();
        assert_eq!(
            dirs,
            vec![
                ("/sys/fs/cgroup/systemd/kiln-1".to_string(), false),
                ("/sys/fs/cgroup/memory/jobs/a/kiln-1".to_string(), false),
                ("/sys/fs/cgroup/cpuset/kiln-1".to_string(), true),
                ("/sys/fs/cgroup/cpu,cpuacct/kiln-1".to_string(), false),
                ("/sys/fs/cgroup/unified/x/kiln-1".to_string(), false),
            ],
            "pids is not mounted"
        );
    }

    #[test]
    fn mountinfo_escapes_and_bound_subtrees() {
        let info = "50 1 0:40 /sub /mnt/cg\\040x rw - cgroup2 cgroup2 rw\n";
        let h = hierarchies(info);
        assert_eq!(h[0].mount_point, PathBuf::from("/mnt/cg x"));
        let dirs = step_dirs("0::/sub/me\n", &h, "s");
        assert_eq!(dirs, vec![(PathBuf::from("/mnt/cg x/me/s"), false)]);
        assert!(step_dirs("0::/elsewhere\n", &h, "s").is_empty());
    }
}
