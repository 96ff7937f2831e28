//! kiln-oci's invariant checker as the end-to-end tests' oracle: every image a build, pull,
//! copy, save or load leaves (in a state dir's store, an OCI layout dir or tar, a Docker
//! archive) must pass `kiln_oci::validate`.

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_oci::layout::LayoutDir;
use kiln_oci::store::ImageSource;
use kiln_oci::validate::{validate, Options, Report};
use kiln_oci::walk::Partial;
use kiln_oci::{Descriptor, Digest, Manifest};
use kiln_solver::content::ContentStore;

/// Validates every image `index.json` of the OCI layout `dir` names; panics listing every
/// problem. Returns the reports, one per image (root).
pub fn validate_layout(dir: &Path, partial: Partial) -> Vec<Report> {
    let layout = open_layout(dir);
    validate_roots(&layout, dir, partial)
}

/// Validates every image of the state dir `root`'s content store (an OCI layout at
/// `<root>/content`, read through kiln's own `ContentStore` source); panics listing every
/// problem, or when the store holds no image. Pulls keep a whole index but only the images
/// of the platforms pulled: pass [`Partial::SkipMissingImages`] for them,
/// [`Partial::Refuse`] after builds and loads.
pub fn validate_store(root: &Path, partial: Partial) -> Vec<Report> {
    let dir = root.join("content");
    let reports = validate_roots(&content_store(&dir), &dir, partial);
    assert!(
        reports.iter().any(|r| r.images > 0),
        "{}: the store holds no image to validate",
        root.display()
    );
    reports
}

fn open_layout(dir: &Path) -> LayoutDir {
    LayoutDir::open(dir).unwrap_or_else(|e| panic!("{}: not an OCI layout: {e}", dir.display()))
}

fn content_store(dir: &Path) -> ContentStore {
    ContentStore::open(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Validates, in `source`, every root the `index.json` of the layout `dir` lists.
fn validate_roots(source: &dyn ImageSource, dir: &Path, partial: Partial) -> Vec<Report> {
    let images = open_layout(dir)
        .images()
        .unwrap_or_else(|e| panic!("{}: index.json: {e}", dir.display()));
    let options = Options {
        partial,
        ..Options::default()
    };
    images
        .iter()
        .map(|image| {
            validate(source, &image.root, options).unwrap_or_else(|problems| {
                let names: Vec<String> = image.names.iter().map(|n| n.to_string()).collect();
                panic!(
                    "{} (names {names:?} {:?}) in {} is invalid: {problems}",
                    image.root.digest,
                    image.tags,
                    dir.display()
                )
            })
        })
        .collect()
}

/// Validates every image of an OCI layout tar, or of a Docker archive with an OCI layout
/// inside (as Docker 25+ and kiln write them), unpacked to a temporary directory; panics
/// listing every problem, or when the archive holds no image.
pub fn validate_archive(tar_path: &Path) -> Vec<Report> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file =
        std::fs::File::open(tar_path).unwrap_or_else(|e| panic!("{}: {e}", tar_path.display()));
    tar::Archive::new(file)
        .unpack(dir.path())
        .unwrap_or_else(|e| panic!("unpacking {}: {e}", tar_path.display()));
    let reports = validate_layout(dir.path(), Partial::Refuse);
    assert!(
        reports.iter().any(|r| r.images > 0),
        "{}: the archive holds no image to validate",
        tar_path.display()
    );
    reports
}

impl super::Build {
    /// Validates every image of this build's state dir (see [`validate_store`]): base images
    /// pulled for one platform keep their whole index, so an index's absent images are
    /// skipped; panics listing every problem.
    pub fn validate(&self) -> Vec<Report> {
        validate_store(self.root.path(), Partial::SkipMissingImages)
    }

    /// Validates the image of the state dir named `name` (as kiln names images: `app:1` is
    /// `docker.io/library/app:1`) whole, every image of an index included; panics listing
    /// every problem.
    pub fn validate_image(&self, name: &str) -> Report {
        let dir = self.root.path().join("content");
        // The store names images by their full normalised reference.
        let full = kiln_oci::Reference::parse(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .to_string();
        validate_resolved(&content_store(&dir), &dir, &full, Partial::Refuse)
    }
}

/// Validates the image of the OCI layout `dir` named `name`; panics listing every problem.
pub fn validate_named(dir: &Path, name: &str, partial: Partial) -> Report {
    validate_resolved(&open_layout(dir), dir, name, partial)
}

fn validate_resolved(source: &dyn ImageSource, dir: &Path, name: &str, partial: Partial) -> Report {
    let root = source
        .resolve(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}: {:?}", dir.display(), e));
    let options = Options {
        partial,
        ..Options::default()
    };
    validate(source, &root, options).unwrap_or_else(|problems| {
        panic!(
            "{name} ({}) in {} is invalid: {problems}",
            root.digest,
            dir.display()
        )
    })
}

/// Validates an image of the plain-HTTP test registry (`host:port/repo:tag` or `@digest`)
/// whole: skopeo (an independent client) copies it, every image of an index and digests
/// preserved, into a temporary `dir:` layout (which, unlike skopeo's OCI layouts, keeps
/// Docker manifest lists), which is validated.
pub fn validate_remote(reference: &str) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    super::skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", dir.path().display()),
    ]);
    let source = SkopeoDir(dir.path().to_path_buf());
    let root = source.resolve("").expect("the copied root manifest");
    validate(&source, &root, Options::default())
        .unwrap_or_else(|problems| panic!("{reference} ({}) is invalid: {problems}", root.digest))
}

/// skopeo's `dir:` layout: the root manifest in `manifest.json`, an index's manifests in
/// `<hex>.manifest.json`, every other blob in `<hex>`.
struct SkopeoDir(PathBuf);

impl SkopeoDir {
    fn path(&self, digest: &Digest) -> Option<PathBuf> {
        let root = self.0.join("manifest.json");
        [
            self.0.join(digest.hex()),
            self.0.join(format!("{}.manifest.json", digest.hex())),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| {
            let bytes = std::fs::read(&root).ok()?;
            (Digest::of(&bytes) == *digest).then_some(root)
        })
    }
}

impl ImageSource for SkopeoDir {
    fn resolve(&self, _name: &str) -> kiln_oci::Result<Descriptor> {
        let path = self.0.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| kiln_oci::Error::store("manifest.json", e))?;
        let (_, media_type) = Manifest::parse("manifest.json", &bytes, None)?;
        Ok(Descriptor::of(&media_type, &bytes))
    }

    fn has_blob(&self, digest: &Digest) -> kiln_oci::Result<bool> {
        Ok(self.path(digest).is_some())
    }

    fn open_blob(&self, desc: &Descriptor) -> kiln_oci::Result<Box<dyn Read + '_>> {
        let path = self
            .path(&desc.digest)
            .ok_or_else(|| kiln_oci::Error::Missing {
                digest: desc.digest.clone(),
                what: desc.media_type.clone(),
            })?;
        let file = std::fs::File::open(&path)
            .map_err(|e| kiln_oci::Error::store(path.display().to_string(), e))?;
        Ok(Box::new(file))
    }
}
