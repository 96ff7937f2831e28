//! `kiln du`: what the build cache, the layers and the content store take on disk.

use crate::local_store::open_state;
use kiln_solver::cache::CacheStore;
use kiln_solver::content::LockMode;
use kiln_solver::gc::disk_usage;
use kiln_solver::meta::now_secs;
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::timestamp::human_duration;
use kiln_solver::units::human_size;
use miette::{IntoDiagnostic, Result};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln du`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One row per cache record.
    #[arg(long)]
    pub verbose: bool,
}

/// How long ago `secs` was, as buildx prints it (`2 hours ago`).
fn ago(secs: u64, now: u64) -> String {
    human_duration(now.saturating_sub(secs)) + " ago"
}

/// Prints the usage table.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let state = open_state(root)?;
    let _lock = state.lock(LockMode::Shared).into_diagnostic()?;
    let cache = CacheStore::open(&state.meta_db_path()).into_diagnostic()?;
    let layers = LayerStore::open(state.layers_dir()).into_diagnostic()?;
    let usage = disk_usage(&state, &cache, &layers).into_diagnostic()?;
    let now = now_secs();
    if args.verbose {
        for row in usage.rows.iter().rev() {
            println!(
                "ID:\t\t{}",
                &row.entry.key.hex()[..25.min(row.entry.key.hex().len())]
            );
            println!("Description:\t{}", row.entry.result.description);
            println!(
                "Size:\t\t{}",
                human_size(row.exclusive_bytes + row.shared_bytes)
            );
            println!("Shared:\t\t{}", row.shared_bytes > 0);
            println!("Last used:\t{}\n", ago(row.entry.last_used, now));
        }
    } else {
        println!(
            "{:<27} {:<12} {:<10} LAST ACCESSED",
            "ID", "RECLAIMABLE", "SIZE"
        );
        for row in usage.rows.iter().rev() {
            let hex = row.entry.key.hex();
            println!(
                "{:<27} {:<12} {:<10} {}",
                hex.get(..25).unwrap_or(&hex),
                if row.shared_bytes > 0 && row.exclusive_bytes == 0 {
                    "false"
                } else {
                    "true"
                },
                human_size(row.exclusive_bytes + row.shared_bytes),
                ago(row.entry.last_used, now)
            );
        }
    }
    let reclaimable: u64 = usage.rows.iter().map(|r| r.exclusive_bytes).sum();
    println!("Cache records:\t{}", usage.rows.len());
    println!("Layers:\t\t{}", human_size(usage.layers_bytes));
    println!("Content store:\t{}", human_size(usage.content_bytes));
    println!("Cache mounts:\t{}", human_size(usage.cache_mounts_bytes));
    println!("HTTP downloads:\t{}", human_size(usage.downloads_bytes));
    println!("Reclaimable:\t{}", human_size(reclaimable));
    println!(
        "Total:\t\t{}",
        human_size(
            usage.layers_bytes
                + usage.content_bytes
                + usage.cache_mounts_bytes
                + usage.downloads_bytes
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(1_089_000), "1.089MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
        assert_eq!(ago(100, 130), "30 seconds ago");
        assert_eq!(ago(0, 7200), "2 hours ago");
    }
}
