//! The default network of a step: its own network namespace (own loopback)
//! with outbound access through `slirp4netns`, which NATs the step's traffic
//! from the host's network stack in user space. `--disable-host-loopback`
//! keeps the host's loopback services (10.0.2.2 would reach them) out of reach.
//!
//! The namespace is made before the step starts and kept alive by a bind mount
//! of its nsfs file, which both executors join (the runtime spec's namespace
//! path, `setns` in the native child); slirp4netns is ready before the step runs.
//!
//! Making one costs a namespace, a slirp4netns start and its teardown (several
//! ms of CPU, more wall time): an executor keeps finished steps' networks in a
//! [`NetworkPool`] for its next steps, as BuildKit's CNI provider keeps a pool
//! of namespaces. A network serves one step at a time, and only sandboxed
//! steps give theirs back: they lack CAP_NET_ADMIN and see /proc/sys
//! read-only, so they cannot change its addresses, routes, filters or sysctls,
//! and their sockets close with their pid namespace. A step with every
//! capability (`--security=insecure`) may have changed it: its network is torn
//! down after it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::native::spawn::pipe;
use super::ExecError;

/// The program providing outbound access.
pub const SLIRP4NETNS: &str = "slirp4netns";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Interface name inside the namespace.
const TAP: &str = "eth0";

/// A network namespace with slirp4netns attached; torn down on drop.
#[derive(Debug)]
pub struct SlirpNetwork {
    path: PathBuf,
    log: PathBuf,
    mounted: bool,
    slirp: Option<Child>,
    /// Held open: slirp4netns exits when this closes (also when kiln dies).
    _exit_w: Option<OwnedFd>,
    /// A directory of its own (a pooled network's), removed last on drop.
    own_dir: Option<PathBuf>,
}

/// Makes a new network namespace with `lo` up and bind-mounts it on `path`.
/// A helper thread unshares, so the calling thread's namespace is untouched.
fn new_netns(path: &Path) -> io::Result<()> {
    File::create(path)?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    std::thread::spawn(move || -> io::Result<()> {
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        use super::native::plan::Sys;
        super::native::sys::LibcSys
            .loopback_up()
            .map_err(io::Error::from_raw_os_error)?;
        let r = unsafe {
            libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

impl SlirpNetwork {
    /// Creates the namespace at `dir/netns` and starts slirp4netns on it;
    /// returns once the namespace has `eth0` (10.0.2.100/24), a default route
    /// via 10.0.2.2 and DNS at 10.0.2.3.
    pub fn start(dir: &Path) -> Result<Self, ExecError> {
        let mut net = SlirpNetwork {
            path: dir.join("netns"),
            log: dir.join("slirp4netns.log"),
            mounted: false,
            slirp: None,
            _exit_w: None,
            own_dir: None,
        };
        new_netns(&net.path).map_err(ExecError::setup("creating the network namespace"))?;
        net.mounted = true;
        let (ready_r, ready_w) = pipe().map_err(ExecError::setup("creating pipes"))?;
        let (exit_r, exit_w) = pipe().map_err(ExecError::setup("creating pipes"))?;
        let log_path = dir.join("slirp4netns.log");
        let log =
            File::create(&log_path).map_err(ExecError::setup("creating the slirp4netns log"))?;
        let mut cmd = Command::new(SLIRP4NETNS);
        cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .args(["--ready-fd=3", "--exit-fd=4", "--netns-type=path"])
            .arg(&net.path)
            .arg(TAP)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(ExecError::setup("opening the log"))?,
            )
            .stderr(log);
        let (rw, er) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(rw, 3) < 0 || libc::dup2(er, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| ExecError::Setup {
            step: format!("starting {SLIRP4NETNS} for the default network of RUN steps"),
            source: e,
        })?;
        net.slirp = Some(child);
        net._exit_w = Some(exit_w);
        drop((ready_w, exit_r));
        net.wait_ready(ready_r, &log_path)?;
        Ok(net)
    }

    /// Waits (bounded) for slirp4netns to report the namespace configured.
    fn wait_ready(&mut self, ready: OwnedFd, log: &Path) -> Result<(), ExecError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = File::from(ready);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: ready.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let mut byte = [0u8; 1];
            let got = if n > 0 {
                ready.read(&mut byte).unwrap_or(0)
            } else {
                0
            };
            if got == 1 && byte[0] == b'1' {
                return Ok(());
            }
            let why = if n == 0 { "timed out" } else { "exited" };
            let log = fs::read_to_string(log).unwrap_or_default();
            let last = log.lines().rev().take(5).collect::<Vec<_>>();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(ExecError::Setup {
                step: format!("starting {SLIRP4NETNS}"),
                source: io::Error::other(format!(
                    "it {why} before configuring the network: {}",
                    last.join("; ")
                )),
            });
        }
    }

    /// The bind-mounted namespace file to join.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether slirp4netns still serves the namespace.
    fn alive(&mut self) -> bool {
        self.slirp
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// At most this many idle networks are kept (more only while steps run in
/// parallel; the surplus is torn down when they end).
const MAX_IDLE: usize = 4;

/// The default networks of an executor's steps, kept between steps (see the
/// module doc); every network is torn down when the pool is dropped.
#[derive(Debug)]
pub struct NetworkPool {
    /// Where each network gets a directory (`kiln-<pid>-…`, so a dead kiln's
    /// are swept with its run directories).
    runs_dir: PathBuf,
    idle: Mutex<Vec<SlirpNetwork>>,
    /// A network being started ahead of the first step ([`Self::prestart`]).
    warming: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`Self::close`]: no network is kept from then on.
    closed: AtomicBool,
}

impl NetworkPool {
    /// An empty pool making its networks under `runs_dir`.
    pub fn new(runs_dir: PathBuf) -> Arc<Self> {
        Arc::new(NetworkPool {
            runs_dir,
            idle: Mutex::default(),
            warming: Mutex::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// A ready network for one step: an idle one, else a new one.
    pub fn take(self: &Arc<Self>) -> Result<NetworkLease, ExecError> {
        let net = match self.take_idle().or_else(|| self.take_prestarted()) {
            Some(net) => net,
            None => start_in(&self.runs_dir)?,
        };
        Ok(NetworkLease {
            net: Some(net),
            pool: Arc::clone(self),
            reusable: true,
        })
    }

    /// An idle network whose slirp4netns still runs; dead ones are dropped.
    fn take_idle(&self) -> Option<SlirpNetwork> {
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let Some(mut net) = idle.pop() else {
                    break None;
                };
                if net.alive() {
                    break Some(net);
                }
                dead.push(net);
            }
        };
        drop(dead);
        found
    }

    /// The network [`Self::prestart`] is making, once it is ready (sooner
    /// than starting another one, and no work twice).
    fn take_prestarted(&self) -> Option<SlirpNetwork> {
        let warming = self
            .warming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Bounded: slirp4netns gets READY_TIMEOUT.
        warming?.join().ok()?;
        self.take_idle()
    }

    /// Keeps `net` for a later step, unless enough are idle already.
    fn give_back(&self, mut net: SlirpNetwork) {
        if !net.alive() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(net);
        }
        // Else `net`, a parameter, is torn down after the guard is released.
    }

    /// Starts one network in the background for the first step, unless one
    /// is idle or being started already. Not blocking.
    pub fn prestart(self: &Arc<Self>) {
        let mut warming = self.warming.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(0);
        if warming.is_some() || idle > 0 || self.closed.load(Ordering::SeqCst) {
            return;
        }
        // A weak handle: the pool is not kept alive by the thread, whose
        // network is torn down if the pool went meanwhile.
        let (pool, runs_dir) = (Arc::downgrade(self), self.runs_dir.clone());
        *warming = std::thread::Builder::new()
            .name("kiln-netns-warm".into())
            .spawn(move || prestarted(pool, &runs_dir))
            .ok();
    }
}

impl NetworkPool {
    /// Tears the idle networks down and keeps none from now on (the build is
    /// being canceled: no step follows).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        drop(idle);
    }
}

fn prestarted(pool: Weak<NetworkPool>, runs_dir: &Path) {
    match start_in(runs_dir) {
        Ok(net) => {
            if let Some(pool) = pool.upgrade() {
                pool.give_back(net);
            }
        }
        // The first step starts its own and reports why that fails.
        Err(e) => tracing::debug!(error = %e, "starting a network ahead of the first step"),
    }
}

/// Starts a network in a directory of its own under `runs_dir`.
fn start_in(runs_dir: &Path) -> Result<SlirpNetwork, ExecError> {
    let dir = runs_dir.join(format!("{}-net", super::world::unique_id()));
    fs::create_dir_all(&dir).map_err(ExecError::setup(format!("creating {}", dir.display())))?;
    match SlirpNetwork::start(&dir) {
        Ok(mut net) => {
            net.own_dir = Some(dir);
            Ok(net)
        }
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

impl Drop for NetworkPool {
    fn drop(&mut self) {
        let warming = self
            .warming
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = warming {
            let _ = t.join();
        }
    }
}

/// One step's use of a pooled network: given back on drop, unless discarded.
#[derive(Debug)]
pub struct NetworkLease {
    net: Option<SlirpNetwork>,
    pool: Arc<NetworkPool>,
    reusable: bool,
}

impl NetworkLease {
    /// The bind-mounted namespace file to join.
    pub fn path(&self) -> &Path {
        self.net.as_ref().map_or(Path::new(""), |n| n.path())
    }

    /// Tears the network down after the step instead of keeping it (the step
    /// could change it).
    pub fn discard(&mut self) {
        self.reusable = false;
    }
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        if let Some(net) = self.net.take() {
            if self.reusable {
                self.pool.give_back(net);
            }
        }
    }
}

impl Drop for SlirpNetwork {
    fn drop(&mut self) {
        if let Some(mut child) = self.slirp.take() {
            let _ = child.kill();
            // Its exit tears down the tap device, which waits for the network
            // stack (~10-20 ms): reaped in the background, off the step's path.
            std::thread::spawn(move || child.wait());
        }
        if self.mounted {
            if let Ok(p) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
                unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.log);
        if let Some(dir) = &self.own_dir {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted_under(dir: &Path) -> usize {
        crate::sysmount::mounts_under(dir).len()
    }

    /// Needs root and slirp4netns (testdata/env/setup.sh installs it).
    #[test]
    fn pool_hands_back_live_networks_and_tears_all_down_when_dropped() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the executor tests run as root"
        );
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("runs");
        let pool = NetworkPool::new(runs.clone());
        let first = pool.take().unwrap();
        let path = first.path().to_path_buf();
        assert_eq!(mounted_under(&runs), 1);
        drop(first);
        let again = pool.take().unwrap();
        assert_eq!(again.path(), path, "an idle network is reused");
        // Two at once: each step has its own.
        let other = pool.take().unwrap();
        assert_ne!(other.path(), path);
        drop((again, other));
        assert_eq!(pool.idle.lock().unwrap().len(), 2);

        // A network whose slirp4netns died is not handed out.
        for net in pool.idle.lock().unwrap().iter_mut() {
            net.slirp.as_mut().unwrap().kill().unwrap();
            net.slirp.as_mut().unwrap().wait().unwrap();
        }
        let mut fresh = pool.take().unwrap();
        assert!(fresh.path() != path && fresh.path().exists());
        assert_eq!(pool.idle.lock().unwrap().len(), 0, "dead ones are dropped");
        // A discarded one is torn down.
        fresh.discard();
        drop(fresh);
        assert_eq!(mounted_under(&runs), 0);

        pool.take().unwrap();
        pool.close();
        assert_eq!(mounted_under(&runs), 0, "a closed pool keeps nothing");
        drop(pool.take().unwrap());
        assert_eq!(mounted_under(&runs), 0);

        // The first step waits for the network started ahead rather than
        // starting a second one.
        let pool = NetworkPool::new(runs.clone());
        pool.prestart();
        let lease = pool.take().unwrap();
        assert_eq!(mounted_under(&runs), 1, "one network made");
        drop(lease);
        drop(pool);
        assert_eq!(mounted_under(&runs), 0, "nothing stays mounted");
        assert_eq!(fs::read_dir(&runs).unwrap().count(), 0, "nor left behind");
    }
}
