//! Registry connection flags shared by the image commands.

use kiln_registry::{RegistryClient, TransportOptions};

/// `--insecure-registry` and transfer concurrency.
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
        .map_err(|e| miette::miette!("starting async runtime: {e}"))
}
