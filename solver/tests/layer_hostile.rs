//! Property test: applying arbitrary layer tars (names with `..`, absolute paths, symlinks to
//! anywhere, hard links, whiteouts, truncation) never panics and never writes outside the
//! destination.

use std::fs;
use std::path::Path;

use kiln_solver::snapshot::layer::{apply_layer, ApplyOptions, WhiteoutMode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Entry {
    File(String),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("victim".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just("".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..4)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        path(),
        Just("/".to_string()),
        Just("../../..".to_string()),
        Just("/etc".to_string()),
        Just("../victim".to_string()),
        Just("..".to_string()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        path().prop_map(Entry::File),
        path().prop_map(Entry::Dir),
        (path(), target()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
    ]
}

/// A raw ustar header: the tar crate's safe setters refuse `..`, so write the fields directly.
fn header(name: &str, kind: tar::EntryType, link: &str, size: u64) -> Option<tar::Header> {
    let mut h = tar::Header::new_old();
    let old = h.as_old_mut();
    if name.len() > old.name.len() || link.len() > old.linkname.len() {
        return None;
    }
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Some(h)
}

fn build(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (Option<tar::Header>, &[u8]) = match e {
            Entry::File(p) => (header(p, tar::EntryType::Regular, "", 5), b"owned"),
            Entry::Dir(p) => (header(p, tar::EntryType::Directory, "", 0), b""),
            Entry::Symlink(p, t) => (header(p, tar::EntryType::Symlink, t, 0), b""),
            Entry::Hardlink(p, t) => (header(p, tar::EntryType::Link, t, 0), b""),
        };
        if let Some(h) = h {
            b.append(&h, data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// Everything under `dir`, not following symlinks.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_layers_stay_inside_the_destination(
        entries in prop::collection::vec(entry(), 1..12),
        truncate in prop::option::of(0usize..4096),
        overlay in any::<bool>(),
    ) {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path().join("root");
        fs::create_dir(&root).unwrap();
        // A file next to the destination that an escaping entry would overwrite or link.
        fs::write(sandbox.path().join("victim"), b"original").unwrap();
        let before = listing(sandbox.path()).into_iter().filter(|p| !p.starts_with(&root.display().to_string())).collect::<Vec<_>>();
        let mut tar = build(&entries);
        if let Some(n) = truncate {
            tar.truncate(n.min(tar.len()));
        }
        let opts = ApplyOptions {
            whiteouts: if overlay && nix::unistd::geteuid().is_root() { WhiteoutMode::Overlay } else { WhiteoutMode::Delete },
            same_owner: false,
            max_size: None,
        };
        // Success or a clean error are both fine; a panic fails the test.
        let _ = apply_layer(&tar[..], &root, &opts);
        let after = listing(sandbox.path()).into_iter().filter(|p| !p.starts_with(&root.display().to_string())).collect::<Vec<_>>();
        prop_assert_eq!(before, after, "something appeared or vanished outside the destination");
        prop_assert_eq!(fs::read(sandbox.path().join("victim")).unwrap(), b"original".to_vec());
        prop_assert_eq!(fs::metadata(sandbox.path().join("victim")).unwrap().len(), 8);
        // No file inside may be a hard link to the file outside.
        use std::os::unix::fs::MetadataExt;
        let victim = fs::metadata(sandbox.path().join("victim")).unwrap();
        for p in listing(&root) {
            let meta = fs::symlink_metadata(&p).unwrap();
            prop_assert!(
                !(meta.dev() == victim.dev() && meta.ino() == victim.ino()),
                "{} is a hard link to a file outside the destination", p
            );
        }
    }
}
