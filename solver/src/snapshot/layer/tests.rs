use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::content::ContentStore;

fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates device nodes, trusted.* xattrs and foreign owners: run it as root (CI does)"
    );
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path().join("content")).unwrap();
    (d, s)
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Vec<u8>,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: Option<i64>,
}

/// Everything about a tree that a layer must carry (directory mtimes aside).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut xattrs = BTreeMap::new();
        for n in xattr::list(e.path()).unwrap() {
            let n = n.into_string().unwrap();
            let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
            xattrs.insert(n, v);
        }
        out.insert(
            e.path().strip_prefix(root).unwrap().to_path_buf(),
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                content: if ft.is_file() {
                    fs::read(e.path()).unwrap()
                } else {
                    Vec::new()
                },
                link: if ft.is_symlink() {
                    Some(fs::read_link(e.path()).unwrap())
                } else {
                    None
                },
                rdev: m.rdev(),
                xattrs,
                mtime: if ft.is_dir() { None } else { Some(m.mtime()) },
            },
        );
    }
    out
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn set_mtime(p: &Path, t: i64) {
    let ts = nix::sys::time::TimeSpec::new(t, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// A tree with every kind of entry a layer carries.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::set_permissions(root.join("etc/passwd"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(root.join("home")).unwrap();
    fs::create_dir(root.join("home/app")).unwrap();
    fs::set_permissions(root.join("home/app"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join("home/app/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("home/app/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    chown(&root.join("home/app"), 1000, 1000);
    chown(&root.join("home/app/run.sh"), 1000, 1001);
    fs::write(root.join("suid"), b"x").unwrap();
    chown(&root.join("suid"), 0, 0);
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("home/app/run.sh", root.join("run")).unwrap();
    std::os::unix::fs::symlink("/nowhere/absolute", root.join("dangling")).unwrap();
    fs::hard_link(root.join("etc/passwd"), root.join("etc/passwd.link")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    xattr::set(root.join("etc/passwd"), "user.kiln.test", b"v1").unwrap();
    xattr::set(
        root.join("suid"),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    let long = "d".repeat(120);
    fs::create_dir(root.join(&long)).unwrap();
    fs::write(root.join(&long).join("f".repeat(150)), b"long names").unwrap();
    std::os::unix::fs::symlink("t".repeat(200), root.join("longlink")).unwrap();
    fs::write(root.join("big"), vec![7u8; 3 * 1024 * 1024 + 17]).unwrap();
    for p in [
        "etc/passwd",
        "suid",
        "fifo",
        "big",
        "home/app/run.sh",
        "run",
        "dangling",
        "longlink",
    ] {
        set_mtime(&root.join(p), 1_600_000_000);
    }
}

fn apply_blob(
    store: &ContentStore,
    layer: &LayerBlob,
    dest: &Path,
    mode: WhiteoutMode,
) -> AppliedLayer {
    let blob = store.open_blob(&layer.blob.digest).unwrap();
    apply_layer(
        blob,
        dest,
        &ApplyOptions {
            whiteouts: mode,
            same_owner: true,
            max_size: None,
        },
    )
    .unwrap()
}

#[test]
fn round_trip_keeps_contents_modes_owners_links_xattrs_in_every_compression() {
    need_root();
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let (_d, s) = store();
    let mut diff_ids = Vec::new();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = DiffOptions {
            compression,
            ..Default::default()
        };
        let layer = write_layer(src.path(), &s, &opts).unwrap();
        let head = &s.read_blob(&layer.blob.digest).unwrap()[..4];
        assert_eq!(Compression::detect(head), Ok(compression));
        let dst = tempfile::tempdir().unwrap();
        let applied = apply_blob(&s, &layer, dst.path(), WhiteoutMode::Delete);
        assert_eq!(applied.diff_id, layer.diff_id, "{compression}");
        assert_eq!(applied.compression, compression);
        assert_eq!(applied.uncompressed_size, layer.uncompressed_size);
        assert_eq!(snapshot(src.path()), snapshot(dst.path()), "{compression}");
        let a = fs::metadata(dst.path().join("etc/passwd")).unwrap();
        let b = fs::metadata(dst.path().join("etc/passwd.link")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link kept");
        diff_ids.push(layer.diff_id);
    }
    // The tar is the same whatever the compression.
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn output_is_deterministic_and_mtimes_clamp_to_source_date_epoch() {
    need_root();
    let (_d, s) = store();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    rich_tree(a.path());
    rich_tree(b.path());
    set_mtime(&a.path().join("big"), 1_700_000_000);
    set_mtime(&b.path().join("big"), 1_800_000_000);
    let plain = DiffOptions::default();
    let la = write_layer(a.path(), &s, &plain).unwrap();
    assert_eq!(
        write_layer(a.path(), &s, &plain).unwrap(),
        la,
        "same tree twice"
    );
    let lb = write_layer(b.path(), &s, &plain).unwrap();
    assert_ne!(
        la.diff_id, lb.diff_id,
        "mtimes differ without SOURCE_DATE_EPOCH"
    );
    // Directory mtimes differ between the two trees too; clamping to an old epoch unifies all.
    let epoch = DiffOptions {
        source_date_epoch: Some(1_000_000_000),
        ..Default::default()
    };
    let ca = write_layer(a.path(), &s, &epoch).unwrap();
    let cb = write_layer(b.path(), &s, &epoch).unwrap();
    assert_eq!(ca.diff_id, cb.diff_id);
    assert_eq!(
        ca.blob.digest, cb.blob.digest,
        "gzip output is deterministic"
    );
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        s.open_blob(&ca.blob.digest).unwrap(),
    ));
    let mut names = Vec::new();
    for e in tar.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000_000_000);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        names.push(e.path().unwrap().into_owned());
    }
    assert!(names.len() > 10);
}

/// Lower layer: files a layer above will hide.
fn lower_tree(root: &Path) {
    fs::create_dir_all(root.join("opq/sub")).unwrap();
    fs::write(root.join("opq/old"), b"old").unwrap();
    fs::write(root.join("opq/sub/deep"), b"deep").unwrap();
    fs::write(root.join("gone"), b"bye").unwrap();
    fs::create_dir(root.join("gonedir")).unwrap();
    fs::write(root.join("gonedir/x"), b"x").unwrap();
    fs::write(root.join("kept"), b"kept").unwrap();
}

/// An overlay upperdir as overlayfs leaves it: whiteouts and an opaque directory.
fn upper_tree(root: &Path) {
    nix::sys::stat::mknod(
        &root.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    nix::sys::stat::mknod(
        &root.join("gonedir"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("opq")).unwrap();
    xattr::set(root.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(root.join("opq/new"), b"new").unwrap();
    fs::write(root.join("added"), b"added").unwrap();
}

#[test]
fn overlay_whiteouts_become_oci_whiteouts_and_delete_on_apply() {
    need_root();
    let (_d, s) = store();
    let upper = tempfile::tempdir().unwrap();
    upper_tree(upper.path());
    let layer = write_layer(upper.path(), &s, &DiffOptions::default()).unwrap();

    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        s.open_blob(&layer.blob.digest).unwrap(),
    ));
    for e in tar.entries().unwrap() {
        let e = e.unwrap();
        names.push(
            e.path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    assert_eq!(
        names,
        vec![
            "added",
            ".wh.gone",
            ".wh.gonedir",
            "opq",
            "opq/.wh..wh..opq",
            "opq/new"
        ]
    );

    let root = tempfile::tempdir().unwrap();
    lower_tree(root.path());
    apply_blob(&s, &layer, root.path(), WhiteoutMode::Delete);
    let got: Vec<_> = snapshot(root.path()).into_keys().collect();
    let want: Vec<PathBuf> = ["added", "kept", "opq", "opq/new"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn overlay_mode_recreates_whiteouts_and_rediffs_to_the_same_layer() {
    need_root();
    let (_d, s) = store();
    let upper = tempfile::tempdir().unwrap();
    upper_tree(upper.path());
    let layer = write_layer(upper.path(), &s, &DiffOptions::default()).unwrap();
    let unpacked = tempfile::tempdir().unwrap();
    apply_blob(&s, &layer, unpacked.path(), WhiteoutMode::Overlay);
    let m = fs::symlink_metadata(unpacked.path().join("gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert_eq!(
        xattr::get(unpacked.path().join("opq"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    let again = write_layer(unpacked.path(), &s, &DiffOptions::default()).unwrap();
    assert_eq!(again.diff_id, layer.diff_id);
}

#[test]
fn whiteouts_do_not_hide_entries_of_their_own_layer() {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "foo", b"new");
    append_file(&mut b, ".wh.foo", b"");
    let dir = tempfile::tempdir().unwrap();
    apply_plain(b.into_inner().unwrap(), dir.path()).unwrap();
    assert_eq!(fs::read(dir.path().join("foo")).unwrap(), b"new");
}

// ---- hostile tars ----

fn append_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

fn append_symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, name, target).unwrap();
}

/// An entry with a raw name the tar crate's safe setters refuse (`..`, absolute).
fn append_raw(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn apply_plain(tar: Vec<u8>, dest: &Path) -> Result<AppliedLayer, LayerError> {
    apply_layer(&tar[..], dest, &ApplyOptions::default())
}

/// Applies a hostile tar into `sandbox/root` and checks nothing appeared in `sandbox`.
fn refused(tar: Vec<u8>) -> LayerError {
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = apply_plain(tar, &root).unwrap_err();
    let outside: Vec<_> = fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("root")],
        "wrote outside the destination"
    );
    assert!(matches!(err, LayerError::UnsafePath { .. }), "{err}");
    err
}

#[test]
fn dotdot_entries_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    append_raw(&mut b, "a/../../escape", tar::EntryType::Regular, "", b"x");
    let err = refused(b.into_inner().unwrap());
    assert!(err.to_string().contains("a/../../escape"), "{err}");
}

#[test]
fn writes_through_an_absolute_symlink_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "etc", "/etc");
    append_file(&mut b, "etc/kiln-owned", b"x");
    let err = refused(b.into_inner().unwrap());
    assert!(err.to_string().contains("absolute symlink"), "{err}");
    assert!(!Path::new("/etc/kiln-owned").exists());
}

#[test]
fn relative_symlinks_leaving_the_root_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "up", "../..");
    append_file(&mut b, "up/escape", b"x");
    let err = refused(b.into_inner().unwrap());
    assert!(err.to_string().contains("outside the destination"), "{err}");
}

#[test]
fn hard_links_outside_the_root_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    append_raw(
        &mut b,
        "passwd",
        tar::EntryType::Link,
        "../../../../etc/passwd",
        b"",
    );
    refused(b.into_inner().unwrap());
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "e", "/etc");
    append_raw(&mut b, "passwd", tar::EntryType::Link, "e/passwd", b"");
    refused(b.into_inner().unwrap());
}

#[test]
fn a_symlink_at_the_final_component_is_replaced_not_followed() {
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(sandbox.path().join("victim"), b"original").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "f", "../victim");
    append_file(&mut b, "f", b"overwritten?");
    apply_plain(b.into_inner().unwrap(), &root).unwrap();
    assert_eq!(
        fs::read(sandbox.path().join("victim")).unwrap(),
        b"original"
    );
    assert_eq!(fs::read(root.join("f")).unwrap(), b"overwritten?");
    assert!(!fs::symlink_metadata(root.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn relative_symlinks_inside_the_root_are_followed() {
    let mut b = tar::Builder::new(Vec::new());
    append_symlink(&mut b, "lib", "usr/lib");
    append_file(&mut b, "lib/libc.so", b"elf");
    append_raw(&mut b, "/abs/file", tar::EntryType::Regular, "", b"abs");
    let dir = tempfile::tempdir().unwrap();
    apply_plain(b.into_inner().unwrap(), dir.path()).unwrap();
    assert_eq!(
        fs::read(dir.path().join("usr/lib/libc.so")).unwrap(),
        b"elf"
    );
    // A leading `/` is relative to the destination, like every tar extractor does.
    assert_eq!(fs::read(dir.path().join("abs/file")).unwrap(), b"abs");
}

#[test]
fn garbage_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut junk = vec![0x1f, 0x8b];
    junk.extend_from_slice(b"not really gzip");
    assert!(apply_plain(junk, dir.path()).is_err());
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "ok", b"fine");
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(600); // header plus part of the body
    assert!(apply_plain(bytes, dir.path()).is_err());
}

#[test]
fn applied_diff_id_is_the_sha256_of_the_whole_tar() {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "x", b"y");
    let bytes = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let applied = apply_plain(bytes.clone(), dir.path()).unwrap();
    assert_eq!(applied.diff_id, kiln_oci::Digest::of(&bytes));
    let mut r = &bytes[..];
    let mut sink = Vec::new();
    r.read_to_end(&mut sink).unwrap();
    assert_eq!(applied.uncompressed_size, sink.len() as u64);
}

#[test]
fn a_sparse_file_bomb_meets_the_size_limit_before_it_is_written() {
    // GNU tar (an independent writer) stores 1 GiB of holes in a 10 KiB tar.
    let work = tempfile::tempdir().unwrap();
    let bomb = work.path().join("bomb");
    fs::File::create(&bomb).unwrap().set_len(1 << 30).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(work.path())
        .args(["--sparse", "-cf", "-", "bomb"])
        .output()
        .expect("run GNU tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() < 64 << 10, "a sparse tar");
    let dest = work.path().join("root");
    let opts = ApplyOptions {
        max_size: Some(10 << 20),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&out.stdout[..], &dest, &opts).unwrap_err();
    assert!(
        matches!(err, LayerError::TooLarge { limit } if limit == 10 << 20),
        "{err}"
    );
    assert!(!dest.join("bomb").exists(), "the bomb was written");
}

#[test]
fn a_file_swapped_for_a_symlink_after_its_stat_is_an_error_not_a_read_of_the_target() {
    let d = tempfile::tempdir().unwrap();
    let (layer, outside) = (d.path().join("layer"), d.path().join("host-secret"));
    fs::create_dir(&layer).unwrap();
    fs::write(layer.join("f"), b"layer bytes").unwrap();
    fs::write(&outside, b"HOST-SECRET").unwrap();
    let opts = DiffOptions::default();
    let mut pieces = diff::Pieces::new(&layer, &opts);
    let (_, piece) = pieces.next_entry().unwrap().unwrap();
    // Swapped between the walk's stat and the read of its bytes.
    fs::remove_file(layer.join("f")).unwrap();
    std::os::unix::fs::symlink(&outside, layer.join("f")).unwrap();
    let mut out = diff::TarOut::new(Vec::new(), 0, 0);
    let err = out.put(&piece).unwrap_err();
    assert!(err.to_string().contains("open"), "{err}");
    let written = out.into_inner();
    assert!(
        !written.windows(11).any(|w| w == b"HOST-SECRET"),
        "the link's target was read"
    );
}
