//! Registry connection flags shared by the image commands.

use kiln_registry::progress::Notices;
use kiln_registry::transport::{parse_seconds, IDLE_TIMEOUT_ENV};
use kiln_registry::{RegistryClient, TransportOptions};
use miette::{IntoDiagnostic, WrapErr};
use std::time::Duration;

/// `--insecure-registry`, transfer concurrency and the stall timeout.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Registry (host:port) to reach over plain HTTP or unverified TLS. Repeatable.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "KILN_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Parallel blob transfers.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_concurrent_transfers: usize,
    /// Seconds a registry may send nothing (no response, no next bytes of a download) before
    /// the attempt is retried, and after the retries the command fails.
    #[arg(
        long = "registry-idle-timeout",
        value_name = "SECONDS",
        env = IDLE_TIMEOUT_ENV,
        default_value = "30",
        value_parser = idle_timeout
    )]
    pub idle_timeout: Duration,
}

fn idle_timeout(v: &str) -> Result<Duration, String> {
    parse_seconds(v).ok_or_else(|| format!("{v:?} is not a number of seconds between 0 and 86400"))
}

impl RegistryArgs {
    /// A client with these settings and credentials from Docker's config.json; retries are
    /// announced on stderr.
    pub fn client(&self) -> RegistryClient {
        self.client_with_notices(Notices::new(|n| eprintln!("{n}")))
    }

    /// [`Self::client`] announcing retries through `notices`.
    pub fn client_with_notices(&self, notices: Notices) -> RegistryClient {
        let mut opts = TransportOptions::default();
        for r in &self.insecure_registries {
            if !opts.insecure_registries.contains(r) {
                opts.insecure_registries.push(r.clone());
            }
        }
        opts.idle_timeout = self.idle_timeout;
        // Retries are announced so a slow command says why it waits.
        opts.notices = notices;
        RegistryClient::new(opts)
    }

    /// Concurrency, at least 1.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent_transfers.max(1)
    }
}

/// A multi-threaded runtime for one command.
pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("starting async runtime")
}

/// A registry error as the terminal shows it: its whole chain, plus a hint naming the
/// flag or file that helps (the library does not know about flags).
#[derive(Debug)]
pub struct RegistryFailure {
    error: kiln_registry::Error,
    help: Option<String>,
}

impl std::fmt::Display for RegistryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RegistryFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl miette::Diagnostic for RegistryFailure {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// Wraps a registry error with the hint that fits it, for `map_err`.
pub fn registry_failure(error: kiln_registry::Error) -> miette::Report {
    let help = crate::hints::for_registry(&error);
    miette::Report::new(RegistryFailure { error, help })
}
