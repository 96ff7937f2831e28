//! Starting the sandboxed child with `clone` and collecting its result.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::plan::{apply, Step};
use super::sys::LibcSys;
use crate::executor::output::{CapturedOutput, OutputCallback};
use crate::executor::pump::pump;
use crate::executor::running::{RunningSteps, Tracked};
use crate::executor::ExecError;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A close-on-exec pipe (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs the plan in a child created with `flags`, streams its output and waits for it.
/// The child is tracked in `running` while it lives: a cancel kills it (with a new
/// pid namespace, the whole namespace) and this returns [`ExecError::Canceled`].
pub fn run(
    steps: &[Step],
    flags: libc::c_int,
    running: &RunningSteps,
    output: OutputCallback<'_>,
    started: &dyn Fn(),
) -> Result<(Exit, CapturedOutput), ExecError> {
    let setup = ExecError::setup;
    let (out_r, out_w) = pipe().map_err(setup("creating pipes"))?;
    let (err_r, err_w) = pipe().map_err(setup("creating pipes"))?;
    let (status_r, status_w) = pipe().map_err(setup("creating pipes"))?;
    let devnull = File::open("/dev/null").map_err(setup("opening /dev/null"))?;
    super::plan::init_constants();

    let args = ChildArgs {
        steps,
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
    };
    let arg = &args as *const ChildArgs<'_> as *mut libc::c_void;
    // SAFETY: `child_main` keeps to raw syscalls on `args`, which outlives it.
    let pid = unsafe { clone_with(flags, child_main, arg) }.map_err(|source| ExecError::Setup {
        step: "clone".into(),
        source,
    })?;
    drop((out_w, err_w, status_w, devnull));
    // SIGKILL to a pid namespace's init kills everything in the namespace.
    let tracked = running.track(move || unsafe {
        libc::kill(pid, libc::SIGKILL);
    });

    // EOF on the status pipe means execve succeeded (it is close-on-exec).
    let mut status = File::from(status_r);
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match status.read(report.get_mut(got..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = reap(pid, tracked);
                return Err(ExecError::Setup {
                    step: "reading the child's status".into(),
                    source: e,
                });
            }
        }
    }
    if got == report.len() {
        let (a, b) = report.split_at(4);
        let index = u32::from_ne_bytes(a.try_into().unwrap_or_default()) as usize;
        let errno = i32::from_ne_bytes(b.try_into().unwrap_or_default());
        if reap(pid, tracked).is_ok_and(|(_, canceled)| canceled) {
            return Err(ExecError::Canceled);
        }
        return Err(failure(steps, index, errno));
    }
    // execve succeeded: every mount of the plan is in place.
    started();
    let captured = pump(out_r, err_r, output);
    let (exit, canceled) = reap(pid, tracked).map_err(setup("waiting for the step"))?;
    if canceled {
        return Err(ExecError::Canceled);
    }
    let captured = captured.map_err(setup("reading the step's output"))?;
    Ok((exit, captured))
}

/// Starts a child in new namespaces of `flags` that exits at once; its exit
/// status says whether it got them.
pub fn probe_namespaces(flags: libc::c_int) -> io::Result<()> {
    extern "C" fn exit_at_once(_: *mut libc::c_void) -> libc::c_int {
        // SAFETY: ends the child without touching the memory it shares.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: the child only calls _exit.
    let pid = unsafe { clone_with(flags, exit_at_once, std::ptr::null_mut())? };
    match wait(pid)? {
        Exit::Code(0) => Ok(()),
        other => Err(io::Error::other(format!("the probe child ended {other:?}"))),
    }
}

/// Waits for the child to end, stops tracking it, then reaps it: until it is
/// reaped its pid cannot be reused, so a cancel's kill never hits another
/// process. Also says whether a cancel killed it.
fn reap(pid: libc::pid_t, tracked: Tracked<'_>) -> io::Result<(Exit, bool)> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let canceled = tracked.was_canceled();
    drop(tracked);
    Ok((wait(pid)?, canceled))
}

fn failure(steps: &[Step], index: usize, errno: i32) -> ExecError {
    let source = io::Error::from_raw_os_error(errno);
    match steps.get(index) {
        Some(Step::Exec(args)) => {
            let program = args
                .args()
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            let message = if errno == libc::ENOENT && !program.contains('/') {
                "executable file not found in $PATH".to_string()
            } else {
                source.to_string()
            };
            ExecError::Exec { program, message }
        }
        Some(step) => ExecError::Setup {
            step: step.describe(),
            source,
        },
        None => ExecError::Setup {
            step: format!("step {index}"),
            source,
        },
    }
}

fn wait(pid: libc::pid_t) -> io::Result<Exit> {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFSIGNALED(status) {
        Ok(Exit::Signal(libc::WTERMSIG(status)))
    } else {
        Ok(Exit::Code(libc::WEXITSTATUS(status)))
    }
}

/// What the child needs, prepared before the clone.
struct ChildArgs<'a> {
    steps: &'a [Step],
    stdin: i32,
    stdout: i32,
    stderr: i32,
    status: i32,
}

/// The stack the child runs on: mapped for one clone, a guard region below it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// The plan's steps are shallow; a megabyte leaves a wide margin.
    const SIZE: usize = 1 << 20;
    const GUARD: usize = 64 << 10;

    fn map() -> io::Result<ChildStack> {
        let len = Self::SIZE + Self::GUARD;
        // SAFETY: a fresh anonymous mapping, owned by the returned value.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest pages of the mapping just made.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`; the child has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts `main` in a child sharing this process's memory until it execs, as
/// posix_spawn does (`CLONE_VM | CLONE_VFORK`): this thread waits meanwhile,
/// and no page table is copied. A fork's copy grew with kiln's memory over a
/// long build (~1 ms of each step at 500 steps). Every signal is blocked
/// around the clone, so no handler of this process runs on the child's stack;
/// the plan resets them before it unblocks any (see `reset_signals`).
///
/// # Safety
/// `main` may only make raw syscalls on memory that `arg` points to and that
/// outlives the call, and must exec or exit.
unsafe fn clone_with(
    flags: libc::c_int,
    main: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    let stack = ChildStack::map()?;
    // SAFETY: sigset_t is plain data; the masks are this thread's own.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs `main` on its own stack (see the contract above):
    // CLONE_VFORK returns here once it has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            main,
            stack.top(),
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(error);
    }
    Ok(pid)
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `run` keeps alive.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    unsafe { child(a.steps, a.stdin, a.stdout, a.stderr, a.status) }
}

/// The child side: wire stdio, apply the plan (ending in execve) or report the
/// failing step and errno on the status pipe.
unsafe fn child(steps: &[Step], stdin: i32, stdout: i32, stderr: i32, status: i32) -> ! {
    unsafe {
        // Its own process group: a terminal's Ctrl-C reaches kiln only, which
        // cancels the build and kills the step itself (reported as canceled,
        // not as a step failing of SIGINT).
        libc::setpgid(0, 0);
        if libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 || libc::dup2(stderr, 2) < 0 {
            libc::_exit(126);
        }
        let (index, errno) = match apply(steps, &mut LibcSys) {
            Err(e) => e,
            Ok(()) => (steps.len(), libc::ENOEXEC),
        };
        let mut report = [0u8; 8];
        for (d, s) in report.iter_mut().zip(
            (index as u32)
                .to_ne_bytes()
                .iter()
                .chain(errno.to_ne_bytes().iter()),
        ) {
            *d = *s;
        }
        libc::write(status, report.as_ptr() as *const libc::c_void, report.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_says_whether_the_namespaces_can_be_made() {
        probe_namespaces(super::super::plan::STEP_NAMESPACES).expect("the suite runs as root");
        // The kernel refuses a new mount namespace that shares its filesystem info.
        let e = probe_namespaces(libc::CLONE_NEWNS | libc::CLONE_FS).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
}
