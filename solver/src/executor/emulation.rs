//! RUN for a foreign architecture through QEMU user emulation: which
//! platforms the host runs natively, whether binfmt_misc has a handler for
//! the others, and registering the `qemu-user-static` handlers.
//!
//! Handlers are registered with the fix-binary (`F`) flag: the kernel opens
//! the interpreter at registration time, so foreign binaries run inside a
//! sandbox whose root filesystem has no QEMU in it, and the executor needs
//! no change beyond [`check_can_run`].

use kiln_oci::Platform;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where binfmt_misc is mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's `qemu-user-static` puts its systemd-binfmt entries.
pub const BINFMT_D: &str = "/usr/lib/binfmt.d";

/// Why a foreign platform cannot run, or a handler cannot be registered.
#[derive(Debug, Error)]
pub enum EmulationError {
    /// No handler for the platform's architecture.
    #[error(
        "RUN for {platform} needs QEMU user emulation, but no binfmt_misc handler for {qemu} is registered{detail}"
    )]
    NotRegistered {
        /// The step's platform.
        platform: String,
        /// QEMU's name of the architecture.
        qemu: String,
        /// Extra words (binfmt_misc not mounted, ...).
        detail: String,
    },
    /// A handler exists but lacks the F flag, so it cannot work in a sandbox.
    #[error(
        "the binfmt_misc handler {name} for {platform} is registered without the fix-binary (F) flag, \
         so its interpreter is not found inside the build sandbox"
    )]
    NoFixBinary {
        /// The step's platform.
        platform: String,
        /// The handler's name.
        name: String,
    },
    /// A handler exists but is disabled.
    #[error("the binfmt_misc handler {name} for {platform} is disabled")]
    Disabled {
        /// The step's platform.
        platform: String,
        /// The handler's name.
        name: String,
    },
    /// An architecture QEMU does not emulate.
    #[error("RUN for {0}: kiln does not know how to emulate this architecture")]
    Unknown(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// binfmt_misc could not be mounted.
    #[error("mounting binfmt_misc at {BINFMT_MISC}")]
    Mount(#[source] nix::Error),
    /// A binfmt.d line that is not `:name:type:offset:magic:mask:interpreter:flags`.
    #[error("{path}: not a binfmt_misc registration line")]
    BadEntry {
        /// The file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EmulationError + '_ {
    move |source| EmulationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The host's architecture in OCI words (`amd64`, `arm64`, ...).
pub fn host_architecture() -> &'static str {
    oci_architecture(std::env::consts::ARCH)
}

/// Rust/QEMU architecture names to OCI ones.
fn oci_architecture(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" | "ppc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "mips64el" => "mips64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// QEMU's name (`qemu-<name>`) for an OCI architecture, when it has one.
pub fn qemu_name(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Whether the host runs this platform's binaries without emulation.
pub fn is_native(platform: &Platform) -> bool {
    let host = host_architecture();
    platform.architecture == host
        // 64-bit x86 runs 32-bit x86 binaries.
        || (host == "amd64" && platform.architecture == "386")
}

/// One handler as `/proc/sys/fs/binfmt_misc/<name>` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// `qemu-aarch64`.
    pub name: String,
    /// `enabled` line present.
    pub enabled: bool,
    /// The interpreter path.
    pub interpreter: String,
    /// The flags (`OCF`, `F`, ...).
    pub flags: String,
}

impl Handler {
    /// Parses the kernel's status text of one handler.
    pub fn parse(name: &str, text: &str) -> Handler {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
        };
        for line in text.lines() {
            if line.trim() == "enabled" {
                h.enabled = true;
            } else if let Some(i) = line.strip_prefix("interpreter ") {
                h.interpreter = i.trim().to_string();
            } else if let Some(f) = line.strip_prefix("flags:") {
                h.flags = f.trim().to_string();
            }
        }
        h
    }

    /// Whether the kernel keeps the interpreter open (the `F` flag).
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// The registered handler `qemu-<qemu>` under `dir`, if any; `Ok(None)` also
/// when binfmt_misc is not mounted there.
pub fn registered(dir: &Path, qemu: &str) -> Result<Option<Handler>, EmulationError> {
    let name = format!("qemu-{qemu}");
    let path = dir.join(&name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(Handler::parse(&name, &text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Whether binfmt_misc is mounted at `dir` (it has a `register` file).
pub fn mounted(dir: &Path) -> bool {
    dir.join("register").exists()
}

/// Checks that a RUN for `platform` can start on this host: native, or a
/// QEMU handler with the F flag is registered. The error says which is missing.
/// `KILN_BINFMT_MISC` names another binfmt_misc mount to look in.
pub fn check_can_run(platform: &Platform) -> Result<(), EmulationError> {
    let dir = std::env::var_os("KILN_BINFMT_MISC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINFMT_MISC));
    check_can_run_in(&dir, platform)
}

/// [`check_can_run`] against another binfmt_misc directory (tests).
pub fn check_can_run_in(dir: &Path, platform: &Platform) -> Result<(), EmulationError> {
    if platform.os != "linux" || is_native(platform) {
        return Ok(());
    }
    let qemu = qemu_name(&platform.architecture)
        .ok_or_else(|| EmulationError::Unknown(platform.to_string()))?;
    let detail = if mounted(dir) {
        String::new()
    } else {
        format!(" (binfmt_misc is not mounted at {})", dir.display())
    };
    match registered(dir, qemu)? {
        None => Err(EmulationError::NotRegistered {
            platform: platform.to_string(),
            qemu: qemu.to_string(),
            detail,
        }),
        Some(h) if !h.enabled => Err(EmulationError::Disabled {
            platform: platform.to_string(),
            name: h.name,
        }),
        Some(h) if !h.fix_binary() => Err(EmulationError::NoFixBinary {
            platform: platform.to_string(),
            name: h.name,
        }),
        Some(_) => Ok(()),
    }
}

/// A registration line of a binfmt.d file: `:name:type:offset:magic:mask:interpreter:flags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `qemu-aarch64`.
    pub name: String,
    /// The fields between name and flags, as written (escapes kept: the kernel decodes them).
    pub middle: String,
    /// The interpreter path.
    pub interpreter: String,
    /// The flags as written.
    pub flags: String,
}

impl Registration {
    /// Parses one line; `None` when it is not a registration.
    pub fn parse(line: &str) -> Option<Registration> {
        let line = line.trim();
        let rest = line.strip_prefix(':')?;
        let (name, rest) = rest.split_once(':')?;
        // The magic and mask are hex escapes (`\x3a` for a colon), so the
        // last two fields are the interpreter and the flags.
        let (before_flags, flags) = rest.rsplit_once(':')?;
        let (middle, interpreter) = before_flags.rsplit_once(':')?;
        if name.is_empty() || interpreter.is_empty() || middle.split(':').count() != 4 {
            return None;
        }
        Some(Registration {
            name: name.to_string(),
            middle: middle.to_string(),
            interpreter: interpreter.to_string(),
            flags: flags.to_string(),
        })
    }

    /// The line to write to `register`, with the F flag added.
    pub fn line_with_fix_binary(&self) -> String {
        let mut flags = self.flags.clone();
        if !flags.contains('F') {
            flags.push('F');
        }
        format!(
            ":{}:{}:{}:{}",
            self.name, self.middle, self.interpreter, flags
        )
    }
}

/// The `qemu-*` registrations of a binfmt.d directory, by file name order.
pub fn available(binfmt_d: &Path) -> Result<Vec<Registration>, EmulationError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(binfmt_d)
        .map_err(io(binfmt_d))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("qemu-") && n.ends_with(".conf"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(io(&f))?;
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(':'))
            .ok_or_else(|| EmulationError::BadEntry { path: f.clone() })?;
        out.push(Registration::parse(line).ok_or(EmulationError::BadEntry { path: f })?);
    }
    Ok(out)
}

/// What [`register`] did with one handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Newly registered.
    Added,
    /// Was registered without F; replaced.
    Replaced,
    /// Already registered with F.
    Present,
    /// Skipped: the host's own architecture, or the interpreter is not installed.
    Skipped(String),
}

/// Mounts binfmt_misc at [`BINFMT_MISC`] when it is not mounted yet.
pub fn ensure_mounted() -> Result<(), EmulationError> {
    let dir = Path::new(BINFMT_MISC);
    if mounted(dir) {
        return Ok(());
    }
    nix::mount::mount(
        Some("binfmt_misc"),
        dir,
        Some("binfmt_misc"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(EmulationError::Mount)
}

/// Registers `reg` with the F flag in the binfmt_misc mounted at `dir`,
/// replacing a registration of the same name that lacks F.
pub fn register(dir: &Path, reg: &Registration) -> Result<Registered, EmulationError> {
    if let Some(q) = reg.name.strip_prefix("qemu-") {
        if oci_architecture(q) == host_architecture() {
            return Ok(Registered::Skipped("the host's own architecture".into()));
        }
    }
    if !Path::new(&reg.interpreter).exists() {
        return Ok(Registered::Skipped(format!(
            "{} is not installed",
            reg.interpreter
        )));
    }
    let existing = dir.join(&reg.name);
    let mut replaced = false;
    if let Ok(text) = std::fs::read_to_string(&existing) {
        let h = Handler::parse(&reg.name, &text);
        if h.fix_binary() && h.enabled {
            return Ok(Registered::Present);
        }
        // Writing -1 removes the handler, so it can be registered again with F.
        std::fs::write(&existing, "-1").map_err(io(&existing))?;
        replaced = true;
    }
    let register = dir.join("register");
    std::fs::write(&register, reg.line_with_fix_binary()).map_err(io(&register))?;
    Ok(if replaced {
        Registered::Replaced
    } else {
        Registered::Added
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_debian_registration_lines() {
        let line = r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCP";
        let r = Registration::parse(line).unwrap();
        assert_eq!(r.name, "qemu-aarch64");
        assert_eq!(r.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(r.flags, "OCP");
        let out = r.line_with_fix_binary();
        assert!(out.ends_with(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCPF"));
        assert!(out.starts_with(r":qemu-aarch64:M::\x7f\x45"));
        // Already F: unchanged.
        let f = Registration::parse(&out).unwrap();
        assert_eq!(f.line_with_fix_binary(), out);
        assert!(Registration::parse("# comment").is_none());
        assert!(Registration::parse(":x:M:0:magic").is_none());
    }

    #[test]
    fn parses_kernel_handler_status() {
        let text = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\noffset 0\nmagic 7f454c46\nmask ffff\n";
        let h = Handler::parse("qemu-aarch64", text);
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.interpreter, "/usr/bin/qemu-aarch64-static");
        let h = Handler::parse("qemu-arm", "disabled\ninterpreter /x\nflags: OC\n");
        assert!(!h.enabled && !h.fix_binary());
    }

    #[test]
    fn check_names_the_fix_for_each_missing_case() {
        let d = tempfile::tempdir().unwrap();
        let foreign = if host_architecture() == "arm64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        let qemu = qemu_name(&p(foreign).architecture).unwrap();
        // Native platforms never need a handler.
        check_can_run_in(d.path(), &Platform::new("linux", host_architecture(), None)).unwrap();
        let e = check_can_run_in(d.path(), &p(foreign))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no binfmt_misc handler for"), "{e}");
        assert!(e.contains("not mounted"), "{e}");
        // The fix names kiln's own commands: the CLI says it, not the solver.
        assert!(!e.contains("kiln setup-binfmt"), "{e}");
        std::fs::write(d.path().join("register"), "").unwrap();
        let name = format!("qemu-{qemu}");
        std::fs::write(
            d.path().join(&name),
            "enabled\ninterpreter /usr/bin/q\nflags: OC\n",
        )
        .unwrap();
        let e = check_can_run_in(d.path(), &p(foreign)).unwrap_err();
        assert!(matches!(e, EmulationError::NoFixBinary { .. }), "{e}");
        std::fs::write(
            d.path().join(&name),
            "disabled\ninterpreter /usr/bin/q\nflags: OCF\n",
        )
        .unwrap();
        let e = check_can_run_in(d.path(), &p(foreign)).unwrap_err();
        assert!(matches!(e, EmulationError::Disabled { .. }), "{e}");
        std::fs::write(
            d.path().join(&name),
            "enabled\ninterpreter /usr/bin/q\nflags: OCF\n",
        )
        .unwrap();
        check_can_run_in(d.path(), &p(foreign)).unwrap();
        let e = check_can_run_in(d.path(), &p("linux/weird")).unwrap_err();
        assert!(matches!(e, EmulationError::Unknown(_)));
    }

    #[test]
    fn register_writes_the_line_with_f_and_replaces_handlers_without_it() {
        let d = tempfile::tempdir().unwrap();
        let interp = d.path().join("qemu-fake");
        std::fs::write(&interp, "").unwrap();
        let foreign = if host_architecture() == "arm64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let reg = Registration {
            name: format!("qemu-{foreign}"),
            middle: r"M::\x7f\x45:\xff\xff".into(),
            interpreter: interp.display().to_string(),
            flags: "OC".into(),
        };
        assert_eq!(register(d.path(), &reg).unwrap(), Registered::Added);
        let written = std::fs::read_to_string(d.path().join("register")).unwrap();
        assert_eq!(written, reg.line_with_fix_binary());
        assert!(written.ends_with(":OCF"));
        std::fs::write(
            d.path().join(&reg.name),
            "enabled\ninterpreter x\nflags: OC\n",
        )
        .unwrap();
        assert_eq!(register(d.path(), &reg).unwrap(), Registered::Replaced);
        assert_eq!(
            std::fs::read_to_string(d.path().join(&reg.name)).unwrap(),
            "-1"
        );
        std::fs::write(
            d.path().join(&reg.name),
            "enabled\ninterpreter x\nflags: OCF\n",
        )
        .unwrap();
        assert_eq!(register(d.path(), &reg).unwrap(), Registered::Present);
        let missing = Registration {
            interpreter: "/nonexistent/qemu".into(),
            ..reg
        };
        assert!(matches!(
            register(d.path(), &missing).unwrap(),
            Registered::Skipped(_)
        ));
    }

    #[test]
    fn reads_the_installed_binfmt_d_entries_when_present() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("qemu-arm.conf"),
            "# arm\n:qemu-arm:M::\\x7f\\x45:\\xff\\xff:/usr/libexec/qemu-binfmt/arm-binfmt-P:OCF\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("python3.conf"), ":python:M::x:y:/py:\n").unwrap();
        let regs = available(dir.path()).unwrap();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].name, "qemu-arm");
    }
}
