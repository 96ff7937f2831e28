//! From a solved snapshot and the lowered config to an image in the content
//! store: layer blobs (made once, remembered), the config with its
//! rootfs and history made consistent, and the manifest.

use crate::driver::assemble::{
    layer_descriptor, write_image, ImageError, ImageLayer, ManifestOptions,
};
use kiln_oci::config::{History, ImageConfig};
use kiln_oci::{Descriptor, Digest};
use kiln_solver::cache::CacheStore;
use kiln_solver::content::ContentStore;
use kiln_solver::snapshot::blobs::{export_layer, BlobError};
use kiln_solver::snapshot::layer::{Compression, DiffOptions};
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::{LayerId, Snapshot};
use std::collections::BTreeMap;
use thiserror::Error;

/// Why an image could not be exported.
#[derive(Debug, Error)]
pub enum ExportError {
    /// A layer blob could not be made.
    #[error("exporting layer: {0}")]
    Blob(#[from] BlobError),
    /// The manifest could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A digest or descriptor could not be formed.
    #[error("exporting image: {0}")]
    Spec(String),
}

/// How layers and the manifest are written (`compression=`, `oci-mediatypes=`, ...).
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Layer compression for layers the build made (base layers keep their blobs).
    pub compression: Compression,
    /// Compression level.
    pub level: Option<i32>,
    /// Recompress base layers too (`force-compression=true`).
    pub force_compression: bool,
    /// Docker media types (`oci-mediatypes=false`).
    pub docker_media_types: bool,
    /// Clamp file times in new layers (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<u64>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The stores an export reads and writes.
pub struct ExportStores<'a> {
    /// Unpacked layers.
    pub layers: &'a LayerStore,
    /// Blobs.
    pub content: &'a ContentStore,
    /// Layer records.
    pub cache: &'a CacheStore,
    /// Blobs of lazily imported layers that need not be here (the image is only pushed to a
    /// registry that mounts them); a layer without its directory or blob is listed with its
    /// imported blob when that blob is one of these.
    pub remote_blobs: Option<&'a std::collections::BTreeSet<Digest>>,
}

/// An image written into the content store.
#[derive(Debug, Clone)]
pub struct ExportedImage {
    /// The manifest's descriptor (platform set).
    pub manifest: Descriptor,
    /// The config as written.
    pub config: ImageConfig,
    /// The config blob's digest (the image ID).
    pub config_digest: Digest,
}

/// Config keys made from the image's layers (blob and diffID, bottom first).
pub type ConfigKeys<'a> =
    &'a dyn Fn(&[(Descriptor, Digest)]) -> BTreeMap<String, serde_json::Value>;

/// Writes the image of `snapshot` with `config` (its history as lowered), the config getting
/// the keys `keys` makes from the image's layers (the inline cache, which names the image's
/// own blobs).
pub fn export_image(
    stores: &ExportStores<'_>,
    snapshot: &Snapshot,
    mut config: ImageConfig,
    opts: &ExportOptions,
    keys: ConfigKeys<'_>,
) -> Result<ExportedImage, ExportError> {
    let plans = snapshot
        .layers
        .iter()
        .map(|id| plan_layer(stores, id, opts))
        .collect::<Result<Vec<_>, BlobError>>()?;
    let layers = export_layers(stores, plans)?;
    reconcile_history(&mut config.history, &layers);
    let kept: Vec<ImageLayer> = layers.into_iter().flatten().collect();
    config.rootfs.diff_ids = kept.iter().map(|l| l.diff_id.to_string()).collect();
    let pairs: Vec<(Descriptor, Digest)> = kept
        .iter()
        .map(|l| (l.blob.clone(), l.diff_id.clone()))
        .collect();
    config.extra.extend(keys(&pairs));
    let manifest_opts = ManifestOptions {
        docker_media_types: opts.docker_media_types,
        annotations: opts.annotations.clone(),
    };
    let platform =
        kiln_oci::Platform::new(&config.os, &config.architecture, config.variant.as_deref());
    let json = serde_json::to_vec(&config).map_err(|e| ExportError::Spec(e.to_string()))?;
    let (manifest, config_digest) =
        write_image(stores.content, &json, platform, &kept, &manifest_opts)?;
    tracing::debug!(manifest = %manifest.digest, config = %config_digest, layers = kept.len(), "image exported");
    Ok(ExportedImage {
        manifest,
        config,
        config_digest,
    })
}

/// How one layer of the image is listed: a lazily imported layer as its remote blob, else
/// exported with these options.
enum LayerPlan<'a> {
    Remote(Box<ImageLayer>),
    Export(&'a LayerId, DiffOptions),
}

fn plan_layer<'a>(
    stores: &ExportStores<'_>,
    id: &'a LayerId,
    opts: &ExportOptions,
) -> Result<LayerPlan<'a>, BlobError> {
    let built = id.as_str().starts_with("b-");
    // A base layer keeps the blob it came with unless recompression is forced.
    let compression = match (
        built || opts.force_compression,
        stores.cache.meta().layer(id)?,
    ) {
        (false, Some(rec)) => rec
            .blobs
            .first()
            .map_or(opts.compression, |b| b.compression),
        _ => opts.compression,
    };
    if let Some(layer) = remote_layer(stores, id, compression)? {
        return Ok(LayerPlan::Remote(Box::new(layer)));
    }
    Ok(LayerPlan::Export(
        id,
        DiffOptions {
            compression,
            level: opts.level,
            // Base layers keep their bytes (and so their diffIDs).
            source_date_epoch: if built { opts.source_date_epoch } else { None },
        },
    ))
}

/// Layers exported at once, at most this many: most of a small layer's export is waiting on
/// its fsyncs, which overlap (an image of hundreds of RUN steps has hundreds of layers).
const PARALLEL_EXPORTS: usize = 4;

/// The image's layers, bottom first. Several layers are exported at once on plain threads
/// (not rayon's pool: each export's parallel gzip waits on chunks it queues there).
fn export_layers(
    stores: &ExportStores<'_>,
    plans: Vec<LayerPlan<'_>>,
) -> Result<Vec<Option<ImageLayer>>, BlobError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // Each worker takes the next plan until none is left or one failed.
    let work = || {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(plan) = plans.get(i) else { break };
            let layer = match plan {
                LayerPlan::Remote(layer) => Ok(ImageLayer::clone(layer)),
                LayerPlan::Export(id, diff) => export_one(stores, id, diff),
            };
            failed.fetch_or(layer.is_err(), Ordering::Relaxed);
            done.push((i, layer));
        }
        done
    };
    let mut done = std::thread::scope(|s| {
        let others: Vec<_> = (1..PARALLEL_EXPORTS.min(plans.len()))
            .map(|_| s.spawn(work))
            .collect();
        let mut all = work();
        for h in others {
            // A worker cannot panic short of a bug; its layers are then missing and the
            // export fails below rather than listing a partial image.
            all.extend(h.join().unwrap_or_default());
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    let layers = done
        .into_iter()
        .map(|(_, layer)| layer.map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    if layers.len() != plans.len() {
        return Err(BlobError::Layer(
            kiln_solver::snapshot::layer::LayerError::Io {
                op: "export",
                path: std::path::PathBuf::new(),
                source: std::io::Error::other("a layer export thread stopped"),
            },
        ));
    }
    Ok(layers)
}

/// One built or pulled layer's blob and diffID. A step that changed nothing still gets its
/// (empty) layer, as in BuildKit's images.
fn export_one(
    stores: &ExportStores<'_>,
    id: &LayerId,
    diff: &DiffOptions,
) -> Result<ImageLayer, BlobError> {
    let exported = export_layer(stores.layers, stores.content, stores.cache.meta(), id, diff)?;
    tracing::debug!(layer = %id.as_str(), blob = %exported.blob.digest, size = exported.blob.size, compression = ?exported.blob.compression, diff_id = %exported.diff_id, "layer exported");
    let blob = layer_descriptor(
        exported.blob.digest.clone(),
        exported.blob.size,
        exported.blob.compression,
    );
    Ok(ImageLayer {
        diff_id: exported.diff_id,
        blob,
    })
}

/// A lazily imported layer (no directory here) listed with its imported blob of
/// `compression`, when that blob is one of `stores.remote_blobs` and not in the store.
fn remote_layer(
    stores: &ExportStores<'_>,
    id: &LayerId,
    compression: Compression,
) -> Result<Option<ImageLayer>, BlobError> {
    let Some(remote) = stores.remote_blobs else {
        return Ok(None);
    };
    if stores.layers.exists(id) {
        return Ok(None);
    }
    let Some(rec) = stores.cache.meta().layer(id)? else {
        return Ok(None);
    };
    let (Some(diff_id), Some(b)) = (&rec.diff_id, rec.blob(compression)) else {
        return Ok(None);
    };
    if !remote.contains(&b.digest) || stores.content.exists(&b.digest)? {
        return Ok(None);
    }
    Ok(Some(ImageLayer {
        diff_id: diff_id.clone(),
        blob: layer_descriptor(b.digest.clone(), b.size, b.compression),
    }))
}

/// Makes history agree with the layers: each entry that made a layer takes
/// the next one; an entry whose layer turned out empty (and was dropped)
/// becomes `empty_layer`; layers without an entry get one.
fn reconcile_history(history: &mut Vec<History>, layers: &[Option<ImageLayer>]) {
    let mut next = layers.iter();
    for h in history.iter_mut().filter(|h| !h.empty_layer) {
        match next.next() {
            Some(Some(_)) => {}
            Some(None) => h.empty_layer = true,
            None => break,
        }
    }
    for layer in next {
        if layer.is_some() {
            history.push(History {
                created_by: "kiln: layer without history".to_string(),
                extra: BTreeMap::new(),
                ..History::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::snapshot::LayerRecord;

    fn entry(empty: bool) -> History {
        History {
            created_by: String::new(),
            empty_layer: empty,
            ..Default::default()
        }
    }

    #[test]
    fn empty_layers_are_kept_as_buildkit_keeps_them() {
        let d = tempfile::tempdir().unwrap();
        let content = ContentStore::open(d.path().join("content")).unwrap();
        let layers = LayerStore::open(d.path().join("layers")).unwrap();
        let cache = CacheStore::open(&d.path().join("meta.redb")).unwrap();
        let mut ids = Vec::new();
        for files in [&["a"][..], &[][..], &["b"][..]] {
            let p = layers.begin().unwrap();
            for f in files {
                std::fs::write(p.upper().join(f), f).unwrap();
            }
            let id = layers.commit(p).unwrap();
            let mut w = cache.writer().unwrap();
            w.put_layer(&LayerRecord::new(id.clone()), 1).unwrap();
            w.commit().unwrap();
            ids.push(id);
        }
        let snapshot = Snapshot { layers: ids };
        let mut config = ImageConfig::scratch("linux", "amd64", None);
        config.history = vec![entry(false), entry(true), entry(false), entry(false)];
        let stores = ExportStores {
            layers: &layers,
            content: &content,
            cache: &cache,
            remote_blobs: None,
        };
        let img = export_image(
            &stores,
            &snapshot,
            config.clone(),
            &ExportOptions::default(),
            &|_| BTreeMap::new(),
        )
        .unwrap();
        // The middle step changed nothing: its empty layer stays, as in BuildKit.
        assert_eq!(img.config.rootfs.diff_ids.len(), 3);
        assert_eq!(
            img.config.rootfs.diff_ids[1],
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
            "the diffID of an empty tar"
        );
        let flags: Vec<bool> = img.config.history.iter().map(|h| h.empty_layer).collect();
        assert_eq!(flags, [false, true, false, false]);
        // The same export again reuses the blobs: same manifest.
        let again = export_image(
            &stores,
            &snapshot,
            config,
            &ExportOptions::default(),
            &|_| BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(again.config_digest, img.config_digest);
    }
}
