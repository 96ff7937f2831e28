//! `kiln setup-binfmt`: registers the installed `qemu-user-static`
//! interpreters with binfmt_misc (fix-binary flag), so RUN steps of foreign
//! platforms run under emulation.

use kiln_solver::executor::emulation::{self, Registered, BINFMT_D, BINFMT_MISC};
use miette::{miette, IntoDiagnostic};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln setup-binfmt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these platforms or QEMU names (`linux/arm64`, `arm64`, `aarch64`; comma-separated).
    /// Default: every installed interpreter.
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Directory of the binfmt.d entries to register.
    #[arg(long, value_name = "DIR", default_value = BINFMT_D)]
    pub from: std::path::PathBuf,
}

/// `linux/arm64`, `arm64` or `aarch64` as QEMU's name.
fn wanted_name(spec: &str) -> String {
    // `os/arch[/variant]` or a bare architecture.
    let arch = spec.split('/').nth(1).unwrap_or(spec).to_string();
    emulation::qemu_name(&arch)
        .map(str::to_string)
        .unwrap_or(arch)
}

/// Runs `kiln setup-binfmt`.
pub fn run(args: Args) -> miette::Result<ExitCode> {
    // The error's message already says its cause (`{path}: {source}`): a chain would repeat it.
    let regs = emulation::available(&args.from).map_err(|e| {
        miette!(
            help = "install the interpreters with `apt-get install qemu-user-static`",
            "{e}"
        )
    })?;
    if regs.is_empty() {
        return Err(miette!(
            help = "install the interpreters with `apt-get install qemu-user-static`",
            "no qemu-* entries in {}",
            args.from.display()
        ));
    }
    let wanted: Vec<String> = args.platform.iter().map(|p| wanted_name(p)).collect();
    emulation::ensure_mounted().into_diagnostic().map_err(|e| {
        crate::hints::with_help(e, Some("kiln setup-binfmt must run as root".into()))
    })?;
    let dir = Path::new(BINFMT_MISC);
    let mut failed = false;
    let mut matched = 0;
    for reg in &regs {
        let short = reg.name.trim_start_matches("qemu-");
        if !wanted.is_empty() && !wanted.iter().any(|w| w == short) {
            continue;
        }
        matched += 1;
        match emulation::register(dir, reg) {
            Ok(Registered::Added) => println!("{}: registered ({})", reg.name, reg.interpreter),
            Ok(Registered::Replaced) => {
                println!("{}: re-registered with the F flag", reg.name)
            }
            Ok(Registered::Present) => println!("{}: already registered", reg.name),
            Ok(Registered::Skipped(why)) => println!("{}: skipped, {why}", reg.name),
            Err(e) => {
                eprintln!("{}: {e}", reg.name);
                failed = true;
            }
        }
    }
    if !wanted.is_empty() && matched < wanted.len() {
        return Err(miette!(
            help = "its directory lists the installed interpreters",
            "no interpreter for some of {:?} in {}",
            args.platform,
            args.from.display()
        ));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::wanted_name;

    #[test]
    fn platforms_and_names_map_to_qemu_names() {
        assert_eq!(wanted_name("linux/arm64"), "aarch64");
        assert_eq!(wanted_name("linux/arm/v7"), "arm");
        assert_eq!(wanted_name("arm64"), "aarch64");
        assert_eq!(wanted_name("aarch64"), "aarch64");
        assert_eq!(wanted_name("riscv64"), "riscv64");
    }
}
