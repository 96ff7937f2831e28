//! The store checker shared by the fault tests: what a consistent state dir looks like
//! after any verb, finished, failed or killed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Asserts the state dir `root` is consistent: every blob hashes to its name, every layer
/// record and every cached result's layer has its directory, skopeo reads every tag.
/// Returns how many tags it read (a state dir a failed pull left may hold none).
pub fn check_store(root: &Path) -> usize {
    check_blobs(&root.join("content/blobs/sha256"));
    if root.join("meta.redb").exists() {
        check_records(root);
    }
    let tags = tags(root);
    for tag in &tags {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{tag}", root.join("content").display()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tags.len()
}

/// Every blob of the content store hashes to its name.
fn check_blobs(blobs: &Path) {
    let names: Vec<PathBuf> = std::fs::read_dir(blobs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return;
    }
    let out = Command::new("sha256sum")
        .args(&names)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum over {}", blobs.display());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (sum, path) = line.split_once("  ").expect("sha256sum line");
        assert!(path.ends_with(sum), "blob {path} hashes to {sum}");
    }
}

/// Every layer record and every cached result's layer has its directory.
fn check_records(root: &Path) {
    let layers = root.join("layers");
    let cache =
        kiln_solver::cache::CacheStore::open(&root.join("meta.redb")).expect("open meta.redb");
    for rec in cache.meta().layers().expect("layer records") {
        assert!(
            layers.join(rec.id.as_str()).is_dir(),
            "layer record {} without its directory",
            rec.id
        );
    }
    for e in cache.entries().expect("cache entries") {
        for l in &e.result.snapshot.layers {
            assert!(
                layers.join(l.as_str()).is_dir(),
                "cache result {:?} uses the missing layer {l}",
                e.result.description
            );
        }
    }
}

/// The tags of the state dir's OCI layout (none when it has no index yet).
fn tags(root: &Path) -> Vec<String> {
    let path = root.join("content/index.json");
    if !path.exists() {
        return Vec::new();
    }
    let index = super::read_json(&path);
    index["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

/// Regular files under `dir` holding `needle`; does not cross into `skip`.
pub fn files_holding(dir: &Path, needle: &[u8], skip: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.starts_with(skip) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.metadata().is_ok_and(|m| m.len() < 64 << 20) {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}
