//! The built-in SBOM scanner: the packages of an unpacked image root, as an
//! SPDX 2.3 JSON document (what buildx's `--sbom=true` attaches, made without
//! running a scanner image).
//!
//! The root is hostile: every file is read through [`root::ImageRoot`] (paths
//! resolve inside the root, regular files only, size caps), the walk is bounded
//! in depth and entries, and garbage in one file is a warning, never a failure.
//!
//! Use: `scan(rootfs, &opts)?.to_spdx_json()` with `opts.name` the image
//! reference and `opts.created` the build's `SOURCE_DATE_EPOCH` when set; the
//! JSON is the predicate of the in-toto statement whose predicate type is
//! `https://spdx.dev/Document` (as BuildKit attaches syft's output).

mod apk;
mod cargo;
mod distro;
mod dpkg;
pub mod extras;
mod golang;
mod license;
mod npm;
mod python;
mod root;
mod rpm;
pub mod spdx;
mod walk;

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

pub use distro::Distro;
pub use root::ImageRoot;

/// Where a package was found (its purl type, and the SPDX reference category).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PackageKind {
    /// A Debian package (dpkg database).
    Deb,
    /// An Alpine package (apk database).
    Apk,
    /// An RPM package (rpm's SQLite database).
    Rpm,
    /// A Rust crate (Cargo.lock or `cargo auditable` data).
    Cargo,
    /// An npm package (package-lock.json, node_modules).
    Npm,
    /// A Python distribution (dist-info / egg-info metadata).
    Python,
    /// A Go module (go.sum, build info of Go binaries).
    Go,
}

impl PackageKind {
    /// The purl type of the kind.
    pub fn purl_type(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Apk => "apk",
            PackageKind::Rpm => "rpm",
            PackageKind::Cargo => "cargo",
            PackageKind::Npm => "npm",
            PackageKind::Python => "pypi",
            PackageKind::Go => "golang",
        }
    }
}

/// One package found in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// What kind of package it is.
    pub kind: PackageKind,
    /// Its name, as its package manager spells it.
    pub name: String,
    /// Its version, as its package manager spells it.
    pub version: String,
    /// Its package URL (purl spec).
    pub purl: String,
    /// The declared license as an SPDX expression, when the metadata has one.
    pub license: Option<String>,
    /// Who distributes it, SPDX style (`Person: NAME (EMAIL)`), when known.
    pub supplier: Option<String>,
    /// Who made it, SPDX style, when known.
    pub originator: Option<String>,
    /// The container paths of the metadata it was found in.
    pub locations: Vec<String>,
}

/// Bounds of one scan.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries the walk visits at most.
    pub max_entries: usize,
    /// Directory depth the walk descends at most.
    pub max_depth: usize,
    /// Packages kept at most (the rest is dropped with a warning).
    pub max_packages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 2_000_000,
            max_depth: 64,
            max_packages: 200_000,
        }
    }
}

/// What a scan is for: names and times put in the document.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The name of what is scanned (the image reference, or the directory).
    pub name: String,
    /// The document's creation time (`SOURCE_DATE_EPOCH` when set, for reproducible builds).
    pub created: jiff::Timestamp,
    /// Bounds of the scan.
    pub limits: Limits,
    /// Paths (relative, `/`-separated) the walk skips: a context's `.dockerignore`.
    pub exclude: Option<kiln_solver::pattern::PatternMatcher>,
}

impl ScanOptions {
    /// Options naming the scanned thing, created now, default limits.
    pub fn new(name: impl Into<String>) -> ScanOptions {
        ScanOptions {
            name: name.into(),
            created: jiff::Timestamp::now(),
            limits: Limits::default(),
            exclude: None,
        }
    }
}

/// The result of a scan: the packages of the image, ready to be written as SPDX.
#[derive(Debug, Clone)]
pub struct SbomDocument {
    /// The name of what was scanned.
    pub name: String,
    /// When the document was made.
    pub created: jiff::Timestamp,
    /// The image's distribution (`/etc/os-release`), when it says (its purls carry it;
    /// kept whole for callers and tests).
    #[allow(dead_code)]
    pub distro: Option<Distro>,
    /// The packages, sorted by kind, name, version.
    pub packages: Vec<Package>,
    /// Files that could not be read or parsed (the scan went on without them).
    pub warnings: Vec<String>,
}

/// Why a scan could not run at all (problems inside the image are warnings).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root is not a readable directory.
    #[error("cannot scan {path}: not a readable directory")]
    Root {
        /// The host path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What one metadata file gave: its packages, or why it gave none.
type Found = Result<Vec<Package>, String>;

/// Scans the image root at `root` for OS and language packages.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<SbomDocument, ScanError> {
    let meta = std::fs::metadata(root).map_err(|source| ScanError::Root {
        path: root.display().to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ScanError::Root {
            path: root.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let image = ImageRoot::new(root);
    let distro = distro::read(&image);
    let mut warnings = Vec::new();
    let mut found: Vec<Found> = vec![
        dpkg::scan(
            &image,
            distro.as_ref(),
            opts.limits.max_packages,
            &mut warnings,
        ),
        apk::scan(&image, distro.as_ref()),
        rpm::scan(
            &image,
            distro.as_ref(),
            opts.limits.max_packages,
            &mut warnings,
        ),
    ];
    let candidates = walk::walk(&image, &opts.limits, opts.exclude.as_ref(), &mut warnings);
    found.extend(
        candidates
            .into_par_iter()
            .map(|c| parse_candidate(&image, &c))
            .collect::<Vec<_>>(),
    );
    let mut packages = Vec::new();
    for f in found {
        match f {
            Ok(p) => packages.extend(p),
            Err(w) => warnings.push(w),
        }
    }
    let mut packages = merge(packages);
    if packages.len() > opts.limits.max_packages {
        warnings.push(format!(
            "{} packages found; only the first {} are listed",
            packages.len(),
            opts.limits.max_packages
        ));
        packages.truncate(opts.limits.max_packages);
    }
    warnings.sort();
    Ok(SbomDocument {
        name: opts.name.clone(),
        created: opts.created,
        distro,
        packages,
        warnings,
    })
}

fn parse_candidate(image: &ImageRoot, c: &walk::Candidate) -> Found {
    let shown = image.container_path(&c.path);
    match c.kind {
        walk::CandidateKind::CargoLock => cargo::parse_lock_file(&c.path, &shown),
        walk::CandidateKind::NpmLock => npm::parse_lock_file(&c.path, &shown),
        walk::CandidateKind::NpmManifest => npm::parse_manifest_file(&c.path, &shown),
        walk::CandidateKind::PythonMetadata => python::parse_metadata_file(&c.path, &shown),
        walk::CandidateKind::GoSum => golang::parse_sum_file(&c.path, &shown),
        walk::CandidateKind::Executable => golang::parse_binary_file(&c.path, &shown),
    }
}

/// One entry per purl (the same package found in two files lists both
/// locations), sorted by kind, name, version.
fn merge(packages: Vec<Package>) -> Vec<Package> {
    let mut by_purl: BTreeMap<(PackageKind, String, String, String), Package> = BTreeMap::new();
    for p in packages {
        let key = (p.kind, p.name.clone(), p.version.clone(), p.purl.clone());
        match by_purl.get_mut(&key) {
            Some(seen) => {
                for l in p.locations {
                    if !seen.locations.contains(&l) {
                        seen.locations.push(l);
                    }
                }
                if seen.license.is_none() {
                    seen.license = p.license;
                }
            }
            None => {
                by_purl.insert(key, p);
            }
        }
    }
    by_purl.into_values().collect()
}

/// Builds a purl (the library percent-encodes each part); a part it refuses
/// (the image is hostile) gives `pkg:TYPE/unknown` rather than no package.
fn purl(
    ty: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let build = || -> Result<String, packageurl::Error> {
        let mut p = packageurl::PackageUrl::new(ty.to_string(), name.to_string())?;
        if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
            p.with_namespace(ns.to_string())?;
        }
        if !version.is_empty() {
            p.with_version(version.to_string())?;
        }
        for (k, v) in qualifiers {
            if !v.is_empty() {
                p.add_qualifier(k.to_string(), v.to_string())?;
            }
        }
        Ok(p.to_string())
    };
    build().unwrap_or_else(|_| format!("pkg:{ty}/unknown"))
}
