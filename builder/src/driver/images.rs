//! Base images for a build: resolved for the frontend (config and a pinned
//! reference) and fetched for the solver (layer blobs in the content
//! store), from the local store or a registry.

use super::oci_layout::{self, LayoutRef};
use crate::local_store::LocalStore;
use kiln_frontend::lower::{ImageResolver, ResolvedImage};
use kiln_oci::config::ImageConfig;
use kiln_oci::{Descriptor, ImageManifest, Manifest, Platform};
use kiln_oci::{Digest, Reference};
use kiln_registry::progress::NoProgress;
use kiln_registry::pull::pull_image;
use kiln_registry::store::BlobStore;
use kiln_registry::RegistryClient;
use kiln_solver::scheduler::{BoxError, WorkerError};
use kiln_solver::worker::{FetchedImage, ImageFetcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Resolves and fetches images for one build.
pub struct BuildImages {
    store: Arc<LocalStore>,
    client: RegistryClient,
    runtime: tokio::runtime::Handle,
    /// `--pull`: always ask the registry for tags, even when the store has them.
    pull: bool,
    concurrency: usize,
    /// Manifests seen, by pinned reference.
    manifests: Mutex<HashMap<String, ImageManifest>>,
    /// Resolutions done, by (reference as written, platform).
    resolved: Mutex<HashMap<(String, String), ResolvedImage>>,
    /// Tags resolved at the registry, by pinned reference: stored once the image is
    /// fetched, so later builds use it until `--pull` (as `docker pull` would leave it).
    tags: Mutex<HashMap<String, (Reference, Descriptor)>>,
    /// Becomes true when the build is canceled: fetches in progress stop.
    canceled: tokio::sync::watch::Sender<bool>,
    /// Fetches running on the runtime from a step's thread: the runtime must outlive them
    /// (a download polled after its timers shut down panics).
    fetching: std::sync::atomic::AtomicUsize,
}

fn registry_platform(p: &kiln_oci::Platform) -> Platform {
    Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        os_version: None,
        os_features: None,
        variant: p.variant.clone(),
    }
    .normalized()
}

/// Refuses an image whose config declares another platform than the one wanted (as
/// containerd does for a single manifest): building on it would give a wrong-architecture image.
fn check_platform(what: &str, config: &ImageConfig, want: &Platform) -> Result<(), String> {
    let have = Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        ..Default::default()
    };
    if want.matches(&have) {
        Ok(())
    } else {
        Err(format!(
            "{what}: no image for platform {want} (it is a single image for {})",
            have.normalized()
        ))
    }
}

impl BuildImages {
    /// A resolver over the local store and registry client.
    pub fn new(
        store: Arc<LocalStore>,
        client: RegistryClient,
        runtime: tokio::runtime::Handle,
        pull: bool,
        concurrency: usize,
    ) -> BuildImages {
        BuildImages {
            store,
            client,
            runtime,
            pull,
            concurrency,
            manifests: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            tags: Mutex::new(HashMap::new()),
            canceled: tokio::sync::watch::Sender::new(false),
            fetching: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Waits, at most `timeout`, until no fetch runs any more: called after a cancel and
    /// before the runtime shuts down.
    pub fn wait_for_fetches(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.fetching.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Completes once the build is canceled.
    async fn until_canceled(&self) {
        let mut rx = self.canceled.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|c| *c).await;
    }

    fn remember(&self, pinned: &str, m: &ImageManifest) {
        if let Ok(mut map) = self.manifests.lock() {
            map.insert(pinned.to_string(), m.clone());
        }
    }

    fn remembered(&self, pinned: &str) -> Option<ImageManifest> {
        self.manifests
            .lock()
            .ok()
            .and_then(|m| m.get(pinned).cloned())
    }

    /// The platform's manifest of a local tag: `None` when the store has no such tag,
    /// `Err` (saying which platforms it has) when the tag has none for this platform.
    fn local(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Option<Result<(Descriptor, ImageManifest), String>> {
        let image = self.store.find(&r.to_string()).ok()?;
        let all = self.store.platform_manifests(&image.descriptor).ok()?;
        let have = crate::local_store::platforms_of(&all);
        Some(
            all.into_iter()
                .find(|(d, _)| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .ok_or_else(|| format!("the local image is for {have}")),
        )
    }

    /// The platform's manifest from the registry, and the tag's root (the index, or
    /// the manifest itself); both are stored locally.
    async fn remote(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<(Descriptor, ImageManifest, Descriptor), BoxError> {
        let what = r.to_string();
        let fetched = self.client.get_manifest(r).await?;
        let (manifest, media_type) =
            Manifest::parse(&what, &fetched.bytes, fetched.content_type.as_deref())?;
        let root = Descriptor::of(&media_type, &fetched.bytes);
        let (desc, bytes, m) = match manifest {
            Manifest::Image(m) => (root.clone(), fetched.bytes, *m),
            Manifest::Index(idx) => {
                self.store.write_blob(&root.digest, &fetched.bytes)?;
                let d = idx.select(platform).cloned().ok_or_else(|| {
                    format!(
                        "no image for platform {platform} in the index (it has {})",
                        idx.platforms()
                    )
                })?;
                let child = self.client.get_manifest_as(r, d.digest.as_ref()).await?;
                match Manifest::parse(
                    &format!("{}@{}", r.name(), d.digest),
                    &child.bytes,
                    Some(&d.media_type),
                )?
                .0
                {
                    Manifest::Image(m) => (d, child.bytes, *m),
                    Manifest::Index(_) => return Err("nested indexes are not supported".into()),
                }
            }
        };
        self.store.write_blob(&desc.digest, &bytes)?;
        Ok((desc, m, root))
    }

    /// An image of a local OCI layout (`oci-layout://PATH[:TAG|@DIGEST]`): the manifest
    /// and config land in the store now, the layers when the solver fetches them.
    fn resolve_layout(
        &self,
        location: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, BoxError> {
        let layout = LayoutRef::parse(location)?.canonical()?;
        let (desc, bytes, m) = layout.select(platform)?;
        self.store.write_blob(&desc.digest, &bytes)?;
        layout.import_blob(&self.store, &m.config)?;
        let config_bytes = self.store.read_blob(&m.config.digest)?;
        let config = ImageConfig::from_json(&config_bytes)
            .map_err(|e| format!("image config {}: {e}", m.config.digest))?;
        if desc.platform.is_none() {
            check_platform(
                &format!("{}{location}", oci_layout::SCHEME),
                &config,
                platform,
            )?;
        }
        let pinned = LayoutRef::pinned(&layout.path, &desc.digest);
        self.remember(&pinned, &m);
        Ok(ResolvedImage {
            reference: pinned,
            config,
        })
    }

    async fn config_of(&self, r: &Reference, m: &ImageManifest) -> Result<ImageConfig, BoxError> {
        if !self.store.has_blob(&m.config.digest) {
            kiln_registry::pull::pull_blob(
                &self.client,
                r,
                self.store.as_ref(),
                &m.config,
                &NoProgress,
            )
            .await?;
        }
        let bytes = self.store.read_blob(&m.config.digest)?;
        Ok(ImageConfig::from_json(&bytes)
            .map_err(|e| format!("image config {}: {e}", m.config.digest))?)
    }
}

/// The frontend's view of [`BuildImages`] (the trait wants `&mut self`; the
/// resolver itself is shared with the solver).
pub struct Resolver(pub Arc<BuildImages>);

impl std::ops::Deref for Resolver {
    type Target = BuildImages;
    fn deref(&self) -> &BuildImages {
        &self.0
    }
}

impl ImageResolver for Resolver {
    fn resolve(
        &mut self,
        reference: &str,
        platform: &kiln_oci::Platform,
    ) -> Result<ResolvedImage, BoxError> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(done) = self.resolved.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(done);
        }
        let want = registry_platform(platform);
        if let Some(location) = reference.strip_prefix(oci_layout::SCHEME) {
            let resolved = self.resolve_layout(location, &want)?;
            if let Ok(mut map) = self.resolved.lock() {
                map.insert(key, resolved.clone());
            }
            return Ok(resolved);
        }
        let r = Reference::parse(reference)?;
        let runtime = self.runtime.clone();
        runtime.block_on(async {
            // A digest reference is immutable: the store's copy is as good as the registry's.
            let local = if !self.pull || r.digest().is_some() {
                self.local(&r, &want)
            } else {
                None
            };
            let (desc, m, root) = match local {
                Some(Ok((desc, m))) => (desc, m, None),
                // The store holds another platform only: as with --pull, ask the registry.
                Some(Err(why)) => {
                    let (desc, m, root) = self.remote(&r, &want).await.map_err(|e| {
                        format!(
                            "no image for platform {want}: {why}, and the registry has none ({e})"
                        )
                    })?;
                    (desc, m, Some(root))
                }
                None => {
                    let (desc, m, root) = self.remote(&r, &want).await?;
                    (desc, m, Some(root))
                }
            };
            tracing::debug!(
                reference,
                platform = %platform,
                digest = %desc.digest,
                from = if root.is_some() { "registry" } else { "local store" },
                "base image resolved"
            );
            let config = self.config_of(&r, &m).await?;
            // A single manifest (no index) names its platform only in its config.
            if desc.platform.is_none() {
                check_platform(&r.to_string(), &config, &want)?;
            }
            let pinned = format!("{}@{}", r.name(), desc.digest);
            if let (Some(root), None) = (root, r.digest()) {
                if let Ok(mut tags) = self.tags.lock() {
                    tags.insert(pinned.clone(), (r.clone(), root));
                }
            }
            self.remember(&pinned, &m);
            let resolved = ResolvedImage {
                reference: pinned,
                config,
            };
            if let Ok(mut map) = self.resolved.lock() {
                map.insert(key, resolved.clone());
            }
            Ok(resolved)
        })
    }
}

impl ImageFetcher for BuildImages {
    fn cancel(&self) {
        self.canceled.send_replace(true);
    }

    fn fetch(
        &self,
        reference: &str,
        _platform: Option<&kiln_oci::Platform>,
    ) -> Result<FetchedImage, WorkerError> {
        self.fetch_image(reference).map_err(|e| {
            if *self.canceled.borrow() {
                WorkerError::Canceled
            } else {
                WorkerError::image_fetch(e)
            }
        })
    }
}

impl BuildImages {
    /// [`ImageFetcher::fetch`], failing with the cause (a registry error, say).
    fn fetch_image(&self, reference: &str) -> Result<FetchedImage, BoxError> {
        if let Some(location) = reference.strip_prefix(oci_layout::SCHEME) {
            return self.fetch_layout(reference, location);
        }
        let r = Reference::parse(reference)?;
        let digest: Digest = r
            .digest()
            .cloned()
            .ok_or_else(|| format!("{reference}: an image source must be pinned by digest"))?;
        let m = match self.remembered(reference) {
            Some(m) => m,
            None => {
                let bytes = self.store.read_blob(&digest)?;
                match Manifest::parse(reference, &bytes, None)?.0 {
                    Manifest::Image(m) => *m,
                    Manifest::Index(_) => {
                        return Err(format!("{reference} is an index, not an image").into())
                    }
                }
            }
        };
        // A canceled build drops the pull: blobs land under their digest only
        // once complete, so what it leaves is garbage for GC, never a bad blob.
        self.fetching
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pulled = self.runtime.block_on(async {
            // The cancel first: once it is set, the download is not polled again.
            tokio::select! {
                biased;
                () = self.until_canceled() => Err("canceled".into()),
                pulled = pull_image(
                    &self.client,
                    &r,
                    self.store.as_ref(),
                    &m,
                    self.concurrency,
                    &NoProgress,
                ) => pulled.map_err(BoxError::from),
            }
        });
        self.fetching
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        pulled?;
        let tag = self.tags.lock().ok().and_then(|mut t| t.remove(reference));
        if let Some((name, root)) = tag {
            self.store.tag(&name, &root)?;
        }
        self.fetched_layers(reference, &m)
    }

    /// The layers of a layout image pinned by `oci-layout://PATH@DIGEST`, copied into the store.
    fn fetch_layout(&self, reference: &str, location: &str) -> Result<FetchedImage, BoxError> {
        let layout = LayoutRef::parse(location)?;
        let digest = layout
            .digest
            .clone()
            .ok_or_else(|| format!("{reference}: an image source must be pinned by digest"))?;
        let m = match self.remembered(reference) {
            Some(m) => m,
            None => match Manifest::parse(reference, &self.store.read_blob(&digest)?, None)?.0 {
                Manifest::Image(m) => *m,
                Manifest::Index(_) => {
                    return Err(format!("{reference} is an index, not an image").into())
                }
            },
        };
        for l in std::iter::once(&m.config).chain(&m.layers) {
            if *self.canceled.borrow() {
                return Err("canceled".into());
            }
            layout.import_blob(&self.store, l)?;
        }
        self.fetched_layers(reference, &m)
    }

    /// Pairs the manifest's layer blobs (in the store) with the config's diffIDs.
    fn fetched_layers(&self, reference: &str, m: &ImageManifest) -> Result<FetchedImage, BoxError> {
        let config_bytes = self.store.read_blob(&m.config.digest)?;
        let config = ImageConfig::from_json(&config_bytes)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(format!(
                "{reference}: the config lists {} layers but the manifest has {}",
                config.rootfs.diff_ids.len(),
                m.layers.len()
            )
            .into());
        }
        let mut layers = Vec::new();
        for (d, diff) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            let diff_id: kiln_oci::Digest =
                diff.parse().map_err(|_| format!("bad diffID {diff}"))?;
            layers.push((d.clone(), diff_id));
        }
        Ok(FetchedImage { layers })
    }
}
