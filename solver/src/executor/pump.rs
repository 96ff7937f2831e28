//! Reading a process' stdout and stderr pipes together until both close.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::output::{CapturedOutput, OutputCallback, Stream};

/// Reads both pipes with `poll` until EOF on each, passing every chunk to
/// `callback` and keeping all of it.
pub fn pump(
    stdout: OwnedFd,
    stderr: OwnedFd,
    callback: OutputCallback<'_>,
) -> io::Result<CapturedOutput> {
    let mut captured = CapturedOutput::default();
    let mut open: Vec<(OwnedFd, Stream)> = vec![(stdout, Stream::Stdout), (stderr, Stream::Stderr)];
    let mut buf = vec![0u8; 64 * 1024];
    while !open.is_empty() {
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|(fd, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut closed = Vec::new();
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let n = unsafe { libc::read(pfd.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let Some((_, stream)) = open.get(i) else {
                continue;
            };
            if n == 0 {
                closed.push(i);
            } else if let Some(chunk) = buf.get(..n as usize) {
                callback(*stream, chunk);
                captured.push(*stream, chunk);
            }
        }
        for i in closed.into_iter().rev() {
            open.remove(i);
        }
    }
    Ok(captured)
}
