//! Where a tarball output goes: `dest=FILE`, or stdout (`dest=-` or none), never a terminal.

use super::spec::{Destination, OutputSpec};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::io::Write;

/// Opens the destination of a `what` (a tarball) output.
pub fn open_dest(out: &OutputSpec, what: &str) -> Result<Box<dyn Write>> {
    match &out.dest {
        Some(Destination::Stdout) | None => {
            if out.dest.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(miette!(
                    "refusing to write a {what} to a terminal: give dest=<file> or redirect stdout"
                ));
            }
            Ok(Box::new(std::io::stdout()))
        }
        Some(Destination::Path(p)) => {
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).into_diagnostic()?;
            }
            let f = std::fs::File::create(p)
                .into_diagnostic()
                .wrap_err_with(|| format!("creating {}", p.display()))?;
            Ok(Box::new(std::io::BufWriter::new(f)))
        }
    }
}
