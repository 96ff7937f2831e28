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
    /// How many sources were read.
    pub loaded: usize,
    /// Sources skipped with `ignore-error=true`, with why.
    pub skipped: Vec<ImportError>,
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
    platform: &Platform,
) -> Result<Imported, ImportError> {
    let mut cache = ImportedCache::default();
    let mut origins = Vec::with_capacity(sources.len());
    let mut repositories = Vec::new();
    let mut skipped = Vec::new();
    let mut has_mounts = false;
    for (index, source) in sources.iter().enumerate() {
        let read = runtime.block_on(read_source(source, store, client, platform));
        match read {
            Ok((config, origin)) => {
                tracing::debug!(source = %source.location.describe(), records = config.kiln.records.len(), blobs = config.kiln.blobs.len(), mounts = config.kiln.mounts.len(), "cache imported");
                has_mounts |= !config.kiln.mounts.is_empty();
                cache.add(index, &config);
                if let Origin::Registry(r) = &origin {
                    repositories.push((index, r.clone()));
                }
                origins.push(Some(origin));
            }
            Err(e) if source.ignore_error => {
                tracing::debug!(error = %e, "cache source skipped");
                skipped.push(e);
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
        loaded: sources.len() - skipped.len(),
        repositories,
        skipped,
    })
}

/// One source's cache config and where its blobs are.
async fn read_source(
    source: &CacheFrom,
    store: &Arc<LocalStore>,
    client: &RegistryClient,
    platform: &Platform,
) -> Result<(CacheConfig, Origin), ImportError> {
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
            let config = read_config(&location, &reader, &root, &fetched.bytes, platform).await?;
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
            let config = read_config(&location, &reader, &root, &bytes, platform).await?;
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

/// The cache config a root leads to: a cache manifest's config; an index listing the
/// cache config; or an image (of an index, the build platform's) whose config carries an
/// inline cache.
async fn read_config(
    location: &str,
    reader: &impl DocReader,
    root: &Descriptor,
    bytes: &[u8],
    platform: &Platform,
) -> Result<CacheConfig, ImportError> {
    let oci = |e: kiln_oci::Error| ImportError::Oci {
        location: location.to_string(),
        source: e,
    };
    let not_cache = |reason: String| ImportError::NotACache {
        location: location.to_string(),
        reason,
    };
    let parse = |what: &str, bytes: &[u8]| {
        CacheConfig::parse(what, bytes).map_err(|e| ImportError::Config {
            location: location.to_string(),
            source: e,
        })
    };
    let (manifest, _) = Manifest::parse(location, bytes, Some(&root.media_type)).map_err(oci)?;
    let image = match manifest {
        Manifest::Image(m) => *m,
        Manifest::Index(idx) => {
            // BuildKit's index form lists the blobs and the config themselves.
            if let Some(c) = idx
                .manifests
                .iter()
                .find(|d| d.media_type == BUILDKIT_CACHE_CONFIG)
            {
                let config = reader.read(c, "cache config").await?;
                return parse(c.digest.as_ref(), &config);
            }
            let d = idx.select(platform).ok_or_else(|| {
                not_cache(format!(
                    "an index without a cache config, and no image for {platform} (it has {})",
                    idx.platforms()
                ))
            })?;
            let child = reader.read(d, "manifest").await?;
            match Manifest::parse(d.digest.as_ref(), &child, Some(&d.media_type))
                .map_err(oci)?
                .0
            {
                Manifest::Image(m) => *m,
                Manifest::Index(_) => return Err(not_cache("nested indexes".into())),
            }
        }
    };
    let config = reader.read(&image.config, "config").await?;
    if image.config.media_type == BUILDKIT_CACHE_CONFIG {
        return parse(image.config.digest.as_ref(), &config);
    }
    inline_config(location, &config).ok_or_else(|| {
        not_cache(format!(
            "an image without an inline cache (its config has no {CONFIG_KEY_INLINE_CACHE}; build it with --cache-to type=inline)"
        ))
    })?
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
