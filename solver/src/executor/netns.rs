//! The default network of a step: its own network namespace (own loopback)
//! with outbound access through `slirp4netns`, which NATs the step's traffic
//! from the host's network stack in user space. `--disable-host-loopback`
//! keeps the host's loopback services (10.0.2.2 would reach them) out of reach.
//!
//! The namespace is made before the step starts and kept alive by a bind mount
//! of its nsfs file, which both executors join (the runtime spec's namespace
//! path, `setns` in the native child); slirp4netns is ready before the step runs.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    }
}
