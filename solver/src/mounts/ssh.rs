//! Forwarding an SSH agent into a step: a proxy socket with the requested
//! owner and mode relays each connection to the agent's socket on the host.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running agent forward; stops accepting and removes its socket on drop.
#[derive(Debug)]
pub struct AgentForward {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentForward {
    /// Listens at `socket` (mode/uid/gid applied) and relays to `agent`.
    pub fn start(agent: &Path, socket: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<Self> {
        // Fail early, with the agent's path in the message, when it is not there.
        UnixStream::connect(agent).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("ssh agent socket {}: {e}", agent.display()),
            )
        })?;
        let _ = fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        std::os::unix::fs::chown(socket, Some(uid), Some(gid))?;
        fs::set_permissions(socket, fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let agent = agent.to_path_buf();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let agent = agent.clone();
                std::thread::spawn(move || relay(client, &agent));
            }
        });
        Ok(AgentForward {
            socket: socket.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The proxy socket on the host (bind-mounted into the container).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn relay(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c1, mut u1) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut u1, &mut c1);
    let _ = c1.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

impl Drop for AgentForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn relays_both_ways_with_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let server = std::thread::spawn(move || {
            // The liveness check of `start`, then the relayed client.
            for conn in agent.incoming().take(2) {
                let mut c = conn.unwrap();
                let mut buf = [0u8; 4];
                if c.read_exact(&mut buf).is_ok() {
                    c.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
                }
            }
        });
        let proxy = dir.path().join("proxy.sock");
        let uid = unsafe { libc::geteuid() };
        let fwd = AgentForward::start(&agent_path, &proxy, 0o600, uid, 0).unwrap();
        let meta = fs::metadata(fwd.socket()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(fwd.socket()).unwrap();
        c.write_all(b"ping").unwrap();
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"PING");
        drop(c);
        server.join().unwrap();
        drop(fwd);
        assert!(!proxy.exists(), "socket removed when the forward stops");
    }

    #[test]
    fn missing_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = AgentForward::start(
            &dir.path().join("nope.sock"),
            &dir.path().join("p.sock"),
            0o600,
            0,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.sock"), "{err}");
    }
}
