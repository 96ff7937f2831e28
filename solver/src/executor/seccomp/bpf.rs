//! Compiling a runtime-spec seccomp profile to a BPF program with libseccomp,
//! as runc and crun do, for the native executor to install right before exec.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::str::FromStr;
use std::sync::OnceLock;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

/// A compiled filter: `struct sock_filter` instructions as the kernel reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram(Vec<u64>);

impl BpfProgram {
    /// The instructions (8 bytes each).
    pub fn instructions(&self) -> &[u64] {
        &self.0
    }

    /// The program as `seccomp(SECCOMP_SET_MODE_FILTER)` reads it, in base64
    /// (crun's `run.oci.seccomp_bpf_data` annotation).
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        let bytes: Vec<u8> = self.0.iter().flat_map(|i| i.to_ne_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Why a profile could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("compiling the seccomp profile: {what}: {source}")]
pub struct CompileError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> CompileError {
    let what = what.into();
    move |e| CompileError {
        what,
        source: Box::new(e),
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.unwrap_or(libc::EPERM as u32) as i32;
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        // Notify needs a listener the native executor does not have.
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Errno(libc::ENOSYS),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(op: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // The spec's value is the mask, valueTwo the datum (runc's reading).
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

/// Compiles `profile`. Syscall names libseccomp does not know are skipped, as
/// runc does (the profile lists calls of newer kernels and other arches).
pub fn compile(profile: &LinuxSeccomp) -> Result<BpfProgram, CompileError> {
    let default = action(profile.default_action(), profile.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(err("creating the filter"))?;
    // no_new_privs is the executor's own step, before the filter goes in.
    ctx.set_ctl_nnp(false)
        .map_err(err("clearing the nnp control"))?;
    for a in profile.architectures().iter().flatten() {
        let name = serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(err(format!("architecture {name}")))?;
        ctx.add_arch(arch)
            .map_err(err(format!("adding architecture {name}")))?;
    }
    for call in profile.syscalls().iter().flatten() {
        let act = action(call.action(), call.errno_ret());
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = call
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let op = compare(a.op(), a.value());
                let datum = match a.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                    _ => a.value(),
                };
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        for name in call.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            ctx.add_rule_conditional(act, nr, &conds)
                .map_err(err(format!("rule for {name}")))?;
        }
    }
    export(&ctx)
}

/// libseccomp 2.5 exports only to a file descriptor: a memfd, read back.
fn export(ctx: &ScmpFilterContext) -> Result<BpfProgram, CompileError> {
    let fd = unsafe { libc::memfd_create(c"kiln-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err("creating a memfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor this function owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    ctx.export_bpf(&file).map_err(err("exporting the filter"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(err("reading the filter back"))?;
    let program = bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok(BpfProgram(program))
}

/// The compiled [`super::sandbox_profile`], built once per process.
pub fn sandbox_program() -> Result<&'static BpfProgram, CompileError> {
    static PROGRAM: OnceLock<BpfProgram> = OnceLock::new();
    if let Some(p) = PROGRAM.get() {
        return Ok(p);
    }
    let p = compile(super::sandbox_profile())?;
    Ok(PROGRAM.get_or_init(|| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_profile_compiles_for_every_arch_of_the_host() {
        let p = sandbox_program().unwrap();
        // Hundreds of rules for three architectures on amd64.
        assert!(p.instructions().len() > 300, "{}", p.instructions().len());
        // Deterministic: the same profile gives the same program.
        assert_eq!(&compile(super::super::sandbox_profile()).unwrap(), p);
    }
}
