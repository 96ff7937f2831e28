//! kiln-oci's invariant checker as the end-to-end tests' oracle: every image a build, pull,
//! copy, save or load leaves (in a state dir's store, an OCI layout dir or tar, a Docker
//! archive) must pass `kiln_oci::validate`.

use std::path::Path;

use kiln_oci::layout::LayoutDir;
use kiln_oci::store::ImageSource;
use kiln_oci::validate::{validate, Options, Report};
use kiln_oci::walk::Partial;

/// Validates every image `index.json` of the OCI layout `dir` names; panics listing every
/// problem. Returns the reports, one per image (root).
pub fn validate_layout(dir: &Path, partial: Partial) -> Vec<Report> {
    let layout = LayoutDir::open(dir)
        .unwrap_or_else(|e| panic!("{}: not an OCI layout: {e}", dir.display()));
    let images = layout
        .images()
        .unwrap_or_else(|e| panic!("{}: index.json: {e}", dir.display()));
    let options = Options {
        partial,
        ..Options::default()
    };
    images
        .iter()
        .map(|image| {
            validate(&layout, &image.root, options).unwrap_or_else(|problems| {
                panic!(
                    "{} (names {:?} {:?}) in {} is invalid: {problems}",
                    image.root.digest,
                    image
                        .names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>(),
                    image.tags,
                    dir.display()
                )
            })
        })
        .collect()
}

/// Validates every image of the state dir `root`'s content store (an OCI layout at
/// `<root>/content`); panics listing every problem, or when the store holds no image.
/// Pulls keep a whole index but only the images of the platforms pulled: pass
/// [`Partial::SkipMissingImages`] for them, [`Partial::Refuse`] after builds and loads.
pub fn validate_store(root: &Path, partial: Partial) -> Vec<Report> {
    let reports = validate_layout(&root.join("content"), partial);
    assert!(
        reports.iter().any(|r| r.images > 0),
        "{}: the store holds no image to validate",
        root.display()
    );
    reports
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

    /// Validates the image of the state dir named `name` (a full reference or a tag) whole,
    /// every image of an index included; panics listing every problem.
    pub fn validate_image(&self, name: &str) -> Report {
        validate_named(&self.root.path().join("content"), name, Partial::Refuse)
    }
}

/// Validates the image of the OCI layout `dir` named `name`; panics listing every problem.
pub fn validate_named(dir: &Path, name: &str, partial: Partial) -> Report {
    let layout = LayoutDir::open(dir)
        .unwrap_or_else(|e| panic!("{}: not an OCI layout: {e}", dir.display()));
    let root = layout
        .resolve(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", dir.display()));
    let options = Options {
        partial,
        ..Options::default()
    };
    validate(&layout, &root, options).unwrap_or_else(|problems| {
        panic!(
            "{name} ({}) in {} is invalid: {problems}",
            root.digest,
            dir.display()
        )
    })
}
