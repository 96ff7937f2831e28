//! Garbage collection across every store (`prune` and `du`): cache results are removed by
//! age, by a storage budget (least recently used first) or all at once; then layers no
//! remaining result uses, then content blobs that no tag reaches and no remaining layer
//! record remembers.

use std::collections::HashSet;
use std::path::Path;

use kiln_oci::Digest;

use crate::cache::{CacheEntry, CacheStore};
use crate::content::{ContentError, LockMode, StoreLock};
use crate::meta::MetaError;
use crate::snapshot::layers::{dir_size, LayerStore, LayerStoreError};
use crate::snapshot::LayerId;
use crate::state::StateDir;

/// Errors of prune and du.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The cache database failed.
    #[error(transparent)]
    Cache(#[from] MetaError),
    /// The layer store failed.
    #[error(transparent)]
    Layers(#[from] LayerStoreError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Prune must run alone.
    #[error("prune needs the state lock held exclusively (no build may run meanwhile)")]
    NotExclusive,
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove every cache result.
    pub all: bool,
    /// Remove results unused for longer than this many seconds.
    pub older_than: Option<u64>,
    /// Remove least recently used results until the layers of the rest take at most this.
    pub keep_bytes: Option<u64>,
}

/// What prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache results removed.
    pub results: usize,
    /// Layers removed.
    pub layers: Vec<LayerId>,
    /// Content blobs removed.
    pub blobs: usize,
    /// Bytes freed on disk.
    pub reclaimed: u64,
    /// Leftover temporary directories of interrupted builds removed.
    pub temporaries: usize,
    /// Files of the HTTP source cache removed (downloads and their URL records).
    pub downloads: usize,
    /// Persistent cache mounts removed (only with `all`, as `buildx prune --all` does).
    pub cache_mounts: usize,
}

/// One row of `du`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The cache entry.
    pub entry: CacheEntry,
    /// Bytes of layers only this entry uses.
    pub exclusive_bytes: u64,
    /// Bytes of layers it shares with other entries.
    pub shared_bytes: u64,
}

/// Disk usage of the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Cache entries, least recently used first.
    pub rows: Vec<UsageRow>,
    /// Bytes of all unpacked layers.
    pub layers_bytes: u64,
    /// Bytes of all content-store blobs.
    pub content_bytes: u64,
    /// Bytes of the persistent cache mounts (`RUN --mount=type=cache`).
    pub cache_mounts_bytes: u64,
    /// Bytes of `ADD <url>` downloads kept for revalidation.
    pub downloads_bytes: u64,
}

fn layer_sizes(layers: &LayerStore) -> Result<Vec<(LayerId, u64)>, PruneError> {
    Ok(layers
        .list()?
        .into_iter()
        .map(|id| {
            let size = layers.size(&id);
            (id, size)
        })
        .collect())
}

/// Usage per cache entry and in total.
pub fn disk_usage(
    state: &StateDir,
    cache: &CacheStore,
    layers: &LayerStore,
) -> Result<DiskUsage, PruneError> {
    let sizes: std::collections::HashMap<LayerId, u64> = layer_sizes(layers)?.into_iter().collect();
    let entries = cache.entries()?;
    let mut users: std::collections::HashMap<&LayerId, usize> = std::collections::HashMap::new();
    for e in &entries {
        let distinct: HashSet<&LayerId> = e.result.snapshot.layers.iter().collect();
        for l in distinct {
            *users.entry(l).or_default() += 1;
        }
    }
    let rows = entries
        .iter()
        .map(|e| {
            let distinct: HashSet<&LayerId> = e.result.snapshot.layers.iter().collect();
            let (mut exclusive, mut shared) = (0, 0);
            for l in distinct {
                let size = sizes.get(l).copied().unwrap_or(0);
                if users.get(l).copied().unwrap_or(0) > 1 {
                    shared += size;
                } else {
                    exclusive += size;
                }
            }
            UsageRow {
                entry: e.clone(),
                exclusive_bytes: exclusive,
                shared_bytes: shared,
            }
        })
        .collect();
    Ok(DiskUsage {
        rows,
        layers_bytes: sizes.values().sum(),
        content_bytes: state.content().list_blobs()?.iter().map(|b| b.size).sum(),
        cache_mounts_bytes: dir_size(&state.cache_mounts_dir()),
        downloads_bytes: dir_size(&state.http_dir()),
    })
}

/// Removes everything inside `dir` (kept itself); how many entries and bytes went.
fn empty_dir(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    // Files first: in cache-mounts/ they are the records (`<key>.id`) of the directories.
    let mut entries: Vec<std::fs::DirEntry> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    let (mut count, mut bytes) = (0, 0);
    for e in entries {
        if e.file_name() == crate::trash::TRASH {
            continue;
        }
        let path = e.path();
        // A killed build may leave a mount in its pending layer (a snapshot view):
        // unmount it first, and never recurse into what is still mounted.
        for m in crate::sysmount::mounts_under(&path) {
            let _ = crate::sysmount::unmount(&m);
        }
        if !crate::sysmount::mounts_under(&path).is_empty() {
            continue;
        }
        let size = dir_size(&path);
        if crate::trash::discard(&path).is_ok() {
            count += 1;
            bytes += size;
        }
    }
    (count, bytes)
}

/// Prunes the cache; `lock` must be the state lock held exclusively.
pub fn prune(
    state: &StateDir,
    cache: &CacheStore,
    layers: &LayerStore,
    lock: &StoreLock,
    opts: &PruneOptions,
    now: u64,
) -> Result<PruneReport, PruneError> {
    if lock.mode() != LockMode::Exclusive {
        return Err(PruneError::NotExclusive);
    }
    let sizes: std::collections::HashMap<LayerId, u64> = layer_sizes(layers)?.into_iter().collect();
    let entries = cache.entries()?; // least recently used first
    let mut remove: HashSet<usize> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let too_old = opts
            .older_than
            .is_some_and(|age| e.last_used.saturating_add(age) < now);
        if opts.all || too_old {
            remove.insert(i);
        }
    }
    if let Some(budget) = opts.keep_bytes {
        let kept_bytes = |remove: &HashSet<usize>| -> u64 {
            let live: HashSet<&LayerId> = entries
                .iter()
                .enumerate()
                .filter(|(i, _)| !remove.contains(i))
                .flat_map(|(_, e)| e.result.snapshot.layers.iter())
                .collect();
            live.iter()
                .map(|l| sizes.get(*l).copied().unwrap_or(0))
                .sum()
        };
        for i in 0..entries.len() {
            if kept_bytes(&remove) <= budget {
                break;
            }
            remove.insert(i);
        }
    }
    let mut report = PruneReport::default();
    let mut w = cache.writer()?;
    for i in &remove {
        if let Some(e) = entries.get(*i) {
            if w.remove_result(&e.key)? {
                report.results += 1;
            }
        }
    }
    w.commit()?;
    if opts.all {
        // The context stat cache is only a shortcut; --all leaves nothing behind.
        crate::cache::statcache::clear(cache.meta())?;
    } else {
        crate::cache::statcache::forget_missing(cache.meta())?;
    }

    // Layers: with the exclusive lock no build is running, so a layer no result uses is garbage.
    let live: HashSet<LayerId> = cache
        .entries()?
        .into_iter()
        .flat_map(|e| e.result.snapshot.layers)
        .collect();
    // Records go (committed) before what they point to: a kill midway leaves an
    // unrecorded layer for the next prune, never a record of a missing layer.
    let mut w = cache.writer()?;
    for rec in cache.meta().layers()? {
        if !live.contains(&rec.id) {
            w.remove_layer(&rec.id)?;
        }
    }
    w.commit()?;
    for (id, size) in &sizes {
        if !live.contains(id) {
            layers.remove(id)?;
            report.reclaimed += size;
            report.layers.push(id.clone());
        }
    }
    report.layers.sort();

    // Leftovers of interrupted builds: pending layers (`layers/.tmp/`), the worker's
    // scratch space (`tmp/`) and step sandboxes (`executor/runs/`, with any secrets
    // tmpfs). Nothing is building while the exclusive lock is held. Flattened layer
    // chains (`flat/`) go too: their hard links would keep removed layers' files alive,
    // and a build makes again the ones it needs.
    let runs = crate::executor::ExecutorConfig {
        state_dir: state.root().to_path_buf(),
    }
    .runs_dir();
    for dir in [
        state.layers_dir().join(".tmp"),
        state.root().join("tmp"),
        state.flat_dir(),
        runs,
        // Where they were before steps' scratch moved to a tmpfs.
        state.root().join("executor/runs"),
    ] {
        let (count, bytes) = empty_dir(&dir);
        report.temporaries += count;
        report.reclaimed += bytes;
    }

    // Incremental COPY records of layers that are gone: they could only mean a full copy.
    let layers_dir = state.layers_dir();
    crate::snapshot::steps::StepStore::new(&layers_dir)
        .prune(|id| layers_dir.join(id.as_str()).is_dir());

    // Cache mounts: every one with `all` (no build can hold one under the exclusive lock).
    if opts.all {
        let (count, bytes) = empty_dir(&state.cache_mounts_dir());
        report.cache_mounts += count;
        report.reclaimed += bytes;
    }

    // Downloads of ADD <url>: all with `all`, else what no URL record names.
    if let Ok(http) = crate::ops::source::http_cache::HttpCache::open(state.http_dir()) {
        let (files, bytes) = http.prune(opts.all);
        report.downloads += files;
        report.reclaimed += bytes;
    }

    // Blobs: keep what tags reach and what remaining layer records remember.
    let keep: HashSet<Digest> = cache
        .meta()
        .layers()?
        .into_iter()
        .flat_map(|r| r.blobs.into_iter().map(|b| b.digest))
        .collect();
    let gc = state.content().collect_garbage(lock, &keep)?;
    report.blobs = gc.removed.len();
    report.reclaimed += gc.reclaimed;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::cache::{CacheKey, CacheResult};
    use crate::snapshot::layer::DiffOptions;
    use crate::snapshot::{blobs::export_layer, LayerRecord, Snapshot};

    struct Env {
        _d: tempfile::TempDir,
        state: StateDir,
        cache: CacheStore,
        layers: LayerStore,
    }

    fn env() -> Env {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::open(d.path().join("state")).unwrap();
        let cache = CacheStore::open(&state.meta_db_path()).unwrap();
        let layers = LayerStore::open(state.layers_dir()).unwrap();
        Env {
            _d: d,
            state,
            cache,
            layers,
        }
    }

    /// A layer of `bytes` bytes recorded with a cache result using it (and `extra` layers below).
    fn step(env: &Env, key: u8, bytes: usize, below: &[LayerId], used: u64) -> LayerId {
        let p = env.layers.begin().unwrap();
        fs::write(p.upper().join("data"), vec![key; bytes]).unwrap();
        let id = env.layers.commit(p).unwrap();
        let mut w = env.cache.writer().unwrap();
        w.put_layer(&LayerRecord::new(id.clone()), used).unwrap();
        let mut layers = below.to_vec();
        layers.push(id.clone());
        w.put_result(
            &CacheKey([key; 32]),
            &CacheResult {
                snapshot: Snapshot { layers },
                config: None,
                created_at: used,
                description: format!("step {key}"),
            },
            used,
        )
        .unwrap();
        w.commit().unwrap();
        id
    }

    #[test]
    fn du_splits_shared_and_exclusive_bytes() {
        let env = env();
        let base = step(&env, 1, 1000, &[], 10);
        step(&env, 2, 200, std::slice::from_ref(&base), 20);
        let du = disk_usage(&env.state, &env.cache, &env.layers).unwrap();
        assert_eq!(du.layers_bytes, 1200);
        assert_eq!(du.rows.len(), 2);
        assert_eq!(
            (du.rows[0].exclusive_bytes, du.rows[0].shared_bytes),
            (0, 1000)
        );
        assert_eq!(
            (du.rows[1].exclusive_bytes, du.rows[1].shared_bytes),
            (200, 1000)
        );
    }

    #[test]
    fn cache_mounts_and_downloads_are_counted_and_only_prune_all_removes_mounts() {
        let env = env();
        let mount = env.state.cache_mounts_dir().join("abc");
        fs::create_dir_all(&mount).unwrap();
        fs::write(mount.join("go.sum"), vec![7u8; 300]).unwrap();
        fs::write(env.state.cache_mounts_dir().join("abc.id"), b"go").unwrap();
        fs::create_dir_all(env.state.http_dir()).unwrap();
        fs::write(env.state.http_dir().join("partial"), vec![1u8; 50]).unwrap();
        let du = disk_usage(&env.state, &env.cache, &env.layers).unwrap();
        assert_eq!((du.cache_mounts_bytes, du.downloads_bytes), (302, 50));

        let lock = env.state.lock(LockMode::Exclusive).unwrap();
        let r = prune(
            &env.state,
            &env.cache,
            &env.layers,
            &lock,
            &PruneOptions::default(),
            100,
        )
        .unwrap();
        assert_eq!(r.cache_mounts, 0);
        assert!(
            mount.join("go.sum").exists(),
            "a plain prune keeps cache mounts"
        );
        let all = PruneOptions {
            all: true,
            ..Default::default()
        };
        let r = prune(&env.state, &env.cache, &env.layers, &lock, &all, 100).unwrap();
        assert_eq!(r.cache_mounts, 2);
        assert!(r.reclaimed >= 302);
        assert!(
            env.state.cache_mounts_dir().is_dir(),
            "the directory itself stays"
        );
        let du = disk_usage(&env.state, &env.cache, &env.layers).unwrap();
        assert_eq!(du.cache_mounts_bytes, 0);
    }

    #[test]
    fn prune_by_age_budget_and_all() {
        let env = env();
        let a = step(&env, 1, 1000, &[], 10);
        let b = step(&env, 2, 2000, &[], 20);
        let c = step(&env, 3, 4000, &[], 30);
        // A layer no result uses (an interrupted build) and its exported blob.
        let p = env.layers.begin().unwrap();
        fs::write(p.upper().join("junk"), b"junk").unwrap();
        let junk = env.layers.commit(p).unwrap();
        // Leftovers of a killed build.
        std::mem::forget(env.layers.begin().unwrap());
        fs::create_dir_all(env.state.root().join("tmp/download-1")).unwrap();
        fs::write(env.state.root().join("tmp/download-1/f"), b"partial").unwrap();
        let blob = export_layer(
            &env.layers,
            env.state.content(),
            env.cache.meta(),
            &c,
            &DiffOptions::default(),
        )
        .unwrap();

        let shared = env.state.lock(LockMode::Shared).unwrap();
        assert!(matches!(
            prune(
                &env.state,
                &env.cache,
                &env.layers,
                &shared,
                &PruneOptions::default(),
                100
            ),
            Err(PruneError::NotExclusive)
        ));
        drop(shared);
        let lock = env.state.lock(LockMode::Exclusive).unwrap();

        // Nothing selected: only the orphan layer goes; c's blob is remembered, so it stays.
        let r = prune(
            &env.state,
            &env.cache,
            &env.layers,
            &lock,
            &PruneOptions::default(),
            100,
        )
        .unwrap();
        assert_eq!((r.results, r.layers.clone(), r.blobs), (0, vec![junk], 0));
        assert_eq!(r.temporaries, 2);
        assert_eq!(
            fs::read_dir(env.state.layers_dir().join(".tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            fs::read_dir(env.state.root().join("tmp")).unwrap().count(),
            0
        );
        assert!(env.state.content().exists(&blob.blob.digest).unwrap());

        // Unused for more than 85s at t=100: a (last used 10) goes, b (20) and c (30) stay.
        let opts = PruneOptions {
            older_than: Some(85),
            ..Default::default()
        };
        let r = prune(&env.state, &env.cache, &env.layers, &lock, &opts, 100).unwrap();
        assert_eq!((r.results, r.layers.clone()), (1, vec![a.clone()]));
        assert!(!env.layers.exists(&a) && env.layers.exists(&b));

        // Budget 5000 bytes: b (least recently used) goes, c (4000) fits.
        let opts = PruneOptions {
            keep_bytes: Some(5000),
            ..Default::default()
        };
        let r = prune(&env.state, &env.cache, &env.layers, &lock, &opts, 100).unwrap();
        assert_eq!((r.results, r.layers.clone()), (1, vec![b]));
        assert_eq!(env.cache.entries().unwrap().len(), 1);

        // A context's stat cache entry: only --all drops it.
        let ctx = env.state.root().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("f"), b"f").unwrap();
        let meta = fs::metadata(ctx.join("f")).unwrap();
        let stats = crate::cache::StatCache::begin(env.cache.meta(), &ctx).unwrap();
        stats.record("f", crate::cache::FileStat::of(&meta), [1; 32], None);
        stats.persist().unwrap();
        let remembered = || {
            crate::cache::StatCache::begin(env.cache.meta(), &ctx)
                .unwrap()
                .entry("f")
                .is_some()
        };
        assert!(remembered());

        let r = prune(
            &env.state,
            &env.cache,
            &env.layers,
            &lock,
            &PruneOptions {
                all: true,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        assert_eq!((r.results, r.layers.clone(), r.blobs), (1, vec![c], 1));
        assert!(r.reclaimed >= 4000);
        assert!(env.cache.meta().layers().unwrap().is_empty());
        assert!(env.layers.list().unwrap().is_empty());
        assert!(env.state.content().list_blobs().unwrap().is_empty());
        assert!(!remembered(), "prune --all forgets the stat cache");
    }

    /// Needs root: a mount a killed build left in a pending layer is unmounted
    /// before the pending layer is removed, so nothing is deleted through it.
    #[test]
    fn mounts_left_in_pending_layers_are_unmounted_not_emptied() {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (mounts)"
        );
        let env = env();
        // A layer a cache record uses: prune keeps it.
        let precious = step(&env, 9, 0, &[], 100);
        fs::write(env.layers.path(&precious).join("keep"), "layer data").unwrap();
        let pending = env.layers.begin().unwrap();
        let view = pending.scratch("view");
        fs::create_dir_all(&view).unwrap();
        crate::sysmount::sys_mount(
            Some(&env.layers.path(&precious)),
            &view,
            None,
            libc::MS_BIND,
            None,
        )
        .unwrap();
        // The killed build never dropped it.
        std::mem::forget(pending);
        let tmp = env.state.layers_dir().join(".tmp");
        assert_eq!(crate::sysmount::mounts_under(&tmp).len(), 1);
        let lock = env.state.lock(LockMode::Exclusive).unwrap();
        prune(
            &env.state,
            &env.cache,
            &env.layers,
            &lock,
            &PruneOptions::default(),
            100,
        )
        .unwrap();
        assert!(crate::sysmount::mounts_under(&tmp).is_empty());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(env.layers.path(&precious).join("keep")).unwrap(),
            "layer data"
        );
    }
}
