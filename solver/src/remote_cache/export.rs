//! Export: solved results → a cache image in the content store (blobs, config, manifest or
//! index). Moving it to a registry or a layout is the builder's job.
//!
//! SKELETON (lead): the API is fixed; the bodies are being written (issue 14).

use kiln_oci::Descriptor;

use super::format::{CacheConfig, SelectionChecksum};
use super::RemoteCacheError;
use crate::cache::{CacheKey, KeyParts};
use crate::content::ContentStore;
use crate::meta::MetaDb;
use crate::mounts::cache::CacheMounts;
use crate::snapshot::layer::Compression;
use crate::snapshot::layers::LayerStore;
use crate::snapshot::Snapshot;

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
pub fn export_cache(
    stores: &ExportStores<'_>,
    records: &[ExportRecord],
    finals: &[Snapshot],
    opts: &ExportOptions,
) -> Result<CacheImage, RemoteCacheError> {
    let _ = (stores, records, finals, opts);
    Err(RemoteCacheError::BadConfig {
        digest: String::new(),
        reason: "export is not written yet".into(),
    })
}

/// The config of an inline cache (`--cache-to type=inline`): the records of `records` whose
/// layers are a prefix of `image`'s (min mode), their blobs being the image's own
/// `layers` (blob descriptor and diffID, bottom first, as the image manifest lists them).
pub fn inline_config(
    records: &[ExportRecord],
    image: &Snapshot,
    layers: &[(Descriptor, kiln_oci::Digest)],
) -> CacheConfig {
    let _ = (records, image, layers);
    CacheConfig::new(super::format::KilnCache {
        version: super::format::FORMAT_VERSION,
        blobs: Vec::new(),
        records: Vec::new(),
        mounts: Vec::new(),
    })
}
