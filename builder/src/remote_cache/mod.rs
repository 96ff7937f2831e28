//! The remote build cache of `kiln build` (`--cache-to` / `--cache-from`): the flags, the
//! import of cache configs before the solve and the export of the build's cache after it,
//! to a registry, an OCI layout directory, or the image's own config (inline). The cache
//! image itself is made and read by `kiln_solver::remote_cache`.

pub mod export;
pub mod import;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use kiln_oci::media_type::CONFIG_KEY_INLINE_CACHE;
use kiln_oci::{Descriptor, Digest, Platform};
use kiln_registry::RegistryClient;
use kiln_solver::llb::Definition;
use kiln_solver::progress::{synthetic_digest, ProgressSender, Warning};
use kiln_solver::remote_cache::{inline_config, mounts::cache_mount_ids, ExportRecord};
use kiln_solver::snapshot::Snapshot;
use kiln_solver::worker::LocalWorker;

use self::export::{ExportContext, ExportReport};
use self::import::Imported;
use self::spec::{CacheFrom, CacheLocation, CacheTo};
use crate::driver::export_steps::ExportStep;
use crate::local_store::LocalStore;

/// Reads every `--cache-from` source (none: `None`). A source that cannot be read fails the
/// build unless it has `ignore-error=true`.
pub fn import(
    sources: &[CacheFrom],
    store: &Arc<LocalStore>,
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    platforms: &[Platform],
) -> miette::Result<Option<Imported>> {
    if sources.is_empty() {
        return Ok(None);
    }
    match import::import(sources, store, client, runtime, platforms) {
        Ok(imported) => Ok(Some(imported)),
        Err(e) => {
            let hint = crate::hints::for_cache_import(&e);
            Err(crate::hints::with_help(
                miette::Report::from_err(e),
                Some(hint),
            ))
        }
    }
}

/// Hands the imported cache to the worker and restores the build's cache mounts from it.
pub fn attach(
    worker: &mut LocalWorker,
    imported: &Imported,
    def: &Definition,
) -> Result<(), kiln_solver::scheduler::WorkerError> {
    worker.set_imported_cache(Arc::new(imported.cache.clone()), imported.fetcher.clone());
    if imported.has_mounts {
        let restored = worker.restore_cache_mounts(&cache_mount_ids(def))?;
        tracing::debug!(?restored, "cache mounts restored");
    }
    Ok(())
}

/// Shows a warning as a build step of its own (it is in the summary at the end too).
pub fn warn(tx: &ProgressSender, step: &str, message: String) {
    let v = tx.vertex(synthetic_digest(step), step);
    v.start();
    v.warn(Warning {
        level: 1,
        short: message,
        ..Warning::default()
    });
    v.done();
}

/// An error and its causes on one line (`a: b: c`), a cause that repeats its predecessor's
/// text left out.
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cause = c.source();
    }
    out
}

/// Each source as a build step (`importing cache manifest from …`, as BuildKit shows it), a
/// skipped one with its warning (in the summary at the end too).
pub fn report_import(tx: &ProgressSender, imported: &Imported) {
    for (i, (location, skipped)) in imported.outcomes.iter().enumerate() {
        let name = format!("importing cache manifest from {location}");
        let v = tx.vertex(synthetic_digest(&format!("cache import {i} {name}")), name);
        v.start();
        if let Some(e) = skipped {
            v.warn(Warning {
                level: 1,
                short: format!(
                    "{} (ignored: ignore-error=true; building without this cache)",
                    chain_text(e)
                ),
                ..Warning::default()
            });
        }
        v.done();
    }
}

/// The `moby.buildkit.cache.v0` key of an image config for `--cache-to type=inline`: the
/// records whose layers are a prefix of the image's, their blobs being the image's own.
pub fn inline_key(
    records: &[ExportRecord],
    image: &Snapshot,
    layers: &[(Descriptor, Digest)],
) -> BTreeMap<String, serde_json::Value> {
    let config = inline_config(records, image, layers);
    let encoded = base64::engine::general_purpose::STANDARD.encode(config.to_bytes());
    BTreeMap::from([(
        CONFIG_KEY_INLINE_CACHE.to_string(),
        serde_json::Value::String(encoded),
    )])
}

/// Writes the cache to every `registry` and `local` `--cache-to` (inline went into the
/// image). A failure fails the build, or with `ignore-error=true` is a warning.
pub fn export_all(
    ctx: &ExportContext<'_>,
    targets: &[CacheTo],
    tx: &ProgressSender,
) -> miette::Result<Vec<ExportReport>> {
    let mut reports = Vec::new();
    for (i, to) in targets.iter().enumerate() {
        let name = match to.location {
            CacheLocation::Registry(_) => "exporting cache to registry",
            CacheLocation::Local { .. } => "exporting cache to client directory",
            CacheLocation::Inline => continue,
        };
        let step = ExportStep::new(tx, 1000 + i, name);
        match export::export(ctx, to, Some(&step)) {
            Ok(report) => {
                step.done();
                reports.push(report);
            }
            Err(e) if to.ignore_error => {
                step.warn(format!(
                    "{} (ignored: ignore-error=true; the cache was not exported)",
                    chain_text(&e)
                ));
                step.done();
            }
            Err(e) => {
                step.error(&e.to_string());
                let hint = crate::hints::for_cache_export(&e);
                return Err(crate::hints::with_help(
                    miette::Report::from_err(e),
                    Some(hint),
                ));
            }
        }
    }
    Ok(reports)
}
