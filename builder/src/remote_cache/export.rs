//! `--cache-to type=registry|local`: after the build, its cache written as a cache image into
//! the content store (`kiln_solver::remote_cache::export_cache`), then pushed to the registry
//! (blobs checked in parallel; what the imported cache listed in the same repository is not
//! checked again) or copied into an OCI layout directory.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_oci::layout::LayoutDir;
use kiln_oci::walk::Partial;
use kiln_oci::{Digest, Reference};
use kiln_registry::progress::{BlobStatus, NoProgress, Progress};
use kiln_registry::push::{push_skipping, PushOptions};
use kiln_registry::store::{BlobStore, Blobs};
use kiln_registry::RegistryClient;
use kiln_solver::cache::CacheKey;
use kiln_solver::mounts::cache::CacheMounts;
use kiln_solver::remote_cache::{export_cache, CacheImage, ExportRecord, ExportStores};
use kiln_solver::snapshot::Snapshot;
use kiln_solver::state::StateDir;
use kiln_solver::worker::LocalWorker;
use serde::Serialize;
use thiserror::Error;

use super::import::Imported;
use super::spec::{CacheLocation, CacheTo};
use crate::driver::export_steps::{ExportStep, PushProgress};
use crate::local_store::LocalStore;

/// Why a cache export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Writing the cache image into the content store failed.
    #[error("--cache-to {location}: the cache cannot be exported")]
    Write {
        /// The destination.
        location: String,
        /// Why.
        #[source]
        source: kiln_solver::remote_cache::RemoteCacheError,
    },
    /// A lazily imported layer could not be fetched.
    #[error("--cache-to {location}: the cache cannot be exported")]
    Fetch {
        /// The destination.
        location: String,
        /// Why.
        #[source]
        source: kiln_solver::scheduler::WorkerError,
    },
    /// The push failed.
    #[error("--cache-to {location}: the cache cannot be exported")]
    Push {
        /// The destination.
        location: String,
        /// The registry's error (with its status).
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// Writing the layout failed.
    #[error("--cache-to {location}: the cache cannot be exported")]
    Layout {
        /// The destination.
        location: String,
        /// Why.
        #[source]
        source: kiln_oci::Error,
    },
}

impl ExportError {
    /// The registry error, when a registry refused.
    pub fn registry(&self) -> Option<&kiln_registry::Error> {
        match self {
            ExportError::Push { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// What one export wrote (the `kiln.cache.exported` entries of `--metadata-file`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// `registry` or `local`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The reference or `DIR:TAG`.
    pub destination: String,
    /// The cache image's root digest.
    pub digest: String,
    /// Records exported.
    pub records: usize,
    /// Blobs of the cache image (layers and config).
    pub blobs: usize,
    /// Blobs uploaded (registry) or written (local).
    pub uploaded: usize,
    /// Blobs the registry had (HEAD) or the layout held.
    pub existing: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
    /// Blobs not checked at all: the imported cache listed them in this repository.
    pub known: usize,
}

/// What every cache export reads.
pub struct ExportContext<'a> {
    /// The state directory.
    pub state: &'a StateDir,
    /// The build's worker.
    pub worker: &'a LocalWorker,
    /// The build's cache (layer records).
    pub cache: &'a kiln_solver::cache::CacheStore,
    /// The local store as the registry client sees it.
    pub store: &'a Arc<LocalStore>,
    /// The build's registry client.
    pub client: &'a RegistryClient,
    /// The build's runtime.
    pub runtime: &'a tokio::runtime::Handle,
    /// Parallel blob transfers.
    pub concurrency: usize,
    /// Every solved result: key, snapshot, description.
    pub solved: &'a [(CacheKey, Snapshot, String)],
    /// The snapshots the build exports (each platform's final filesystem).
    pub finals: &'a [Snapshot],
    /// The cache ids the build's RUN steps mount.
    pub mount_ids: &'a [String],
    /// What `--cache-from` imported.
    pub imported: Option<&'a Imported>,
    /// The images the build pushed (their repositories hold the final image's layers).
    pub pushed: &'a [Reference],
}

/// Writes the cache to one `--cache-to` destination (`registry` or `local`).
pub fn export(
    ctx: &ExportContext<'_>,
    to: &CacheTo,
    step: Option<&ExportStep>,
) -> Result<ExportReport, ExportError> {
    let location = to.location.describe();
    let records = ctx.worker.export_records(ctx.solved);
    let remote = remote_blobs(ctx, &to.location);
    // A layer imported lazily is exported as the blob it came as: a repository of the
    // target's registry that listed it has it (or mounts it); anywhere else needs its bytes.
    let fetch = || {
        fetch_lazy(ctx, &records).map_err(|source| ExportError::Fetch {
            location: location.clone(),
            source,
        })
    };
    if remote.mountable.is_empty() {
        fetch()?;
    }
    let image = write_image(ctx, to, &records, step).map_err(|source| ExportError::Write {
        location: location.clone(),
        source,
    })?;
    let mut report = ExportReport {
        destination: location.clone(),
        digest: image.root.digest.to_string(),
        records: image.config.kiln.records.len(),
        blobs: image.blobs.len(),
        ..ExportReport::default()
    };
    match &to.location {
        CacheLocation::Registry(r) => {
            report.kind = "registry";
            let mut pushed = push_image(ctx, r, &image, &remote, step, &mut report);
            if pushed.is_err() && remote.mountable != remote.known {
                // A registry that would not mount: the bytes are needed after all.
                tracing::debug!(error = ?pushed, "cache push without the lazy blobs failed; fetching them");
                fetch()?;
                let known = RemoteBlobs {
                    mountable: remote.known.clone(),
                    known: remote.known.clone(),
                };
                pushed = push_image(ctx, r, &image, &known, step, &mut report);
            }
            pushed.map_err(|source| ExportError::Push {
                location: location.clone(),
                source,
            })?;
        }
        CacheLocation::Local { dir, tag, .. } => {
            report.kind = "local";
            let mut written = write_layout(ctx, dir, tag, &image, &remote, step, &mut report);
            if written.is_err() && !remote.known.is_empty() {
                // The directory lost a blob it listed: the bytes are needed after all.
                tracing::debug!(error = ?written, "cache copy without the lazy blobs failed; fetching them");
                fetch()?;
                let none = RemoteBlobs::default();
                written = write_layout(ctx, dir, tag, &image, &none, step, &mut report);
            }
            written.map_err(|source| ExportError::Layout {
                location: location.clone(),
                source,
            })?;
        }
        CacheLocation::Inline => {}
    }
    Ok(report)
}

/// Lazily imported blobs a push to a registry need not have here.
#[derive(Debug, Default)]
struct RemoteBlobs {
    /// Listed by a cache imported from the target repository itself: not checked at all.
    known: BTreeSet<Digest>,
    /// In repositories of the target's registry: checked, mounted when absent (`known`
    /// included).
    mountable: BTreeSet<Digest>,
}

/// The imported blobs an export to `location` can do without: every source must be a
/// repository of the target's registry, or the target layout directory itself (the digests
/// are not told apart by source).
fn remote_blobs(ctx: &ExportContext<'_>, location: &CacheLocation) -> RemoteBlobs {
    let Some(imported) = ctx.imported else {
        return RemoteBlobs::default();
    };
    let target = match location {
        CacheLocation::Registry(target) => target,
        CacheLocation::Local { dir, .. } => {
            let dir = std::fs::canonicalize(dir).unwrap_or(dir.clone());
            let same_dir = !imported.layouts.is_empty()
                && imported.layouts.len() == imported.loaded
                && imported.layouts.iter().all(|(_, l)| *l == dir);
            if !same_dir {
                return RemoteBlobs::default();
            }
            let blobs: BTreeSet<Digest> = ctx.worker.imported_blobs().into_iter().collect();
            return RemoteBlobs {
                known: blobs.clone(),
                mountable: blobs,
            };
        }
        CacheLocation::Inline => return RemoteBlobs::default(),
    };
    let repos = &imported.repositories;
    if repos.is_empty()
        || repos.len() != imported.loaded
        || !repos.iter().all(|(_, r)| r.registry() == target.registry())
    {
        return RemoteBlobs::default();
    }
    let blobs: BTreeSet<Digest> = ctx.worker.imported_blobs().into_iter().collect();
    let same_repo = repos
        .iter()
        .all(|(_, r)| r.repository() == target.repository());
    RemoteBlobs {
        known: if same_repo {
            blobs.clone()
        } else {
            BTreeSet::new()
        },
        mountable: blobs,
    }
}

/// Fetches the lazily imported layers of every record.
fn fetch_lazy(
    ctx: &ExportContext<'_>,
    records: &[ExportRecord],
) -> Result<(), kiln_solver::scheduler::WorkerError> {
    if ctx.imported.is_none() {
        return Ok(());
    }
    let mut seen = BTreeSet::new();
    for r in records {
        if seen.insert(r.snapshot.layers.clone()) {
            ctx.worker.fetch_lazy_blobs(&r.snapshot)?;
        }
    }
    Ok(())
}

/// The cache image in the content store.
fn write_image(
    ctx: &ExportContext<'_>,
    to: &CacheTo,
    records: &[ExportRecord],
    step: Option<&ExportStep>,
) -> Result<CacheImage, kiln_solver::remote_cache::RemoteCacheError> {
    let item = step.map(|s| s.item("preparing build cache for export"));
    let mut opts = to.options.clone();
    if to.all_mounts {
        opts.cache_mounts = ctx.mount_ids.to_vec();
    }
    let mounts = if opts.cache_mounts.is_empty() {
        None
    } else {
        Some(
            CacheMounts::new(ctx.state.cache_mounts_dir()).map_err(|source| {
                kiln_solver::remote_cache::RemoteCacheError::Mount {
                    id: String::new(),
                    source,
                }
            })?,
        )
    };
    let stores = ExportStores {
        layers: ctx.worker.layers(),
        content: ctx.state.content(),
        meta: ctx.cache.meta(),
        mounts: mounts.as_ref(),
    };
    let image = export_cache(&stores, records, ctx.finals, &opts)?;
    tracing::debug!(root = %image.root.digest, records = image.config.kiln.records.len(), blobs = image.blobs.len(), mounts = image.config.kiln.mounts.len(), "cache image written");
    if let Some(item) = item {
        item.done();
    }
    if let Some(step) = step {
        step.done_item(format!("writing cache manifest {}", image.root.digest));
    }
    Ok(image)
}

/// Pushes the cache image to `target`: blobs in parallel (HEAD, or a mount from an imported
/// repository of the same registry), none of `known`, then the manifest.
fn push_image(
    ctx: &ExportContext<'_>,
    target: &Reference,
    image: &CacheImage,
    remote: &RemoteBlobs,
    step: Option<&ExportStep>,
    report: &mut ExportReport,
) -> Result<(), Box<kiln_registry::Error>> {
    let known = &remote.known;
    // A repository of the same registry that holds the blobs: an imported cache's, else
    // the pushed image's (its layers are the cache's final ones).
    let imported = ctx.imported.map(|i| i.repositories.iter().map(|(_, r)| r));
    let mount_from = imported
        .into_iter()
        .flatten()
        .chain(ctx.pushed)
        .find(|r| r.registry() == target.registry() && r.repository() != target.repository())
        .map(|r| r.repository().to_string());
    let opts = PushOptions {
        concurrency: ctx.concurrency,
        mount_from,
    };
    let counts = Counts::default();
    let shown = step.map(|s| PushProgress::new(s.item("pushing cache layers")));
    let progress = Counting {
        counts: &counts,
        inner: match &shown {
            Some(p) => p as &dyn Progress,
            None => &NoProgress,
        },
    };
    let store = KnownBlobs {
        inner: ctx.store.as_ref(),
        known: &remote.mountable,
    };
    let pushed = ctx.runtime.block_on(push_skipping(
        ctx.client,
        target,
        &image.root,
        &store,
        &opts,
        known,
        &progress,
    ));
    if let (Some(p), true) = (shown, pushed.is_ok()) {
        p.finish();
    }
    let digest = pushed?;
    report.uploaded = counts.pushed.load(Ordering::Relaxed);
    report.existing = counts.exists.load(Ordering::Relaxed);
    report.mounted = counts.mounted.load(Ordering::Relaxed);
    report.known = image
        .blobs
        .iter()
        .filter(|d| known.contains(&d.digest))
        .count();
    tracing::debug!(target = %target, digest = %digest, uploaded = report.uploaded, existing = report.existing, mounted = report.mounted, known = report.known, "cache pushed");
    if let Some(step) = step {
        step.done_item(format!("pushing cache manifest for {target}@{digest}"));
    }
    Ok(())
}

/// Copies the cache image into the layout at `dir`, naming it `tag`.
fn write_layout(
    ctx: &ExportContext<'_>,
    dir: &std::path::Path,
    tag: &str,
    image: &CacheImage,
    remote: &RemoteBlobs,
    step: Option<&ExportStep>,
    report: &mut ExportReport,
) -> Result<(), kiln_oci::Error> {
    let layout = LayoutDir::create(dir)?;
    // The blobs the layout itself listed need not be here: the copy skips what it holds.
    let store = KnownBlobs {
        inner: ctx.store.as_ref(),
        known: &remote.known,
    };
    let source = Blobs(&store);
    let copied = kiln_oci::copy::copy_images(
        &source,
        &[(image.root.clone(), vec![tag.to_string()])],
        &layout,
        Partial::Refuse,
    )?;
    report.uploaded = copied.written;
    report.existing = copied.blobs.saturating_sub(copied.written);
    if let Some(step) = step {
        step.done_item(format!("writing cache to {}:{tag}", dir.display()));
    }
    Ok(())
}

/// Blob outcomes counted during a push.
#[derive(Default)]
struct Counts {
    pushed: AtomicUsize,
    exists: AtomicUsize,
    mounted: AtomicUsize,
}

/// A progress that counts outcomes and passes everything on.
struct Counting<'a> {
    counts: &'a Counts,
    inner: &'a dyn Progress,
}

impl Progress for Counting<'_> {
    fn start(&self, digest: &Digest, size: u64) {
        self.inner.start(digest, size);
    }

    fn advance(&self, digest: &Digest, n: u64) {
        self.inner.advance(digest, n);
    }

    fn done(&self, digest: &Digest, status: BlobStatus) {
        let counter = match status {
            BlobStatus::Pushed => Some(&self.counts.pushed),
            BlobStatus::Exists => Some(&self.counts.exists),
            BlobStatus::Mounted => Some(&self.counts.mounted),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.done(digest, status);
    }
}

/// The local store, claiming the blobs the target repository is known to hold or can mount
/// (they may not be here: lazily imported), so the push's walk accepts them.
pub struct KnownBlobs<'a> {
    /// The local store.
    pub inner: &'a LocalStore,
    /// The blobs claimed.
    pub known: &'a BTreeSet<Digest>,
}

impl BlobStore for KnownBlobs<'_> {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.known.contains(digest) || self.inner.has_blob(digest)
    }

    fn temp_path(&self) -> kiln_registry::Result<std::path::PathBuf> {
        self.inner.temp_path()
    }

    fn commit_blob(&self, digest: &Digest, tmp: &std::path::Path) -> kiln_registry::Result<()> {
        self.inner.commit_blob(digest, tmp)
    }

    fn open_blob(&self, digest: &Digest) -> kiln_registry::Result<std::fs::File> {
        self.inner.open_blob(digest)
    }
}
