//! One bounded walk of the image root, collecting the files that hold
//! package metadata (the OS databases are read at their fixed paths instead).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::root::ImageRoot;
use super::Limits;
use kiln_solver::pattern::PatternMatcher;

/// Top-level directories of a root that hold no packages (kernel mounts).
const SKIPPED_TOP: [&str; 3] = ["proc", "sys", "dev"];
/// Executables smaller than this hold no build info (scripts, stubs).
const MIN_EXECUTABLE: u64 = 1024;

/// What a found file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// `Cargo.lock`.
    CargoLock,
    /// `package-lock.json`.
    NpmLock,
    /// `node_modules/NAME/package.json` (or `node_modules/@SCOPE/NAME/package.json`).
    NpmManifest,
    /// `*.dist-info/METADATA`, `*.egg-info/PKG-INFO` or an `*.egg-info` file.
    PythonMetadata,
    /// `go.sum`.
    GoSum,
    /// An executable regular file (Go build info, `cargo auditable` data).
    Executable,
}

/// A file to parse (a regular file inside the root, never a symlink).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// What it is.
    pub kind: CandidateKind,
    /// Its host path.
    pub path: PathBuf,
}

/// Walks the root without following symlinks, at most `limits.max_depth`
/// deep and `limits.max_entries` entries, and returns the metadata files found;
/// paths `exclude` names are skipped (a directory whole, unless a `!` pattern may
/// bring files back).
pub fn walk(
    image: &ImageRoot,
    limits: &Limits,
    exclude: Option<&PatternMatcher>,
    warnings: &mut Vec<String>,
) -> Vec<Candidate> {
    let root = image.host_root();
    let mut out = Vec::new();
    let mut seen = 0usize;
    let excluded = |e: &walkdir::DirEntry| {
        let Some(m) = exclude else { return false };
        let rel = e.path().strip_prefix(root).unwrap_or(e.path());
        let rel = rel.to_string_lossy();
        e.depth() > 0 && m.excludes(&rel) && !(e.file_type().is_dir() && m.has_exclusions())
    };
    let entries = walkdir::WalkDir::new(root)
        .follow_links(false)
        .max_depth(limits.max_depth)
        .into_iter()
        .filter_entry(|e| {
            let kernel = e.depth() == 1 && SKIPPED_TOP.iter().any(|s| e.file_name() == *s);
            !kernel && !excluded(e)
        });
    for entry in entries {
        seen += 1;
        if seen > limits.max_entries {
            warnings.push(format!(
                "the image has more than {} files; the rest was not scanned",
                limits.max_entries
            ));
            break;
        }
        let Ok(entry) = entry else {
            continue;
        };
        if !entry.file_type().is_file() {
            continue;
        }
        if let Some(kind) = classify(entry.path(), &entry) {
            out.push(Candidate {
                kind,
                path: entry.into_path(),
            });
        }
    }
    out
}

fn classify(path: &Path, entry: &walkdir::DirEntry) -> Option<CandidateKind> {
    let name = entry.file_name().to_str()?;
    let parent = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str());
    let grandparent = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|p| p.to_str());
    match name {
        "Cargo.lock" => return Some(CandidateKind::CargoLock),
        "package-lock.json" => return Some(CandidateKind::NpmLock),
        "go.sum" => return Some(CandidateKind::GoSum),
        "package.json" if in_node_modules(path, grandparent) => {
            return Some(CandidateKind::NpmManifest)
        }
        "METADATA" if parent.is_some_and(|p| p.ends_with(".dist-info")) => {
            return Some(CandidateKind::PythonMetadata)
        }
        "PKG-INFO" if parent.is_some_and(|p| p.ends_with(".egg-info")) => {
            return Some(CandidateKind::PythonMetadata)
        }
        n if n.ends_with(".egg-info") => return Some(CandidateKind::PythonMetadata),
        _ => {}
    }
    let meta = entry.metadata().ok()?;
    (meta.permissions().mode() & 0o111 != 0 && meta.len() >= MIN_EXECUTABLE)
        .then_some(CandidateKind::Executable)
}

/// `node_modules/NAME/package.json` or `node_modules/@SCOPE/NAME/package.json`.
fn in_node_modules(path: &Path, grandparent: Option<&str>) -> bool {
    match grandparent {
        Some("node_modules") => true,
        Some(g) if g.starts_with('@') => {
            path.ancestors()
                .nth(3)
                .and_then(Path::file_name)
                .and_then(|p| p.to_str())
                == Some("node_modules")
        }
        _ => false,
    }
}
