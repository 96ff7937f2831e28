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
    /// A client with these settings and credentials from Docker's config.json.
    pub fn client(&self) -> RegistryClient {
        let mut opts = TransportOptions::default();
        for r in &self.insecure_registries {
            if !opts.insecure_registries.contains(r) {
                opts.insecure_registries.push(r.clone());
            }
        }
        opts.idle_timeout = self.idle_timeout;
        // Retries are announced so a slow command says why it waits.
        opts.notices = Notices::new(|n| eprintln!("{n}"));
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
