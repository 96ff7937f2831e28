//! Export: solved results → a cache image in the content store (blobs, config, manifest or
//! index). Moving it to a registry or a layout is the builder's job.
//!
//! The same records and layers always give the same bytes (records sorted by key, blobs in
//! the order the records first name them, times taken from the local cache records), so
//! re-exporting an unchanged cache gives the same manifest digest.

use std::collections::{BTreeMap, HashMap};

use kiln_oci::media_type::{BUILDKIT_CACHE_CONFIG, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest};

use super::format::{
    CacheBlob, CacheConfig, CacheMountRecord, CacheRecord, KilnCache, SelectionChecksum,
    FORMAT_VERSION,
};
use super::import::blob_descriptor;
use super::RemoteCacheError;
use crate::cache::{CacheKey, KeyParts};
use crate::content::ContentStore;
use crate::meta::MetaDb;
use crate::mounts::cache::CacheMounts;
use crate::snapshot::blobs::export_layer;
use crate::snapshot::layer::{Compression, DiffOptions};
use crate::snapshot::layers::LayerStore;
use crate::snapshot::{LayerId, Snapshot};

/// `mode=`: which results are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The results whose layers are the final image's (BuildKit's default).
    #[default]
    Min,
    /// Every result of the build, other stages included.
    Max,
}

/// How the cache image is written (`--cache-to` attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// `mode=`.
    pub mode: CacheMode,
    /// `compression=` for layers that get a blob now.
    pub compression: Compression,
    /// `compression-level=`.
    pub level: Option<i32>,
    /// `force-compression=true`: every layer in `compression`, even ones pulled in another.
    pub force_compression: bool,
    /// `image-manifest=true` (default): an image manifest whose config is the cache config;
    /// false: an index listing the blobs and the config.
    pub image_manifest: bool,
    /// `oci-mediatypes=true` (default); false: Docker media types where they exist.
    pub oci_media_types: bool,
    /// `cache-mounts=true`: the contents of these cache mounts (by id) travel too.
    pub cache_mounts: Vec<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            mode: CacheMode::Min,
            compression: Compression::Gzip,
            level: None,
            force_compression: false,
            image_manifest: true,
            oci_media_types: true,
            cache_mounts: Vec::new(),
        }
    }
}

/// One solved step offered for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// Its cache key.
    pub key: CacheKey,
    /// Its result.
    pub snapshot: Snapshot,
    /// The vertex description.
    pub description: String,
    /// What the key was made of.
    pub parts: Option<KeyParts>,
    /// Checksums later steps took of this result.
    pub checksums: Vec<SelectionChecksum>,
}

/// The stores an export reads.
pub struct ExportStores<'a> {
    /// Unpacked layers.
    pub layers: &'a LayerStore,
    /// Blobs (the cache image is written here).
    pub content: &'a ContentStore,
    /// Layer records.
    pub meta: &'a MetaDb,
    /// Cache-mount directories.
    pub mounts: Option<&'a CacheMounts>,
}

/// A cache image written into the content store.
#[derive(Debug, Clone)]
pub struct CacheImage {
    /// Its root: the image manifest, or the index.
    pub root: Descriptor,
    /// The config as written.
    pub config: CacheConfig,
    /// Every blob the root reaches (layers and config), each once.
    pub blobs: Vec<Descriptor>,
}

/// Writes the cache of `records` (filtered by `opts.mode` against `finals`, the snapshots
/// the build exports) into the content store.
///
/// A layer imported lazily from another cache (no directory here) is listed with the blob
/// it was imported as, which need not be in the content store: the builder does not upload
/// what [`crate::worker::LocalWorker::imported_blobs`] lists to the registry it came from, and
/// calls [`crate::worker::LocalWorker::fetch_lazy_blobs`] first when it writes elsewhere.
pub fn export_cache(
    stores: &ExportStores<'_>,
    records: &[ExportRecord],
    finals: &[Snapshot],
    opts: &ExportOptions,
) -> Result<CacheImage, RemoteCacheError> {
    if opts.image_manifest && !opts.oci_media_types {
        return Err(RemoteCacheError::ImageManifestNeedsOci);
    }
    let kept = select_records(records, finals, opts.mode);
    let mut blobs = BlobList::default();
    let mut out_records = Vec::with_capacity(kept.len());
    for r in kept {
        let mut layers = Vec::with_capacity(r.snapshot.layers.len());
        for id in &r.snapshot.layers {
            layers.push(blobs.layer(stores, id, opts)?);
        }
        let created_at = stores
            .meta
            .cache_result(&r.key)?
            .map_or(0, |c| c.created_at);
        out_records.push(CacheRecord {
            key: r.key,
            layers,
            description: r.description.clone(),
            created_at,
            checksums: r.checksums.clone(),
            parts: r.parts.clone(),
        });
    }
    let mut mounts = Vec::new();
    if let Some(cache_mounts) = stores.mounts {
        let mut ids = opts.cache_mounts.clone();
        ids.sort();
        ids.dedup();
        for id in ids {
            let blob = super::mounts::export_mount(
                cache_mounts,
                &id,
                stores.content,
                opts.compression,
                opts.level,
            )?;
            if let Some(mut blob) = blob {
                // The mount's blob is labelled as the layers are (Docker types on request).
                if !opts.oci_media_types {
                    if let Some(c) = Compression::from_media_type(&blob.media_type) {
                        blob.media_type = c.docker_media_type().to_string();
                    }
                }
                mounts.push(CacheMountRecord {
                    id,
                    blob: blobs.push(blob),
                });
            }
        }
    }
    let config = CacheConfig::new(KilnCache {
        version: FORMAT_VERSION,
        blobs: blobs.list,
        records: out_records,
        mounts,
    });
    write_cache_image(stores.content, config, opts)
}

/// The records `mode` exports, each key once, sorted by key.
fn select_records<'r>(
    records: &'r [ExportRecord],
    finals: &[Snapshot],
    mode: CacheMode,
) -> Vec<&'r ExportRecord> {
    let mut by_key: BTreeMap<CacheKey, &ExportRecord> = BTreeMap::new();
    for r in records {
        let wanted = match mode {
            CacheMode::Max => true,
            CacheMode::Min => finals
                .iter()
                .any(|f| f.layers.starts_with(&r.snapshot.layers)),
        };
        if wanted {
            by_key.entry(r.key).or_insert(r);
        }
    }
    by_key.into_values().collect()
}

/// The cache's blobs, each once, by position.
#[derive(Default)]
struct BlobList {
    list: Vec<CacheBlob>,
    by_digest: HashMap<Digest, usize>,
    by_layer: HashMap<LayerId, usize>,
}

impl BlobList {
    /// The position of `blob`, added when new.
    fn push(&mut self, blob: CacheBlob) -> usize {
        if let Some(i) = self.by_digest.get(&blob.digest) {
            return *i;
        }
        let i = self.list.len();
        self.by_digest.insert(blob.digest.clone(), i);
        self.list.push(blob);
        i
    }

    /// The position of layer `id`'s blob, made (or found) at its first use.
    fn layer(
        &mut self,
        stores: &ExportStores<'_>,
        id: &LayerId,
        opts: &ExportOptions,
    ) -> Result<usize, RemoteCacheError> {
        if let Some(i) = self.by_layer.get(id) {
            return Ok(*i);
        }
        let blob = layer_blob(stores, id, opts)?;
        let i = self.push(blob);
        self.by_layer.insert(id.clone(), i);
        Ok(i)
    }
}

/// The blob of one layer, compressed as the image exporter would: a layer a build made in
/// `opts.compression`, a layer that came as a blob (a base image's, an imported cache's)
/// keeping the blob it came with unless `force_compression`.
fn layer_blob(
    stores: &ExportStores<'_>,
    id: &LayerId,
    opts: &ExportOptions,
) -> Result<CacheBlob, RemoteCacheError> {
    let record = stores.meta.layer(id)?;
    let built = id.as_str().starts_with("b-");
    let compression = match (&record, built || opts.force_compression) {
        (Some(r), false) => r.blobs.first().map_or(opts.compression, |b| b.compression),
        _ => opts.compression,
    };
    let media_type = |c: Compression| {
        if opts.oci_media_types {
            c.oci_media_type()
        } else {
            c.docker_media_type()
        }
        .to_string()
    };
    // A lazily imported layer has no directory: it is exported as the blob it came as;
    // in another compression, from its files, unpacked from that blob if it was fetched.
    if let (false, Some(r)) = (stores.layers.exists(id), &record) {
        if let Some(diff_id) = &r.diff_id {
            if let Some(b) = r.blob(compression) {
                return Ok(CacheBlob {
                    digest: b.digest.clone(),
                    size: b.size,
                    media_type: media_type(b.compression),
                    diff_id: diff_id.clone(),
                });
            }
            if LayerId::for_diff_id(diff_id) == *id {
                for b in &r.blobs {
                    if stores.content.exists(&b.digest)? {
                        stores
                            .layers
                            .unpack(stores.content, &b.digest, diff_id)
                            .map_err(crate::snapshot::blobs::BlobError::from)?;
                        break;
                    }
                }
            }
        }
    }
    let diff = DiffOptions {
        compression,
        level: opts.level,
        source_date_epoch: None,
    };
    let exported = export_layer(stores.layers, stores.content, stores.meta, id, &diff)?;
    Ok(CacheBlob {
        digest: exported.blob.digest,
        size: exported.blob.size,
        media_type: media_type(exported.blob.compression),
        diff_id: exported.diff_id,
    })
}

/// Writes the config and the root (manifest or index) over the config's blobs.
fn write_cache_image(
    content: &ContentStore,
    config: CacheConfig,
    opts: &ExportOptions,
) -> Result<CacheImage, RemoteCacheError> {
    let info = content.put_bytes(&config.to_bytes())?;
    let config_desc = Descriptor::new(BUILDKIT_CACHE_CONFIG, info.digest, info.size);
    let layers: Vec<Descriptor> = config.kiln.blobs.iter().map(blob_descriptor).collect();
    let root = if opts.image_manifest {
        let manifest = ImageManifest::new(OCI_MANIFEST, config_desc.clone(), layers.clone());
        content.put_json(OCI_MANIFEST, &manifest)?
    } else {
        // BuildKit's older shape: an index listing the layer blobs, then the config.
        let index_type = if opts.oci_media_types {
            OCI_INDEX
        } else {
            DOCKER_MANIFEST_LIST
        };
        let mut entries = layers.clone();
        entries.push(config_desc.clone());
        content.put_json(index_type, &ImageIndex::new(index_type, entries))?
    };
    let mut blobs = layers;
    blobs.push(config_desc);
    Ok(CacheImage {
        root,
        config,
        blobs,
    })
}

/// The config of an inline cache (`--cache-to type=inline`): the records of `records` whose
/// layers are a prefix of `image`'s (min mode), their blobs being the image's own
/// `layers` (blob descriptor and diffID, bottom first, as the image manifest lists them).
/// Records carry no creation time (0): the image config's bytes depend on nothing else.
pub fn inline_config(
    records: &[ExportRecord],
    image: &Snapshot,
    layers: &[(Descriptor, kiln_oci::Digest)],
) -> CacheConfig {
    let blobs: Vec<CacheBlob> = layers
        .iter()
        .map(|(d, diff_id)| CacheBlob {
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
            diff_id: diff_id.clone(),
        })
        .collect();
    let records = select_records(records, std::slice::from_ref(image), CacheMode::Min)
        .into_iter()
        // Only layers the image manifest lists can be named.
        .filter(|r| r.snapshot.layers.len() <= blobs.len())
        .map(|r| CacheRecord {
            key: r.key,
            layers: (0..r.snapshot.layers.len()).collect(),
            description: r.description.clone(),
            created_at: 0,
            checksums: r.checksums.clone(),
            parts: r.parts.clone(),
        })
        .collect();
    CacheConfig::new(KilnCache {
        version: FORMAT_VERSION,
        blobs,
        records,
        mounts: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
