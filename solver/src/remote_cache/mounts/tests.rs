use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::llb::{
    CacheOpt, CacheSharing, ExecMeta, ExecOp, Mount, NetworkMode, SecurityMode, SourceOp,
    VertexMetadata,
};
use crate::mounts::cache::CacheSharing as Sharing;
use kiln_oci::Digest;

/// One machine's stores: a cache-mount area and a content store.
struct Machine {
    _dir: tempfile::TempDir,
    mounts: CacheMounts,
    content: ContentStore,
}

fn machine() -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(dir.path().join("cache-mounts")).unwrap();
    let content = ContentStore::open(dir.path().join("content")).unwrap();
    Machine {
        _dir: dir,
        mounts,
        content,
    }
}

/// Mode (with the kind), owner, group, mtime, bytes and link target of an entry.
type Entry = (u32, u32, u32, i64, Vec<u8>, Option<PathBuf>);

/// Everything about a tree a cache mount must carry.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let bytes = if m.is_file() {
            fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        let link = fs::read_link(e.path()).ok();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        out.insert(rel, (m.mode(), m.uid(), m.gid(), m.mtime(), bytes, link));
    }
    out
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

/// Fills cache `id` of `m` as a package manager would: nested files, modes, a symlink,
/// a hard link and set mtimes.
fn fill(m: &Machine, id: &str) -> PathBuf {
    let lease = m.mounts.acquire(id, Sharing::Shared, 0o755, 0, 0).unwrap();
    let d = lease.dir().to_path_buf();
    fs::create_dir_all(d.join("pkgs/a")).unwrap();
    fs::write(d.join("pkgs/a/index.json"), b"{\"v\":1}").unwrap();
    fs::write(d.join("pkgs/a/tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(d.join("pkgs/a/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::hard_link(d.join("pkgs/a/tool"), d.join("pkgs/tool-link")).unwrap();
    std::os::unix::fs::symlink("a/index.json", d.join("pkgs/latest")).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(d.join("pkgs/a/index.json"), Some(1000), Some(1001)).unwrap();
    }
    for p in [
        "pkgs/a/index.json",
        "pkgs/a/tool",
        "pkgs/latest",
        "pkgs/a",
        "pkgs",
    ] {
        set_mtime(&d.join(p), 1_600_000_000);
    }
    d
}

/// Copies a blob into another machine's content store, as a fetch from a registry would.
fn carry(from: &Machine, to: &Machine, blob: &CacheBlob) {
    let bytes = from.content.read_blob(&blob.digest).unwrap();
    to.content.put_bytes(&bytes).unwrap();
}

/// The names under the cache-mount root (lock and id files, directories).
fn names(m: &Machine) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(m.mounts.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_cache_mount_round_trips_to_another_machine_and_re_exports_to_the_same_blob() {
    let a = machine();
    let src = fill(&a, "/root/.cache");
    let blob = export_mount(
        &a.mounts,
        "/root/.cache",
        &a.content,
        Compression::Gzip,
        None,
    )
    .unwrap()
    .expect("a mount with content is exported");
    assert_eq!(blob.media_type, kiln_oci::media_type::OCI_LAYER_GZIP);
    assert_eq!(a.content.size(&blob.digest).unwrap(), Some(blob.size));
    // Unchanged content: the same bytes, so nothing new to upload.
    let again = export_mount(
        &a.mounts,
        "/root/.cache",
        &a.content,
        Compression::Gzip,
        None,
    );
    assert_eq!(again.unwrap().as_ref(), Some(&blob));

    let b = machine();
    carry(&a, &b, &blob);
    assert!(restore_mount(&b.mounts, "/root/.cache", &b.content, &blob).unwrap());
    let lease = b
        .mounts
        .acquire("/root/.cache", Sharing::Shared, 0o755, 0, 0)
        .unwrap();
    assert_eq!(tree(lease.dir()), tree(&src));
    let root = fs::metadata(lease.dir()).unwrap();
    assert_eq!(
        (root.mode() & 0o7777, root.uid(), root.gid()),
        (0o755, 0, 0)
    );
    let tool = fs::metadata(lease.dir().join("pkgs/a/tool")).unwrap();
    assert_eq!(tool.nlink(), 2, "the hard link is kept");
    let key = CacheMounts::key("/root/.cache");
    assert_eq!(
        fs::read_to_string(b.mounts.root().join(format!("{key}.id"))).unwrap(),
        "/root/.cache"
    );
    drop(lease);
    let re = export_mount(
        &b.mounts,
        "/root/.cache",
        &b.content,
        Compression::Gzip,
        None,
    );
    assert_eq!(
        re.unwrap(),
        Some(blob),
        "a restored mount re-exports to the same blob"
    );
    assert!(
        !names(&b).iter().any(|n| n.starts_with(".restore")),
        "{:?}",
        names(&b)
    );
}

#[test]
fn a_restored_mount_gets_the_mode_and_owner_of_its_settings() {
    let a = machine();
    let id = store_id("npm", Some((0o700, 1000, 1000)));
    let lease = a
        .mounts
        .acquire(&id, Sharing::Shared, 0o700, 1000, 1000)
        .unwrap();
    fs::write(lease.dir().join("f"), b"x").unwrap();
    drop(lease);
    let blob = export_mount(&a.mounts, &id, &a.content, Compression::Zstd, None)
        .unwrap()
        .unwrap();
    assert_eq!(blob.media_type, kiln_oci::media_type::OCI_LAYER_ZSTD);
    let b = machine();
    carry(&a, &b, &blob);
    assert!(restore_mount(&b.mounts, &id, &b.content, &blob).unwrap());
    let md = fs::metadata(b.mounts.root().join(CacheMounts::key(&id))).unwrap();
    let want_owner = if nix::unistd::geteuid().is_root() {
        (1000, 1000)
    } else {
        (md.uid(), md.gid())
    };
    assert_eq!(
        (md.mode() & 0o7777, (md.uid(), md.gid())),
        (0o700, want_owner)
    );
}

#[test]
fn an_empty_mount_takes_the_place_of_its_empty_directory_keeping_its_mode() {
    let a = machine();
    fill(&a, "c");
    let blob = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    let b = machine();
    carry(&a, &b, &blob);
    drop(b.mounts.acquire("c", Sharing::Shared, 0o775, 0, 0).unwrap());
    assert!(restore_mount(&b.mounts, "c", &b.content, &blob).unwrap());
    let dir = b.mounts.root().join(CacheMounts::key("c"));
    assert!(dir.join("pkgs/a/index.json").is_file());
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o775);
}

#[test]
fn a_missing_or_empty_mount_is_not_exported_and_not_created() {
    let a = machine();
    let none = export_mount(&a.mounts, "never", &a.content, Compression::Gzip, None);
    assert_eq!(none.unwrap(), None);
    assert!(!a.mounts.root().join(CacheMounts::key("never")).exists());
    drop(
        a.mounts
            .acquire("empty", Sharing::Shared, 0o755, 0, 0)
            .unwrap(),
    );
    let none = export_mount(&a.mounts, "empty", &a.content, Compression::Gzip, None);
    assert_eq!(none.unwrap(), None);
    assert!(a.content.list_blobs().unwrap().is_empty());
}

#[test]
fn a_local_mount_with_content_is_kept() {
    let a = machine();
    fill(&a, "c");
    let blob = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    let b = machine();
    carry(&a, &b, &blob);
    let lease = b.mounts.acquire("c", Sharing::Shared, 0o755, 0, 0).unwrap();
    fs::write(lease.dir().join("local"), b"newer").unwrap();
    let before = tree(lease.dir());
    let dir = lease.dir().to_path_buf();
    drop(lease);
    assert!(!restore_mount(&b.mounts, "c", &b.content, &blob).unwrap());
    assert_eq!(tree(&dir), before);
}

/// Restores `tar` (its true diffID) as mount "h" of a fresh machine inside a sandbox and
/// checks the restore failed leaving nothing: no mount, no staging, nothing outside.
fn refused(tar: Vec<u8>) -> RemoteCacheError {
    let sandbox = tempfile::tempdir().unwrap();
    let mounts = CacheMounts::new(sandbox.path().join("m")).unwrap();
    let content = ContentStore::open(sandbox.path().join("content")).unwrap();
    let info = content.put_bytes(&tar).unwrap();
    let blob = CacheBlob {
        digest: info.digest,
        size: info.size,
        media_type: kiln_oci::media_type::OCI_LAYER_TAR.into(),
        diff_id: Digest::of(&tar),
    };
    let err = restore_mount(&mounts, "h", &content, &blob).unwrap_err();
    let mut outside: Vec<_> = fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["content", "m"],
        "wrote outside the cache-mount area"
    );
    let inside: Vec<_> = fs::read_dir(mounts.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(inside, [format!("{}.lock", CacheMounts::key("h"))], "{err}");
    err
}

/// A tar entry with a raw name the tar crate's safe setters refuse (`..`, absolute).
fn append_raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
}

#[test]
fn a_hostile_cache_mount_tar_cannot_escape_the_mount() {
    let mut b = tar::Builder::new(Vec::new());
    append_raw(&mut b, "ok", tar::EntryType::Regular, "");
    append_raw(&mut b, "../../escape", tar::EntryType::Regular, "");
    let err = refused(b.into_inner().unwrap());
    assert!(err.to_string().contains("`..`"), "{err}");

    // A symlink to an absolute path outside, then a file written through it.
    let outside = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "out", outside.path()).unwrap();
    append_raw(&mut b, "out/owned", tar::EntryType::Regular, "");
    let err = refused(b.into_inner().unwrap());
    assert!(err.to_string().contains("absolute symlink"), "{err}");
    assert!(!outside.path().join("owned").exists());

    // A hard link to a host file.
    let mut b = tar::Builder::new(Vec::new());
    append_raw(
        &mut b,
        "passwd",
        tar::EntryType::Link,
        "../../../../../etc/passwd",
    );
    refused(b.into_inner().unwrap());
}

#[test]
fn a_corrupt_blob_is_refused_leaving_nothing_behind() {
    let a = machine();
    fill(&a, "c");
    let blob = export_mount(&a.mounts, "c", &a.content, Compression::None, None)
        .unwrap()
        .unwrap();
    let mut bytes = a.content.read_blob(&blob.digest).unwrap();
    // A byte of a file's data: the tar still parses, only the diffID tells.
    let at = bytes
        .windows(7)
        .position(|w| w == b"{\"v\":1}")
        .expect("the file's bytes are in the tar");
    bytes[at + 5] = b'2';
    let b = machine();
    // Damaged at rest (or by a lying fetcher): the store holds other bytes under the digest.
    fs::write(b.content.blob_path(&blob.digest).unwrap(), &bytes).unwrap();
    let err = restore_mount(&b.mounts, "c", &b.content, &blob).unwrap_err();
    assert!(err.to_string().contains(&blob.diff_id.to_string()), "{err}");
    assert_eq!(names(&b), [format!("{}.lock", CacheMounts::key("c"))]);

    // A truncated compressed blob is a clear error too.
    let gz = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    let bytes = a.content.read_blob(&gz.digest).unwrap();
    fs::write(
        b.content.blob_path(&gz.digest).unwrap(),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    restore_mount(&b.mounts, "c", &b.content, &gz).unwrap_err();
    assert_eq!(names(&b), [format!("{}.lock", CacheMounts::key("c"))]);
    // The blob missing altogether.
    b.content.delete(&gz.digest).unwrap();
    restore_mount(&b.mounts, "c", &b.content, &gz).unwrap_err();
    assert_eq!(names(&b), [format!("{}.lock", CacheMounts::key("c"))]);
}

#[test]
fn a_restore_over_the_size_limit_is_refused() {
    let a = machine();
    let lease = a
        .mounts
        .acquire("big", Sharing::Shared, 0o755, 0, 0)
        .unwrap();
    fs::write(lease.dir().join("zeros"), vec![0u8; 1 << 20]).unwrap();
    drop(lease);
    let blob = export_mount(&a.mounts, "big", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    let b = machine();
    carry(&a, &b, &blob);
    let limited = b.mounts.clone().with_restore_limit(Some(64 * 1024));
    let err = restore_mount(&limited, "big", &b.content, &blob).unwrap_err();
    assert!(err.to_string().contains("size limit"), "{err}");
    assert_eq!(names(&b), [format!("{}.lock", CacheMounts::key("big"))]);
}

fn exec(mounts: Vec<Mount>) -> Op {
    let mut all = vec![Mount::root()];
    all.extend(mounts);
    Op::Exec(ExecOp {
        meta: ExecMeta {
            args: vec!["make".into()],
            cwd: "/".into(),
            ..Default::default()
        },
        mounts: all,
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        secret_env: vec![],
    })
}

fn cache(dest: &str, id: &str, input: Option<usize>, settings: Option<(u32, u32, u32)>) -> Mount {
    let (mode, uid, gid) = settings.unwrap_or((0o755, 0, 0));
    Mount {
        input,
        selector: None,
        dest: dest.into(),
        output: false,
        readonly: false,
        kind: MountKind::Cache(CacheOpt {
            id: id.into(),
            sharing: CacheSharing::Private,
            mode,
            uid,
            gid,
            settings_given: settings.is_some(),
        }),
    }
}

#[test]
fn cache_mount_ids_are_the_store_ids_of_the_unseeded_cache_mounts_each_once() {
    let mut d = Definition::new();
    let base = d
        .add(
            Op::Source(SourceOp::image("docker.io/library/alpine:3")),
            None,
            &[],
            VertexMetadata::described("FROM alpine"),
        )
        .unwrap();
    let ctx = d
        .add(
            Op::Source(SourceOp::local("context")),
            None,
            &[],
            VertexMetadata::described("context"),
        )
        .unwrap();
    let run1 = d
        .add(
            exec(vec![
                cache("/root/.cache", "/root/.cache", None, None),
                cache("/go", "ns/go", None, Some((0o700, 1000, 1000))),
                cache("/seeded", "seeded", Some(1), None),
            ]),
            None,
            &[base, ctx],
            VertexMetadata::described("RUN 1"),
        )
        .unwrap();
    let mut tmpfs = cache("/tmp", "unused", None, None);
    tmpfs.kind = MountKind::Tmpfs(crate::llb::TmpfsOpt { size: 0 });
    d.add(
        exec(vec![cache("/c", "/root/.cache", None, None), tmpfs]),
        None,
        &[run1],
        VertexMetadata::described("RUN 2"),
    )
    .unwrap();
    assert_eq!(
        cache_mount_ids(&d),
        ["/root/.cache", "ns/go:mkdir:700:1000:1000"]
    );
    assert!(cache_mount_ids(&Definition::new()).is_empty());
}

#[test]
fn an_unchanged_restored_mount_re_exports_the_imported_blob_without_a_new_tar() {
    let a = machine();
    fill(&a, "c");
    // Another level gives other bytes: only the remembered blob can be this one.
    let fast = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, Some(9))
        .unwrap()
        .unwrap();
    fill(&a, "same files");
    let default = export_mount(&a.mounts, "same files", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    assert_eq!(default.diff_id, fast.diff_id);
    assert_ne!(default.digest, fast.digest, "levels 9 and default differ");
    let b = machine();
    carry(&a, &b, &fast);
    assert!(restore_mount(&b.mounts, "c", &b.content, &fast).unwrap());
    let again = export_mount(&b.mounts, "c", &b.content, Compression::Gzip, None);
    assert_eq!(again.unwrap().as_ref(), Some(&fast));
    // Another compression is made (and remembered beside the first).
    let z = export_mount(&b.mounts, "c", &b.content, Compression::Zstd, None)
        .unwrap()
        .unwrap();
    assert_eq!(z.diff_id, fast.diff_id, "the same tar");
    assert_ne!(z.digest, fast.digest);
    let gz = export_mount(&b.mounts, "c", &b.content, Compression::Gzip, None);
    assert_eq!(gz.unwrap().as_ref(), Some(&fast));
    // A blob gone from the content store is made again.
    b.content.delete(&z.digest).unwrap();
    let z2 = export_mount(&b.mounts, "c", &b.content, Compression::Zstd, None);
    assert_eq!(z2.unwrap().as_ref(), Some(&z));
    assert!(b.content.exists(&z.digest).unwrap());
}

#[test]
fn any_change_to_the_mount_makes_a_new_blob_even_with_size_and_mtime_kept() {
    let a = machine();
    let dir = fill(&a, "c");
    let first = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    // Same size, mtime set back: only the ctime tells.
    let f = dir.join("pkgs/a/index.json");
    fs::write(&f, b"{\"v\":2}").unwrap();
    set_mtime(&f, 1_600_000_000);
    let second = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    assert_ne!(second.diff_id, first.diff_id);
    // A mode change alone too.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let third = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    assert_ne!(third.diff_id, second.diff_id);
    // A file removed and another of the same name, size and mtime put back.
    fs::remove_file(dir.join("pkgs/a/tool")).unwrap();
    fs::write(dir.join("pkgs/a/tool"), b"#!/bin/bash").unwrap();
    fs::remove_file(dir.join("pkgs/a/tool")).unwrap();
    fs::write(dir.join("pkgs/a/tool"), b"#!/bin/sh\n").unwrap();
    let fourth = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    assert_ne!(fourth.diff_id, third.diff_id, "the hard link is gone");
}

#[test]
fn export_waits_for_a_locked_user_and_restore_for_any_user() {
    use std::sync::mpsc;
    use std::time::Duration;
    let a = machine();
    fill(&a, "c");
    let blob = export_mount(&a.mounts, "c", &a.content, Compression::Gzip, None)
        .unwrap()
        .unwrap();
    let writer = a.mounts.acquire("c", Sharing::Locked, 0o755, 0, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let (mounts, content) = (a.mounts.clone(), a.content.clone());
    let t = std::thread::spawn(move || {
        let r = export_mount(&mounts, "c", &content, Compression::Gzip, None);
        tx.send(r.unwrap()).unwrap();
    });
    // Not a timing assertion: the export must not read while the locked user holds it.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    drop(writer);
    assert_eq!(rx.recv().unwrap(), Some(blob.clone()));
    t.join().unwrap();

    let b = machine();
    carry(&a, &b, &blob);
    let reader = b.mounts.acquire("c", Sharing::Shared, 0o755, 0, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let (mounts, content, blob2) = (b.mounts.clone(), b.content.clone(), blob.clone());
    let t = std::thread::spawn(move || {
        tx.send(restore_mount(&mounts, "c", &content, &blob2).unwrap())
            .unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    // The user saw the mount empty and left it so: the restore then fills it.
    assert!(is_empty_or_missing(reader.dir()).unwrap());
    drop(reader);
    assert!(rx.recv().unwrap());
    t.join().unwrap();
}
