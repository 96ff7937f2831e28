//! The real [`Sys`]: raw libc calls, no allocation (it runs between clone and exec).

use std::ffi::CString;

use super::plan::{ExecArgs, PathKind, Sys};
use crate::executor::seccomp::bpf::BpfProgram;

/// Calls the kernel.
pub struct LibcSys;

fn errno() -> i32 {
    unsafe { *libc::__errno_location() }
}

fn check(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn sys_result(r: libc::c_long) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn ptr(c: Option<&CString>) -> *const libc::c_char {
    c.map_or(std::ptr::null(), |c| c.as_ptr())
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// `struct ifreq` as far as the flags ioctls need it.
#[repr(C)]
struct IfreqFlags {
    name: [libc::c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Sys for LibcSys {
    fn mount(
        &mut self,
        source: Option<&CString>,
        target: &CString,
        fstype: Option<&CString>,
        flags: libc::c_ulong,
        data: Option<&CString>,
    ) -> Result<(), i32> {
        check(unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data) as *const libc::c_void,
            )
        })
    }

    fn path_kind(&mut self, path: &CString) -> Result<PathKind, i32> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(path.as_ptr(), &mut st) } < 0 {
            let e = errno();
            return if e == libc::ENOENT || e == libc::ENOTDIR {
                Ok(PathKind::Missing)
            } else {
                Err(e)
            };
        }
        Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            PathKind::Dir
        } else {
            PathKind::Other
        })
    }

    fn mknod(&mut self, path: &CString, mode: u32, major: u32, minor: u32) -> Result<(), i32> {
        check(unsafe {
            libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | mode,
                libc::makedev(major, minor),
            )
        })
    }

    fn mkdir(&mut self, path: &CString, mode: u32) -> Result<(), i32> {
        let r = unsafe { libc::mkdir(path.as_ptr(), mode) };
        if r < 0 && errno() != libc::EEXIST {
            return Err(errno());
        }
        check(unsafe { libc::chmod(path.as_ptr(), mode) })
    }

    fn symlink(&mut self, target: &CString, link: &CString) -> Result<(), i32> {
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
    }

    fn touch(&mut self, path: &CString) -> Result<(), i32> {
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn sethostname(&mut self, name: &CString) -> Result<(), i32> {
        check(unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) })
    }

    fn loopback_up(&mut self) -> Result<(), i32> {
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(errno());
        }
        let mut req = IfreqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(b"lo") {
            *d = *s as libc::c_char;
        }
        let mut r = unsafe { libc::ioctl(sock, SIOCGIFFLAGS as _, &mut req) };
        if r >= 0 {
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = unsafe { libc::ioctl(sock, SIOCSIFFLAGS as _, &req) };
        }
        let e = errno();
        unsafe { libc::close(sock) };
        if r < 0 {
            Err(e)
        } else {
            Ok(())
        }
    }

    fn join_netns(&mut self, fd: i32) -> Result<(), i32> {
        check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
    }

    fn join_cgroup(&mut self, fd: i32) -> Result<(), i32> {
        let r = unsafe { libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn pivot_root(&mut self, root: &CString) -> Result<(), i32> {
        let dot = c".".as_ptr();
        check(unsafe { libc::chdir(root.as_ptr()) })?;
        let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot, dot) };
        if r < 0 {
            return Err(errno());
        }
        check(unsafe { libc::umount2(dot, libc::MNT_DETACH) })?;
        check(unsafe { libc::chdir(c"/".as_ptr()) })
    }

    fn chdir(&mut self, path: &CString) -> Result<(), i32> {
        check(unsafe { libc::chdir(path.as_ptr()) })
    }

    fn drop_bounding(&mut self, cap: u32) -> Result<(), i32> {
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if r < 0 && errno() != libc::EINVAL {
            return Err(errno());
        }
        Ok(())
    }

    fn setgroups(&mut self, gids: &[libc::gid_t]) -> Result<(), i32> {
        // Raw syscalls: glibc's wrappers broadcast credential changes to all
        // threads it knows of, which after a raw clone no longer exist (deadlock).
        sys_result(unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) })
    }

    fn setgid(&mut self, gid: u32) -> Result<(), i32> {
        sys_result(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
    }

    fn setuid(&mut self, uid: u32) -> Result<(), i32> {
        sys_result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
    }

    fn capset(&mut self, mask: u64) -> Result<(), i32> {
        let hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let lo = mask as u32;
        let hi = (mask >> 32) as u32;
        let data = [
            CapData {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            CapData {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn no_new_privs(&mut self) -> Result<(), i32> {
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn seccomp(&mut self, program: &BpfProgram) -> Result<(), i32> {
        let insns = program.instructions();
        let prog = libc::sock_fprog {
            len: insns.len().min(u16::MAX as usize) as u16,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        sys_result(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        })
    }

    fn umask(&mut self, mask: u32) {
        unsafe { libc::umask(mask) };
    }

    fn parent_death_signal(&mut self) -> Result<(), i32> {
        check(unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    }

    fn reset_signals(&mut self) {
        // Handlers first, then the mask: the child starts with every signal
        // blocked and shares kiln's memory until it execs, where a handler of
        // kiln's must never run.
        unsafe {
            for sig in 1..=libc::SIGRTMAX() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    // glibc's own (SIGCANCEL, SIGSETXID) refuse: EINVAL, no harm.
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
    }

    fn execve(&mut self, path: &CString, args: &ExecArgs) -> i32 {
        unsafe { libc::execve(path.as_ptr(), args.argv(), args.envp()) };
        errno()
    }
}
