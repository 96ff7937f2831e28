//! An invariant checker of images (go-containerregistry's `validate`), used by tests as an
//! oracle after builds, pulls, copies and loads: every blob is there with its descriptor's
//! digest and size, media types agree, configs parse and list one diff_id per layer, each
//! diff_id is the digest of the uncompressed layer, and indexes name each platform once, the
//! platform their image's config declares. It reports every problem, not the first.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read};

use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::{Digest, HashingReader};
use crate::error::Error;
use crate::manifest::{ImageIndex, ImageManifest, Manifest};
use crate::media_type as mt;
use crate::platform::Platform;
use crate::store::{io_to_error, read_verified, verifying, ImageSource};
use crate::walk::{may_refer, Partial};

/// How far [`validate`] goes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether an index's images the source does not hold (a pull of one platform) are
    /// skipped or are problems.
    pub partial: Partial,
    /// The most bytes one layer may decompress to (a decompression bomb stops here).
    pub max_uncompressed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            partial: Partial::Refuse,
            max_uncompressed: 64 << 30,
        }
    }
}

/// What a successful [`validate`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Indexes checked.
    pub indexes: usize,
    /// Image manifests checked.
    pub images: usize,
    /// Layers decompressed and hashed.
    pub layers: usize,
    /// An index's images the source does not hold, skipped under [`Partial::SkipMissingImages`].
    pub skipped: Vec<Digest>,
}

/// One broken invariant. Each names the digest of the blob at fault.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A descriptor points at a blob the source does not hold.
    #[error("{what} {digest} is missing")]
    Missing {
        /// What it is (`config of sha256:…`, `layer 2 of sha256:…`, `index entry`).
        what: String,
        /// The missing blob.
        digest: Digest,
    },
    /// A blob could not be read, or its content does not match its descriptor's digest or size.
    #[error("{what} {digest} is corrupt")]
    Corrupt {
        /// What it is.
        what: String,
        /// The blob.
        digest: Digest,
        /// The verification or read failure.
        #[source]
        source: Error,
    },
    /// A manifest, index or config does not parse.
    #[error("{what} {digest} does not parse: {reason}")]
    Unparsable {
        /// What it is.
        what: String,
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// A media type that does not belong where it is (a Docker layer in an OCI manifest,
    /// zstd in a Docker manifest, a descriptor whose type is not its document's).
    #[error("{what} {digest} has media type {found:?}: {reason}")]
    MediaType {
        /// What it is.
        what: String,
        /// The blob.
        digest: Digest,
        /// Its media type.
        found: String,
        /// What was expected.
        reason: String,
    },
    /// The config's `rootfs.type` is not `layers`.
    #[error("config {config} has rootfs type {found:?}, not \"layers\"")]
    RootFsType {
        /// The config.
        config: Digest,
        /// Its rootfs type.
        found: String,
    },
    /// The config lists a different number of diff_ids than the manifest has layers.
    #[error(
        "manifest {manifest} has {layers} layers but its config {config} lists {diff_ids} diff_ids"
    )]
    DiffIdCount {
        /// The manifest.
        manifest: Digest,
        /// Its config.
        config: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A layer's uncompressed content does not hash to the config's diff_id for it.
    #[error("layer {index} {layer}: config {config} says diff_id {expected}, the uncompressed layer is {actual}")]
    DiffId {
        /// The layer's position in the manifest.
        index: usize,
        /// The layer blob.
        layer: Digest,
        /// The config.
        config: Digest,
        /// The config's diff_id (as written).
        expected: String,
        /// The digest of the uncompressed layer.
        actual: Digest,
    },
    /// A layer decompresses to more than [`Options::max_uncompressed`] bytes.
    #[error("layer {layer} decompresses to more than {limit} bytes")]
    TooLarge {
        /// The layer blob.
        layer: Digest,
        /// The limit.
        limit: u64,
    },
    /// The history's entries that made a layer are not one per layer (Docker and BuildKit
    /// pair them up).
    #[error("config {config} has {non_empty} history entries with a layer, but the image has {layers} layers")]
    History {
        /// The config.
        config: Digest,
        /// History entries without `empty_layer`.
        non_empty: usize,
        /// Layers.
        layers: usize,
    },
    /// Two entries of an index name the same platform.
    #[error("index {index} lists platform {platform} more than once")]
    DuplicatePlatform {
        /// The index.
        index: Digest,
        /// The platform (normalised).
        platform: Platform,
    },
    /// An index entry's platform is not the one its image's config declares.
    #[error("index {index} lists manifest {manifest} as {entry}, but its config says {}", config.as_ref().map_or("no platform".to_string(), |p| p.to_string()))]
    PlatformMismatch {
        /// The index.
        index: Digest,
        /// The entry.
        manifest: Digest,
        /// The entry's platform (normalised).
        entry: Platform,
        /// The config's platform (normalised), if it declares one.
        config: Option<Platform>,
    },
    /// Indexes nested deeper than real images nest.
    #[error("index {index} nests indexes more than {MAX_DEPTH} deep")]
    TooDeep {
        /// The innermost index reached.
        index: Digest,
    },
}

/// Every problem [`validate`] found.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
            let mut source = std::error::Error::source(p);
            while let Some(s) = source {
                write!(f, ": {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Checks the image or index `root` of `source` and everything it refers to, collecting every
/// broken invariant.
pub fn validate(
    source: &dyn ImageSource,
    root: &Descriptor,
    options: Options,
) -> Result<Report, Problems> {
    let mut v = Validator {
        source,
        options,
        report: Report::default(),
        problems: Vec::new(),
        seen: HashSet::new(),
    };
    v.document(root, "root", 0);
    if v.problems.is_empty() {
        Ok(v.report)
    } else {
        Err(Problems(v.problems))
    }
}

/// Nesting deeper than this (an index of indexes of …) is refused, as the walk refuses it.
const MAX_DEPTH: usize = 8;

struct Validator<'a> {
    source: &'a dyn ImageSource,
    options: Options,
    report: Report,
    problems: Vec<Problem>,
    /// Manifests and indexes already checked (an image listed twice is checked once).
    seen: HashSet<Digest>,
}

impl Validator<'_> {
    /// Checks a manifest or index; returns the image's config when `desc` is an image whose
    /// config could be read (for the index's platform check).
    fn document(&mut self, desc: &Descriptor, what: &str, depth: usize) -> Option<ImageConfig> {
        let bytes = self.read_document(desc, what)?;
        let parsed = Manifest::parse(desc.digest.as_ref(), &bytes, Some(&desc.media_type));
        let (manifest, declared) = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.problems.push(Problem::Unparsable {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    reason: e.to_string(),
                });
                return None;
            }
        };
        if declared != desc.media_type {
            self.media_type(
                what,
                &desc.digest,
                &desc.media_type,
                format!("the document says it is {declared}"),
            );
        }
        let first = self.seen.insert(desc.digest.clone());
        match manifest {
            Manifest::Index(index) => {
                if first {
                    self.index(desc, &declared, &index, depth);
                }
                None
            }
            Manifest::Image(image) if first => self.image(desc, &declared, &image),
            Manifest::Image(image) => self.read_config(&image.config),
        }
    }

    /// A manifest or index, verified, or `None` after recording why not.
    fn read_document(&mut self, desc: &Descriptor, what: &str) -> Option<Vec<u8>> {
        if !self.present(desc, what) {
            return None;
        }
        match read_verified(self.source, desc, what) {
            Ok(b) => Some(b),
            Err(source) => {
                self.problems.push(Problem::Corrupt {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    source,
                });
                None
            }
        }
    }

    /// Whether the source holds `desc`'s blob; records it missing when not.
    fn present(&mut self, desc: &Descriptor, what: &str) -> bool {
        match self.source.has_blob(&desc.digest) {
            Ok(true) => true,
            Ok(false) => {
                self.problems.push(Problem::Missing {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                });
                false
            }
            Err(source) => {
                self.problems.push(Problem::Corrupt {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    source,
                });
                false
            }
        }
    }

    fn media_type(&mut self, what: &str, digest: &Digest, found: &str, reason: String) {
        self.problems.push(Problem::MediaType {
            what: what.to_string(),
            digest: digest.clone(),
            found: found.to_string(),
            reason,
        });
    }

    /// An index: its entries, each checked, platforms unique and as each config declares.
    /// `media_type` is the index's own (what the document says).
    fn index(&mut self, desc: &Descriptor, media_type: &str, index: &ImageIndex, depth: usize) {
        self.report.indexes += 1;
        if depth >= MAX_DEPTH {
            self.problems.push(Problem::TooDeep {
                index: desc.digest.clone(),
            });
            return;
        }
        let docker = media_type == mt::DOCKER_MANIFEST_LIST;
        // BuildKit's older cache shape: an index of the cache's layer blobs and its config.
        if let Some(config) = index
            .manifests
            .iter()
            .find(|d| d.media_type == mt::BUILDKIT_CACHE_CONFIG)
        {
            let layers: Vec<Descriptor> = index
                .manifests
                .iter()
                .filter(|d| d.media_type != mt::BUILDKIT_CACHE_CONFIG)
                .cloned()
                .collect();
            self.cache_blobs(desc, docker, config, &layers);
            return;
        }
        let mut platforms: HashMap<Platform, Digest> = HashMap::new();
        for (i, entry) in index.manifests.iter().enumerate() {
            let what = format!("entry {i} of index {}", desc.digest);
            if !may_refer(entry) {
                self.media_type(
                    &what,
                    &entry.digest,
                    &entry.media_type,
                    "an index lists manifests and indexes".to_string(),
                );
                continue;
            }
            // An OCI index may list Docker manifests (buildx's imagetools create makes one
            // from mixed sources); a Docker manifest list holds Docker manifests only.
            if docker && !entry.media_type.starts_with("application/vnd.docker.") {
                self.media_type(
                    &what,
                    &entry.digest,
                    &entry.media_type,
                    format!("{media_type} lists Docker manifests only"),
                );
            }
            if let Some(p) = &entry.platform {
                let key = p.key();
                let attestation = key.os == "unknown" && key.architecture == "unknown";
                if !attestation
                    && platforms
                        .insert(key.clone(), entry.digest.clone())
                        .is_some()
                {
                    self.problems.push(Problem::DuplicatePlatform {
                        index: desc.digest.clone(),
                        platform: key,
                    });
                }
            }
            if self.options.partial == Partial::SkipMissingImages
                && matches!(self.source.has_blob(&entry.digest), Ok(false))
            {
                self.report.skipped.push(entry.digest.clone());
                continue;
            }
            let checked = self.document(entry, &what, depth + 1);
            if let (Some(want), Some(config)) = (&entry.platform, checked) {
                self.platform(desc, entry, want, &config);
            }
        }
    }

    /// The entry's platform is the one its config declares.
    fn platform(
        &mut self,
        index: &Descriptor,
        entry: &Descriptor,
        want: &Platform,
        config: &ImageConfig,
    ) {
        let declared = (!config.os.is_empty() && !config.architecture.is_empty()).then(|| {
            Platform::new(&config.os, &config.architecture, config.variant.as_deref()).key()
        });
        if declared.as_ref() != Some(&want.key()) {
            self.problems.push(Problem::PlatformMismatch {
                index: index.digest.clone(),
                manifest: entry.digest.clone(),
                entry: want.key(),
                config: declared,
            });
        }
    }

    /// An image manifest: media types, config, layers and their diff_ids, history. Returns
    /// its config when it could be read. `media_type` is the manifest's own (what the
    /// document says).
    fn image(
        &mut self,
        desc: &Descriptor,
        media_type: &str,
        image: &ImageManifest,
    ) -> Option<ImageConfig> {
        self.report.images += 1;
        let docker = media_type == mt::DOCKER_MANIFEST;
        if image.config.media_type == mt::BUILDKIT_CACHE_CONFIG {
            self.cache_blobs(desc, docker, &image.config, &image.layers);
            return None;
        }
        // Artifacts (OCI 1.1) carry any config and layers: only their blobs are checked.
        let artifact = image.artifact_type.is_some();
        let config_what = format!("config of {}", desc.digest);
        let want_config = if docker {
            mt::DOCKER_CONFIG
        } else {
            mt::OCI_CONFIG
        };
        if !artifact && image.config.media_type != want_config {
            self.media_type(
                &config_what,
                &image.config.digest,
                &image.config.media_type,
                format!("{media_type} needs {want_config}"),
            );
        }
        for (i, layer) in image.layers.iter().enumerate() {
            if let Some(reason) = layer_media_type_problem(docker, &layer.media_type) {
                if !artifact {
                    let what = format!("layer {i} of {}", desc.digest);
                    self.media_type(&what, &layer.digest, &layer.media_type, reason);
                }
            }
        }
        let config = self.config(desc, image, &config_what, artifact);
        let diff_ids: Vec<Option<Digest>> = self.layers(desc, image);
        if let Some(c) = &config {
            self.check_diff_ids(image, c, &diff_ids);
        }
        config
    }

    /// A build cache image (BuildKit's shape): its config is present and verified, and each
    /// layer blob decompresses to the diff_id its `containerd.io/uncompressed` annotation
    /// gives (a cache config lists no rootfs).
    fn cache_blobs(
        &mut self,
        desc: &Descriptor,
        docker: bool,
        config: &Descriptor,
        layers: &[Descriptor],
    ) {
        let _ = self.read_document(config, &format!("cache config of {}", desc.digest));
        for (i, layer) in layers.iter().enumerate() {
            let what = format!("layer {i} of {}", desc.digest);
            if let Some(reason) = layer_media_type_problem(docker, &layer.media_type) {
                self.media_type(&what, &layer.digest, &layer.media_type, reason);
            }
            if !self.present(layer, &what) {
                continue;
            }
            match diff_id(self.source, layer, &what, self.options.max_uncompressed) {
                Ok(actual) => {
                    self.report.layers += 1;
                    let expected = layer.annotation(mt::ANNOTATION_UNCOMPRESSED);
                    if let Some(expected) = expected.filter(|e| *e != actual.as_ref()) {
                        self.problems.push(Problem::DiffId {
                            index: i,
                            layer: layer.digest.clone(),
                            config: config.digest.clone(),
                            expected: expected.to_string(),
                            actual,
                        });
                    }
                }
                Err(p) => self.problems.push(*p),
            }
        }
    }

    /// The config: present, verified, parsed; its rootfs and history agree with the layers.
    fn config(
        &mut self,
        desc: &Descriptor,
        image: &ImageManifest,
        what: &str,
        artifact: bool,
    ) -> Option<ImageConfig> {
        let bytes = self.read_document(&image.config, what)?;
        if artifact {
            return None;
        }
        let config = match ImageConfig::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                self.problems.push(Problem::Unparsable {
                    what: what.to_string(),
                    digest: image.config.digest.clone(),
                    reason: e.to_string(),
                });
                return None;
            }
        };
        let digest = &image.config.digest;
        if config.rootfs.kind != "layers" {
            self.problems.push(Problem::RootFsType {
                config: digest.clone(),
                found: config.rootfs.kind.clone(),
            });
        }
        if config.rootfs.diff_ids.len() != image.layers.len() {
            self.problems.push(Problem::DiffIdCount {
                manifest: desc.digest.clone(),
                config: digest.clone(),
                layers: image.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        // History is optional (OCI); when present, Docker and BuildKit pair its non-empty
        // entries with the layers.
        let non_empty = config.history.iter().filter(|h| !h.empty_layer).count();
        if !config.history.is_empty() && non_empty != image.layers.len() {
            self.problems.push(Problem::History {
                config: digest.clone(),
                non_empty,
                layers: image.layers.len(),
            });
        }
        Some(config)
    }

    /// Reads a config without checking it again (an image seen before, for its platform).
    fn read_config(&mut self, desc: &Descriptor) -> Option<ImageConfig> {
        let bytes = read_verified(self.source, desc, "config").ok()?;
        ImageConfig::from_json(&bytes).ok()
    }

    /// Every layer: present, verified, decompressed and hashed. Returns each layer's diff_id
    /// (`None` where it could not be computed: the problem is recorded).
    fn layers(&mut self, desc: &Descriptor, image: &ImageManifest) -> Vec<Option<Digest>> {
        let mut out = Vec::with_capacity(image.layers.len());
        for (i, layer) in image.layers.iter().enumerate() {
            let what = format!("layer {i} of {}", desc.digest);
            // A foreign layer is fetched from its URLs, not copied: it may be absent.
            if mt::is_foreign_layer(&layer.media_type)
                && matches!(self.source.has_blob(&layer.digest), Ok(false))
            {
                out.push(None);
                continue;
            }
            if !self.present(layer, &what) {
                out.push(None);
                continue;
            }
            match diff_id(self.source, layer, &what, self.options.max_uncompressed) {
                Ok(d) => {
                    self.report.layers += 1;
                    out.push(Some(d));
                }
                Err(p) => {
                    self.problems.push(*p);
                    out.push(None);
                }
            }
        }
        out
    }

    fn check_diff_ids(
        &mut self,
        image: &ImageManifest,
        config: &ImageConfig,
        computed: &[Option<Digest>],
    ) {
        let pairs = image
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .zip(computed);
        for (i, ((layer, expected), actual)) in pairs.enumerate() {
            let Some(actual) = actual else { continue };
            if expected != actual.as_ref() {
                self.problems.push(Problem::DiffId {
                    index: i,
                    layer: layer.digest.clone(),
                    config: image.config.digest.clone(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
        }
    }
}

/// Why a layer of `media_type` does not belong in an OCI (`docker` false) or Docker manifest.
fn layer_media_type_problem(docker: bool, media_type: &str) -> Option<String> {
    let ok = if docker {
        [
            mt::DOCKER_LAYER_GZIP,
            mt::DOCKER_LAYER_TAR,
            mt::DOCKER_FOREIGN_LAYER_GZIP,
        ]
        .contains(&media_type)
    } else {
        [mt::OCI_LAYER_GZIP, mt::OCI_LAYER_ZSTD, mt::OCI_LAYER_TAR].contains(&media_type)
            || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
            // BuildKit's attestation manifests hold in-toto statements as layers.
            || media_type == "application/vnd.in-toto+json"
    };
    (!ok).then(|| {
        if docker && media_type.contains("zstd") {
            "zstd layers need an OCI manifest".to_string()
        } else if docker {
            "a Docker manifest needs Docker layer media types".to_string()
        } else {
            "an OCI manifest needs OCI layer media types".to_string()
        }
    })
}

/// How a layer is compressed, by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    None,
}

fn compression(media_type: &str) -> Compression {
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        Compression::Gzip
    } else if media_type.ends_with("+zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The digest of `layer`'s uncompressed content, reading the blob once and verifying it
/// against its descriptor (to its end, past whatever the decompressor leaves unread).
fn diff_id(
    source: &dyn ImageSource,
    layer: &Descriptor,
    what: &str,
    limit: u64,
) -> Result<Digest, Box<Problem>> {
    let corrupt = |source: Error| {
        Box::new(Problem::Corrupt {
            what: what.to_string(),
            digest: layer.digest.clone(),
            source,
        })
    };
    let blob = source.open_blob(layer).map_err(corrupt)?;
    let mut compressed = verifying(blob, layer, what);
    let decompressed = uncompressed_digest(&mut compressed, compression(&layer.media_type), limit);
    // Drain what the decompressor left so the blob's digest and size are checked: a
    // verification failure explains a decompression error too, so it comes first.
    let drained = io::copy(&mut compressed, &mut io::sink());
    if let Err(e) = drained {
        return Err(corrupt(io_to_error(e, &format!("reading {what}"))));
    }
    match decompressed {
        Ok((_, n)) if n > limit => Err(Box::new(Problem::TooLarge {
            layer: layer.digest.clone(),
            limit,
        })),
        Ok((digest, _)) => Ok(digest),
        Err(e) => Err(corrupt(io_to_error(e, &format!("decompressing {what}")))),
    }
}

/// The digest and size of what `compressed` decompresses to, reading at most `limit + 1`
/// uncompressed bytes.
fn uncompressed_digest(
    compressed: &mut dyn Read,
    compression: Compression,
    limit: u64,
) -> io::Result<(Digest, u64)> {
    let reader: Box<dyn Read + '_> = match compression {
        // Go's gzip reader (what Docker and BuildKit use) reads concatenated members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(compressed)?),
        Compression::None => Box::new(compressed),
    };
    let mut hashing = HashingReader::new(reader.take(limit.saturating_add(1)));
    io::copy(&mut hashing, &mut io::sink())?;
    let (_, digest, n) = hashing.finish();
    Ok((digest, n))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Write;

    use serde_json::{json, Value};

    use super::*;

    /// A source of blobs in memory, tags unused.
    #[derive(Default)]
    struct Mem {
        blobs: RefCell<HashMap<Digest, Vec<u8>>>,
    }

    impl Mem {
        fn put(&self, bytes: &[u8]) -> Digest {
            let d = Digest::of(bytes);
            self.blobs.borrow_mut().insert(d.clone(), bytes.to_vec());
            d
        }
        fn remove(&self, d: &Digest) {
            self.blobs.borrow_mut().remove(d);
        }
        /// Stores `bytes` under `d`, whatever they hash to (a corrupt store).
        fn replace(&self, d: &Digest, bytes: &[u8]) {
            self.blobs.borrow_mut().insert(d.clone(), bytes.to_vec());
        }
    }

    impl ImageSource for Mem {
        fn resolve(&self, name: &str) -> crate::Result<Descriptor> {
            Err(Error::store(name, "no tags"))
        }
        fn has_blob(&self, digest: &Digest) -> crate::Result<bool> {
            Ok(self.blobs.borrow().contains_key(digest))
        }
        fn open_blob(&self, desc: &Descriptor) -> crate::Result<Box<dyn Read + '_>> {
            let b = self.blobs.borrow().get(&desc.digest).cloned();
            let b = b.ok_or_else(|| Error::Missing {
                digest: desc.digest.clone(),
                what: "blob".into(),
            })?;
            Ok(Box::new(io::Cursor::new(b)))
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 1).unwrap()
    }

    /// An image before it is stored: what each test breaks.
    struct Parts {
        manifest_type: String,
        config_type: String,
        /// (media type, blob, uncompressed content).
        layers: Vec<(String, Vec<u8>, Vec<u8>)>,
        config: Value,
    }

    impl Parts {
        /// A valid image of `platform` (`os/arch[/variant]`): an OCI one with a gzip, a zstd
        /// and a plain layer, or a Docker one with a gzip and a plain layer.
        fn new(docker: bool, platform: &str) -> Parts {
            let contents: Vec<Vec<u8>> =
                (0..3).map(|i| format!("layer {i}").into_bytes()).collect();
            let layers = if docker {
                vec![
                    (
                        mt::DOCKER_LAYER_GZIP.into(),
                        gzip(&contents[0]),
                        contents[0].clone(),
                    ),
                    (
                        mt::DOCKER_LAYER_TAR.into(),
                        contents[1].clone(),
                        contents[1].clone(),
                    ),
                ]
            } else {
                vec![
                    (
                        mt::OCI_LAYER_GZIP.into(),
                        gzip(&contents[0]),
                        contents[0].clone(),
                    ),
                    (
                        mt::OCI_LAYER_ZSTD.into(),
                        zstd(&contents[1]),
                        contents[1].clone(),
                    ),
                    (
                        mt::OCI_LAYER_TAR.into(),
                        contents[2].clone(),
                        contents[2].clone(),
                    ),
                ]
            };
            let p = Platform::parse(platform).unwrap();
            let mut history: Vec<Value> = layers
                .iter()
                .map(|_| json!({"created_by": "RUN x"}))
                .collect();
            history.insert(1, json!({"created_by": "ENV A=1", "empty_layer": true}));
            let config = json!({
                "architecture": p.architecture, "os": p.os, "variant": p.variant,
                "config": {"Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| Digest::of(&l.2).to_string()).collect::<Vec<_>>()},
                "history": history,
            });
            Parts {
                manifest_type: (if docker {
                    mt::DOCKER_MANIFEST
                } else {
                    mt::OCI_MANIFEST
                })
                .into(),
                config_type: (if docker {
                    mt::DOCKER_CONFIG
                } else {
                    mt::OCI_CONFIG
                })
                .into(),
                layers,
                config,
            }
        }

        /// Stores the blobs and the manifest; returns the manifest's descriptor.
        fn store(&self, mem: &Mem) -> Descriptor {
            let layers: Vec<Descriptor> = self
                .layers
                .iter()
                .map(|(t, blob, _)| Descriptor::new(t, mem.put(blob), blob.len() as u64))
                .collect();
            let config = serde_json::to_vec(&self.config).unwrap();
            let config = Descriptor::new(&self.config_type, mem.put(&config), config.len() as u64);
            let m = ImageManifest::new(&self.manifest_type, config, layers);
            let bytes = serde_json::to_vec(&m).unwrap();
            Descriptor::new(&self.manifest_type, mem.put(&bytes), bytes.len() as u64)
        }

        fn layer_digest(&self, i: usize) -> Digest {
            Digest::of(&self.layers[i].1)
        }
    }

    /// An index over `entries` (stored manifests with the platform each claims).
    fn index(mem: &Mem, media_type: &str, entries: &[(&Descriptor, &str)]) -> Descriptor {
        let manifests = entries
            .iter()
            .map(|(d, p)| {
                let p = Platform::parse(p).unwrap();
                // Index entries keep the variant as written (`arm64/v8`).
                let p = match p.architecture.as_str() {
                    "arm64" if p.variant.is_none() => Platform::new(&p.os, "arm64", Some("v8")),
                    _ => p,
                };
                (*d).clone().with_platform(p)
            })
            .collect();
        let bytes = serde_json::to_vec(&ImageIndex::new(media_type, manifests)).unwrap();
        Descriptor::new(media_type, mem.put(&bytes), bytes.len() as u64)
    }

    fn check(mem: &Mem, root: &Descriptor) -> Result<Report, Problems> {
        validate(mem, root, Options::default())
    }

    /// The problems of a broken image (panics when it passes).
    fn problems(mem: &Mem, root: &Descriptor) -> Vec<Problem> {
        match check(mem, root) {
            Ok(r) => panic!("a broken image passed: {r:?}"),
            Err(p) => p.0,
        }
    }

    #[test]
    fn good_images_pass() {
        let mem = Mem::default();
        let oci = Parts::new(false, "linux/amd64").store(&mem);
        let report = check(&mem, &oci).unwrap();
        assert_eq!((report.images, report.layers, report.indexes), (1, 3, 0));
        let docker = Parts::new(true, "linux/amd64").store(&mem);
        assert_eq!(check(&mem, &docker).unwrap().layers, 2);
        let arm = Parts::new(false, "linux/arm64").store(&mem);
        let idx = index(
            &mem,
            mt::OCI_INDEX,
            &[(&oci, "linux/amd64"), (&arm, "linux/arm64")],
        );
        let report = check(&mem, &idx).unwrap();
        assert_eq!((report.images, report.layers, report.indexes), (2, 6, 1));
    }

    #[test]
    fn missing_layer() {
        let mem = Mem::default();
        let parts = Parts::new(false, "linux/amd64");
        let root = parts.store(&mem);
        assert!(check(&mem, &root).is_ok());
        mem.remove(&parts.layer_digest(1));
        let p = problems(&mem, &root);
        assert!(
            matches!(&p[..], [Problem::Missing { digest, .. }] if *digest == parts.layer_digest(1)),
            "{p:?}"
        );
    }

    #[test]
    fn layer_content_not_its_digest() {
        let mem = Mem::default();
        let parts = Parts::new(false, "linux/amd64");
        let root = parts.store(&mem);
        assert!(check(&mem, &root).is_ok());
        // Same size, other bytes.
        let mut tampered = parts.layers[2].1.clone();
        tampered[0] ^= 1;
        mem.replace(&parts.layer_digest(2), &tampered);
        let p = problems(&mem, &root);
        assert!(
            matches!(&p[..], [Problem::Corrupt { digest, source: Error::Verification { .. }, .. }] if *digest == parts.layer_digest(2)),
            "{p:?}"
        );
    }

    #[test]
    fn compressed_layer_with_trailing_bytes_is_caught() {
        // The decompressor stops at the end of the gzip stream: the rest must still be read
        // and verified.
        let mem = Mem::default();
        let parts = Parts::new(false, "linux/amd64");
        let root = parts.store(&mem);
        assert!(check(&mem, &root).is_ok());
        let mut longer = parts.layers[0].1.clone();
        longer.extend_from_slice(b"junk");
        mem.replace(&parts.layer_digest(0), &longer);
        let p = problems(&mem, &root);
        assert!(
            matches!(
                &p[..],
                [Problem::Corrupt {
                    source: Error::Verification { .. },
                    ..
                }]
            ),
            "{p:?}"
        );
    }

    #[test]
    fn descriptor_size_wrong() {
        let mem = Mem::default();
        let parts = Parts::new(false, "linux/amd64");
        let good = parts.store(&mem);
        assert!(check(&mem, &good).is_ok());
        let bytes = mem.blobs.borrow()[&good.digest].clone();
        let mut m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
        m.layers[0].size += 1;
        let bytes = serde_json::to_vec(&m).unwrap();
        let root = Descriptor::new(mt::OCI_MANIFEST, mem.put(&bytes), bytes.len() as u64);
        let p = problems(&mem, &root);
        assert!(
            matches!(&p[..], [Problem::Corrupt { digest, source: Error::Verification { expected, .. }, .. }]
                if *digest == parts.layer_digest(0) && expected.ends_with("bytes")),
            "{p:?}"
        );
    }

    #[test]
    fn missing_config() {
        let mem = Mem::default();
        let parts = Parts::new(true, "linux/amd64");
        let root = parts.store(&mem);
        assert!(check(&mem, &root).is_ok());
        let config = Digest::of(&serde_json::to_vec(&parts.config).unwrap());
        mem.remove(&config);
        let p = problems(&mem, &root);
        assert!(
            matches!(&p[..], [Problem::Missing { digest, what }] if *digest == config && what.starts_with("config")),
            "{p:?}"
        );
    }

    #[test]
    fn config_does_not_parse() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
        parts.config["rootfs"]["diff_ids"] = json!("not a list");
        let p = problems(&mem, &parts.store(&mem));
        assert!(matches!(&p[..], [Problem::Unparsable { .. }]), "{p:?}");
    }

    #[test]
    fn rootfs_type_is_layers() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
        parts.config["rootfs"]["type"] = json!("other");
        let p = problems(&mem, &parts.store(&mem));
        assert!(
            matches!(&p[..], [Problem::RootFsType { found, .. }] if found == "other"),
            "{p:?}"
        );
    }

    #[test]
    fn one_diff_id_per_layer() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
        parts.config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .pop();
        let p = problems(&mem, &parts.store(&mem));
        assert!(
            matches!(
                &p[..],
                [Problem::DiffIdCount {
                    layers: 3,
                    diff_ids: 2,
                    ..
                }]
            ),
            "{p:?}"
        );
    }

    #[test]
    fn diff_id_is_of_the_uncompressed_layer() {
        for (docker, i) in [(false, 0), (false, 1), (true, 0)] {
            let mem = Mem::default();
            let mut parts = Parts::new(docker, "linux/amd64");
            assert!(check(&mem, &parts.store(&mem)).is_ok());
            // The mistake of naming a layer by its compressed digest.
            parts.config["rootfs"]["diff_ids"][i] = json!(parts.layer_digest(i).to_string());
            let p = problems(&mem, &parts.store(&mem));
            assert!(
                matches!(&p[..], [Problem::DiffId { index, layer, actual, .. }]
                    if *index == i && *layer == parts.layer_digest(i) && *actual == Digest::of(&parts.layers[i].2)),
                "{p:?}"
            );
        }
    }

    #[test]
    fn history_pairs_with_layers() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
        parts.config["history"][0]["empty_layer"] = json!(true);
        let p = problems(&mem, &parts.store(&mem));
        assert!(
            matches!(
                &p[..],
                [Problem::History {
                    non_empty: 2,
                    layers: 3,
                    ..
                }]
            ),
            "{p:?}"
        );
        // No history at all is allowed (it is optional in OCI).
        parts.config.as_object_mut().unwrap().remove("history");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
    }

    #[test]
    fn layer_media_types_match_the_manifest() {
        let cases = [
            (false, 0, mt::DOCKER_LAYER_GZIP, "OCI layer"),
            (true, 0, mt::OCI_LAYER_GZIP, "Docker layer"),
            (true, 1, mt::OCI_LAYER_ZSTD, "zstd"),
        ];
        for (docker, i, bad, reason) in cases {
            let mem = Mem::default();
            let mut parts = Parts::new(docker, "linux/amd64");
            assert!(check(&mem, &parts.store(&mem)).is_ok());
            if bad == mt::OCI_LAYER_ZSTD {
                parts.layers[i].1 = zstd(&parts.layers[i].2);
            }
            parts.layers[i].0 = bad.to_string();
            let p = problems(&mem, &parts.store(&mem));
            assert!(
                matches!(&p[..], [Problem::MediaType { digest, reason: r, .. }]
                    if *digest == parts.layer_digest(i) && r.contains(reason)),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn config_media_type_matches_the_manifest() {
        let mem = Mem::default();
        let mut parts = Parts::new(true, "linux/amd64");
        assert!(check(&mem, &parts.store(&mem)).is_ok());
        parts.config_type = mt::OCI_CONFIG.into();
        let p = problems(&mem, &parts.store(&mem));
        assert!(
            matches!(&p[..], [Problem::MediaType { what, .. }] if what.starts_with("config")),
            "{p:?}"
        );
    }

    #[test]
    fn descriptor_media_type_is_the_documents() {
        let mem = Mem::default();
        let parts = Parts::new(false, "linux/amd64");
        let mut root = parts.store(&mem);
        assert!(check(&mem, &root).is_ok());
        root.media_type = mt::DOCKER_MANIFEST.into();
        let p = problems(&mem, &root);
        assert!(
            matches!(&p[..], [Problem::MediaType { digest, found, .. }] if *digest == root.digest && found == mt::DOCKER_MANIFEST),
            "{p:?}"
        );
    }

    #[test]
    fn index_platforms_are_unique() {
        let mem = Mem::default();
        let a = Parts::new(false, "linux/arm64").store(&mem);
        let mut other = Parts::new(false, "linux/arm64");
        other.config["config"]["Env"] = json!(["PATH=/usr/bin"]);
        let b = other.store(&mem);
        let amd = Parts::new(false, "linux/amd64").store(&mem);
        let good = index(
            &mem,
            mt::OCI_INDEX,
            &[(&a, "linux/arm64"), (&amd, "linux/amd64")],
        );
        assert!(check(&mem, &good).is_ok());
        // arm64/v8 (as the index writes it) and arm64 are one platform.
        let bad = index(
            &mem,
            mt::OCI_INDEX,
            &[(&a, "linux/arm64"), (&b, "linux/arm64")],
        );
        let p = problems(&mem, &bad);
        assert!(
            matches!(&p[..], [Problem::DuplicatePlatform { index, platform }]
                if *index == bad.digest && platform.to_string() == "linux/arm64"),
            "{p:?}"
        );
    }

    #[test]
    fn index_platform_is_the_configs() {
        let mem = Mem::default();
        let arm = Parts::new(false, "linux/arm/v7").store(&mem);
        // `arm` alone is arm/v7 once normalised.
        let good = index(&mem, mt::OCI_INDEX, &[(&arm, "linux/arm")]);
        assert!(check(&mem, &good).is_ok());
        let bad = index(&mem, mt::OCI_INDEX, &[(&arm, "linux/arm/v6")]);
        let p = problems(&mem, &bad);
        assert!(
            matches!(&p[..], [Problem::PlatformMismatch { manifest, entry, config: Some(c), .. }]
                if *manifest == arm.digest && entry.to_string() == "linux/arm/v6" && c.to_string() == "linux/arm/v7"),
            "{p:?}"
        );
    }

    #[test]
    fn docker_manifest_lists_hold_docker_manifests() {
        let mem = Mem::default();
        let oci = Parts::new(false, "linux/amd64").store(&mem);
        let docker = Parts::new(true, "linux/amd64").store(&mem);
        assert!(check(
            &mem,
            &index(&mem, mt::DOCKER_MANIFEST_LIST, &[(&docker, "linux/amd64")])
        )
        .is_ok());
        let arm = Parts::new(true, "linux/arm64").store(&mem);
        let mixed = index(
            &mem,
            mt::OCI_INDEX,
            &[(&oci, "linux/amd64"), (&arm, "linux/arm64")],
        );
        assert!(check(&mem, &mixed).is_ok());
        let bad = index(&mem, mt::DOCKER_MANIFEST_LIST, &[(&oci, "linux/amd64")]);
        let p = problems(&mem, &bad);
        assert!(
            matches!(&p[..], [Problem::MediaType { digest, .. }] if *digest == oci.digest),
            "{p:?}"
        );
    }

    #[test]
    fn partial_pulls_skip_missing_images_only_when_asked() {
        let mem = Mem::default();
        let amd = Parts::new(false, "linux/amd64").store(&mem);
        let arm = Parts::new(false, "linux/arm64").store(&mem);
        let idx = index(
            &mem,
            mt::OCI_INDEX,
            &[(&amd, "linux/amd64"), (&arm, "linux/arm64")],
        );
        mem.remove(&arm.digest);
        let p = problems(&mem, &idx);
        assert!(
            matches!(&p[..], [Problem::Missing { digest, .. }] if *digest == arm.digest),
            "{p:?}"
        );
        let partial = Options {
            partial: Partial::SkipMissingImages,
            ..Options::default()
        };
        let report = validate(&mem, &idx, partial).unwrap();
        assert_eq!(
            (report.images, report.skipped),
            (1, vec![arm.digest.clone()])
        );
        // An included image must still be whole.
        let amd_parts = Parts::new(false, "linux/amd64");
        mem.remove(&amd_parts.layer_digest(0));
        assert!(validate(&mem, &idx, partial).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        let big = vec![0u8; 1 << 20];
        parts.layers[0] = (mt::OCI_LAYER_GZIP.into(), gzip(&big), big.clone());
        parts.config["rootfs"]["diff_ids"][0] = json!(Digest::of(&big).to_string());
        let root = parts.store(&mem);
        let opts = |max| Options {
            max_uncompressed: max,
            ..Options::default()
        };
        assert!(validate(&mem, &root, opts(1 << 20)).is_ok());
        let p = validate(&mem, &root, opts((1 << 20) - 1)).unwrap_err().0;
        assert!(matches!(&p[..], [Problem::TooLarge { .. }]), "{p:?}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mem = Mem::default();
        let mut root = Parts::new(false, "linux/amd64").store(&mem);
        for _ in 0..MAX_DEPTH {
            root = index(&mem, mt::OCI_INDEX, &[(&root, "linux/amd64")]);
        }
        assert!(check(&mem, &root).is_ok());
        root = index(&mem, mt::OCI_INDEX, &[(&root, "linux/amd64")]);
        let p = problems(&mem, &root);
        assert!(matches!(&p[..], [Problem::TooDeep { .. }]), "{p:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_digest() {
        let mem = Mem::default();
        let mut parts = Parts::new(false, "linux/amd64");
        parts.config["rootfs"]["diff_ids"][2] = json!(Digest::of(b"x").to_string());
        parts.config["history"][0]["empty_layer"] = json!(true);
        let root = parts.store(&mem);
        mem.remove(&parts.layer_digest(0));
        let err = check(&mem, &root).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.to_string();
        for d in [parts.layer_digest(0), parts.layer_digest(2)] {
            assert!(text.contains(d.as_ref()), "{text}");
        }
    }
}
