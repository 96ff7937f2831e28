//! kiln: container image builder and registry toolkit.

mod archive;
mod attest;
mod bake;
mod cli;
mod context;
mod driver;
mod export;
mod hints;
mod local_store;
#[allow(dead_code)] // some display pieces (summary, transfers) are not wired into every verb yet
mod progress;
mod registry_opts;
mod remote_cache;
mod rootless;
mod signature;
mod table;
mod template;
mod transfer_progress;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when stdout's reader goes away
    // (`kiln images | head`) instead of panicking on the failed write.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::run()
}
