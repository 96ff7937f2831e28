//! `--cache-from`: each source's cache config read before the solve (its manifest and
//! config only, each verified by digest), and the [`BlobFetcher`] that brings a layer of
//! the imported cache into the content store when the solve or an exporter needs it.

use std::sync::Arc;

use base64::Engine as _;
use kiln_oci::config::ImageConfig;
use kiln_oci::layout::LayoutDir;
use kiln_oci::media_type::{BUILDKIT_CACHE_CONFIG, CONFIG_KEY_INLINE_CACHE};
use kiln_oci::store::{read_verified, verifying, ImageSink, ImageSource, MAX_DOCUMENT_SIZE};
use kiln_oci::{Descriptor, Manifest, Platform, Reference};
use kiln_registry::progress::NoProgress;
use kiln_registry::store::BlobStore;
use kiln_registry::RegistryClient;
use kiln_solver::remote_cache::{BlobFetcher, CacheConfig, ImportedCache, RemoteCacheError};
use thiserror::Error;

use super::spec::{CacheFrom, CacheLocation};
use crate::local_store::LocalStore;

/// Why a `--cache-from` source could not be read.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The registry refused or could not be reached.
    #[error("--cache-from {location}: the cache cannot be read")]
    Registry {
        /// The source.
        location: String,
        /// The registry's error (with its status).
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// The layout, a manifest or a blob is missing, too large or does not match its digest.
    #[error("--cache-from {location}: the cache cannot be read")]
    Oci {
        /// The source.
        location: String,
        /// Why.
        #[source]
        source: kiln_oci::Error,
    },
    /// The source holds an image or artifact that is no cache.
    #[error("--cache-from {location}: not a build cache: {reason}")]
    NotACache {
        /// The source.
        location: String,
        /// What it holds instead.
        reason: String,
    },
    /// The cache config cannot be read (another format version, bad positions).
    #[error("--cache-from {location}: the cache cannot be read")]
    Config {
        /// The source.
        location: String,
        /// Why.
        #[source]
        source: RemoteCacheError,
    },
}

impl ImportError {
    /// Whether the source holds a cache of another format version: skipped with a warning
    /// even without `ignore-error` (a miss, not damage).
    pub fn is_other_version(&self) -> bool {
        matches!(
            self,
            ImportError::Config {
                source: RemoteCacheError::OtherVersion { .. },
                ..
            }
        )
    }

    /// The registry's HTTP status, when a registry answered.
    pub fn registry(&self) -> Option<&kiln_registry::Error> {
        match self {
            ImportError::Registry { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Where an imported source's blobs are read.
#[derive(Clone)]
enum Origin {
    /// A registry repository (the cache image's, or the image's for an inline cache).
    Registry(Reference),
    /// A layout directory.
    Layout(LayoutDir),
}

/// Every `--cache-from` source that could be read, merged.
pub struct Imported {
    /// The records, by key.
    pub cache: ImportedCache,
    /// Brings their blobs into the content store.
    pub fetcher: Arc<CacheFetcher>,
    /// Whether a source carries cache-mount contents.
    pub has_mounts: bool,
    /// The registry repositories read (source index, reference): an export to the same
    /// repository need not check their blobs again, one on the same registry mounts them.
    pub repositories: Vec<(usize, Reference)>,
    /// The layout directories read (source index, canonical path): an export to the same
    /// directory need not have their blobs here.
    pub layouts: Vec<(usize, std::path::PathBuf)>,
    /// How many sources were read.
    pub loaded: usize,
    /// Each source, in order: what it is called and, when it was skipped with
    /// `ignore-error=true`, why.
    pub outcomes: Vec<(String, Option<ImportError>)>,
}

/// Fetches blobs of the imported sources; blocking (it is called from step threads).
pub struct CacheFetcher {
    store: Arc<LocalStore>,
    client: RegistryClient,
    runtime: tokio::runtime::Handle,
    /// Each source's origin, by source index (`None`: not imported).
    origins: Vec<Option<Origin>>,
}

impl BlobFetcher for CacheFetcher {
    fn fetch(
        &self,
        source: usize,
        desc: &Descriptor,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.store.has_blob(&desc.digest) {
            return Ok(());
        }
        match self.origins.get(source).and_then(Option::as_ref) {
            None => Err(format!("no --cache-from source #{source}").into()),
            Some(Origin::Registry(r)) => {
                self.runtime.block_on(kiln_registry::pull::pull_blob(
                    &self.client,
                    r,
                    self.store.as_ref(),
                    desc,
                    &NoProgress,
                ))?;
                Ok(())
            }
            Some(Origin::Layout(layout)) => {
                let mut data = verifying(ImageSource::open_blob(layout, desc)?, desc, "cache blob");
                self.store.content.write_blob(desc, &mut data)?;
                Ok(())
            }
        }
    }
}

/// Reads every `--cache-from` source: the first source holding a key wins. A source that
/// cannot be read fails the build, or with `ignore-error=true` is skipped (in `skipped`).
pub fn import(
    sources: &[CacheFrom],
    store: &Arc<LocalStore>,
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    platforms: &[Platform],
) -> Result<Imported, ImportError> {
    let mut cache = ImportedCache::default();
    let mut origins = Vec::with_capacity(sources.len());
    let mut repositories = Vec::new();
    let mut layouts = Vec::new();
    let mut outcomes = Vec::new();
    let mut has_mounts = false;
    for (index, source) in sources.iter().enumerate() {
        let read = runtime.block_on(read_source(source, store, client, platforms));
        match read {
            Ok((configs, origin)) => {
                for config in &configs {
                    tracing::debug!(source = %source.location.describe(), records = config.kiln.records.len(), blobs = config.kiln.blobs.len(), mounts = config.kiln.mounts.len(), "cache imported");
                    has_mounts |= !config.kiln.mounts.is_empty();
                    cache.add(index, config);
                }
                match &origin {
                    Origin::Registry(r) => repositories.push((index, r.clone())),
                    Origin::Layout(l) => {
                        let dir = std::fs::canonicalize(l.root()).unwrap_or(l.root().into());
                        layouts.push((index, dir));
                    }
                }
                origins.push(Some(origin));
                outcomes.push((source.location.describe(), None));
            }
            Err(e) if source.ignore_error || e.is_other_version() => {
                tracing::debug!(error = %e, "cache source skipped");
                outcomes.push((source.location.describe(), Some(e)));
                origins.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Imported {
        cache,
        fetcher: Arc::new(CacheFetcher {
            store: Arc::clone(store),
            client: client.clone(),
            runtime: runtime.clone(),
            origins,
        }),
        has_mounts,
        loaded: outcomes.iter().filter(|(_, e)| e.is_none()).count(),
        repositories,
        layouts,
        outcomes,
    })
}

/// One source's cache configs (several: an image index's inline caches, one per platform)
/// and where its blobs are.
async fn read_source(
    source: &CacheFrom,
    store: &Arc<LocalStore>,
    client: &RegistryClient,
    platforms: &[Platform],
) -> Result<(Vec<CacheConfig>, Origin), ImportError> {
    let location = source.location.describe();
    match &source.location {
        CacheLocation::Registry(r) => {
            let reg = |e: kiln_registry::Error| ImportError::Registry {
                location: location.clone(),
                source: Box::new(e),
            };
            let fetched = client.get_manifest(r).await.map_err(reg)?;
            let root = root_descriptor(&location, &fetched.bytes, fetched.content_type.as_deref())?;
            let reader = RegistryReader { client, r, store };
            let config = read_config(&location, &reader, &root, &fetched.bytes, platforms).await?;
            Ok((config, Origin::Registry(r.clone())))
        }
        CacheLocation::Local { dir, tag, digest } => {
            let oci = |e: kiln_oci::Error| ImportError::Oci {
                location: location.clone(),
                source: e,
            };
            let layout = LayoutDir::open(dir).map_err(oci)?;
            let root = match digest {
                Some(d) => layout
                    .images()
                    .map_err(oci)?
                    .into_iter()
                    .map(|i| i.root)
                    .find(|root| &root.digest == d)
                    .ok_or_else(|| {
                        oci(kiln_oci::Error::Missing {
                            digest: d.clone(),
                            what: format!("cache in {}", dir.display()),
                        })
                    })?,
                None => layout.resolve(tag).map_err(oci)?,
            };
            let bytes = read_verified(&layout, &root, "cache manifest").map_err(oci)?;
            let reader = LayoutReader(&layout);
            let config = read_config(&location, &reader, &root, &bytes, platforms).await?;
            Ok((config, Origin::Layout(layout)))
        }
        CacheLocation::Inline => Err(ImportError::NotACache {
            location,
            reason: "type=inline cannot be imported".into(),
        }),
    }
}

/// The descriptor of a fetched root manifest.
fn root_descriptor(
    location: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Descriptor, ImportError> {
    let (_, media_type) =
        Manifest::parse(location, bytes, content_type).map_err(|e| ImportError::Oci {
            location: location.to_string(),
            source: e,
        })?;
    Ok(Descriptor::of(&media_type, bytes))
}

/// Reads the small documents of a source (manifests, configs), verified.
trait DocReader {
    async fn read(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImportError>;
}

struct RegistryReader<'a> {
    client: &'a RegistryClient,
    r: &'a Reference,
    store: &'a Arc<LocalStore>,
}

impl DocReader for RegistryReader<'_> {
    async fn read(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImportError> {
        let location = self.r.to_string();
        if desc.size > MAX_DOCUMENT_SIZE {
            return Err(ImportError::Oci {
                location,
                source: kiln_oci::Error::TooLarge {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    size: desc.size,
                    limit: MAX_DOCUMENT_SIZE,
                },
            });
        }
        let reg = |e: kiln_registry::Error| ImportError::Registry {
            location: location.clone(),
            source: Box::new(e),
        };
        if kiln_oci::walk::may_refer(desc) {
            let m = self
                .client
                .get_manifest_as(self.r, desc.digest.as_ref())
                .await
                .map_err(reg)?;
            return Ok(m.bytes);
        }
        // Through the store: the download is verified before it lands there.
        kiln_registry::pull::pull_blob(self.client, self.r, self.store.as_ref(), desc, &NoProgress)
            .await
            .map_err(reg)?;
        let source = kiln_registry::store::Blobs(self.store.as_ref());
        read_verified(&source, desc, what).map_err(|e| ImportError::Oci {
            location: location.clone(),
            source: e,
        })
    }
}

struct LayoutReader<'a>(&'a LayoutDir);

impl DocReader for LayoutReader<'_> {
    async fn read(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImportError> {
        read_verified(self.0, desc, what).map_err(|e| ImportError::Oci {
            location: self.0.root().display().to_string(),
            source: e,
        })
    }
}

/// The cache configs a root leads to: a cache manifest's config; an index listing the
/// cache config; or an image (of an index, each build platform's) whose config carries an
/// inline cache.
async fn read_config(
    location: &str,
    reader: &impl DocReader,
    root: &Descriptor,
    bytes: &[u8],
    platforms: &[Platform],
) -> Result<Vec<CacheConfig>, ImportError> {
    let oci = |e: kiln_oci::Error| ImportError::Oci {
        location: location.to_string(),
        source: e,
    };
    let not_cache = |reason: String| ImportError::NotACache {
        location: location.to_string(),
        reason,
    };
    let (manifest, _) = Manifest::parse(location, bytes, Some(&root.media_type)).map_err(oci)?;
    let images = match manifest {
        Manifest::Image(m) => vec![*m],
        Manifest::Index(idx) => {
            // BuildKit's index form lists the blobs and the config themselves.
            if let Some(c) = idx
                .manifests
                .iter()
                .find(|d| d.media_type == BUILDKIT_CACHE_CONFIG)
            {
                let config = reader.read(c, "cache config").await?;
                return Ok(vec![parse_config(location, c.digest.as_ref(), &config)?]);
            }
            let mut chosen: Vec<&Descriptor> = Vec::new();
            for p in platforms {
                if let Some(d) = idx.select(p) {
                    if !chosen.iter().any(|c| c.digest == d.digest) {
                        chosen.push(d);
                    }
                }
            }
            if chosen.is_empty() {
                let wanted: Vec<String> = platforms.iter().map(ToString::to_string).collect();
                return Err(not_cache(format!(
                    "an index without a cache config, and no image for {} (it has {})",
                    wanted.join(", "),
                    idx.platforms()
                )));
            }
            let mut images = Vec::with_capacity(chosen.len());
            for d in chosen {
                let child = reader.read(d, "manifest").await?;
                match Manifest::parse(d.digest.as_ref(), &child, Some(&d.media_type))
                    .map_err(oci)?
                    .0
                {
                    Manifest::Image(m) => images.push(*m),
                    Manifest::Index(_) => return Err(not_cache("nested indexes".into())),
                }
            }
            images
        }
    };
    let mut configs = Vec::with_capacity(images.len());
    for image in images {
        let config = reader.read(&image.config, "config").await?;
        if image.config.media_type == BUILDKIT_CACHE_CONFIG {
            configs.push(parse_config(
                location,
                image.config.digest.as_ref(),
                &config,
            )?);
        } else if let Some(inline) = inline_config(location, &config) {
            configs.push(inline?);
        }
    }
    if configs.is_empty() {
        return Err(not_cache(format!(
            "an image without an inline cache (its config has no {CONFIG_KEY_INLINE_CACHE}; build it with --cache-to type=inline)"
        )));
    }
    Ok(configs)
}

/// A cache config blob, parsed.
fn parse_config(location: &str, what: &str, bytes: &[u8]) -> Result<CacheConfig, ImportError> {
    CacheConfig::parse(what, bytes).map_err(|e| ImportError::Config {
        location: location.to_string(),
        source: e,
    })
}

/// The inline cache of an image config (`moby.buildkit.cache.v0`: base64 of the JSON);
/// `None` when it has none.
fn inline_config(location: &str, config: &[u8]) -> Option<Result<CacheConfig, ImportError>> {
    let image = ImageConfig::from_json(config).ok()?;
    let value = image.extra.get(CONFIG_KEY_INLINE_CACHE)?.as_str()?;
    let bytes = match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(b) => b,
        Err(e) => {
            return Some(Err(ImportError::NotACache {
                location: location.to_string(),
                reason: format!("{CONFIG_KEY_INLINE_CACHE} is not base64: {e}"),
            }))
        }
    };
    Some(
        CacheConfig::parse(&format!("{location} (inline)"), &bytes).map_err(|e| {
            ImportError::Config {
                location: location.to_string(),
                source: e,
            }
        }),
    )
}
