//! `kiln prune`: remove build cache (and the layers and blobs only it kept).

use crate::local_store::open_state;
use kiln_solver::cache::CacheStore;
use kiln_solver::content::LockMode;
use kiln_solver::gc::{prune, PruneOptions};
use kiln_solver::meta::now_secs;
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::units::{human_size, parse_ram_size};
use miette::{miette, IntoDiagnostic, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// Arguments of `kiln prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove all build cache, not just what is old.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Keep the most recently used cache within this size (`10GB`, `512MB`; 1024-based, as
    /// buildx reads it).
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Filters: `until=DURATION` (`24h`, `30m`, `90s`).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `24h`, `30m`, `90s`, `2h30m`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

/// Prunes.
pub fn run(args: Args, root: Option<&Path>) -> Result<ExitCode> {
    let mut opts = PruneOptions {
        all: args.all,
        ..PruneOptions::default()
    };
    if let Some(k) = &args.keep_storage {
        opts.keep_bytes = Some(
            parse_ram_size(k)
                .map_err(|_| miette!("invalid --keep-storage {k:?}: expected a size like 10GB"))?,
        );
    }
    for f in &args.filters {
        match f.split_once('=') {
            Some(("until", d)) => {
                opts.older_than = Some(
                    parse_duration(d)
                        .ok_or_else(|| miette!("invalid --filter {f:?}: expected until=24h"))?,
                )
            }
            _ => {
                return Err(miette!(
                    "unsupported --filter {f:?} (supported: until=DURATION)"
                ))
            }
        }
    }
    if !opts.all && opts.older_than.is_none() && opts.keep_bytes.is_none() {
        // Like buildx without --all: what has not been used for two days.
        opts.older_than = Some(48 * 3600);
    }
    if !args.force && std::io::stdin().is_terminal() {
        eprint!("WARNING! This will remove build cache. Are you sure you want to continue? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .into_diagnostic()?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let state = open_state(root)?;
    let lock = state
        .content()
        .try_lock(LockMode::Exclusive)
        .into_diagnostic()?
        .ok_or_else(|| {
            miette!(
                "another kiln command (a build, pull or load) is using the state directory {}; prune when it is done",
                state.root().display()
            )
        })?;
    let cache = CacheStore::open(&state.meta_db_path()).into_diagnostic()?;
    let layers = LayerStore::open(state.layers_dir()).into_diagnostic()?;
    let report = prune(&state, &cache, &layers, &lock, &opts, now_secs()).into_diagnostic()?;
    println!("Deleted cache records:\t{}", report.results);
    println!("Deleted layers:\t\t{}", report.layers.len());
    println!("Deleted blobs:\t\t{}", report.blobs);
    if report.cache_mounts > 0 {
        println!("Deleted cache mounts:\t{}", report.cache_mounts);
    }
    println!("Total:\t{}", human_size(report.reclaimed));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("2h30m"), Some(9_000));
        assert_eq!(parse_duration("10"), None);
    }
}
