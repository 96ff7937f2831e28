use std::io::Write;

use kiln_oci::media_type::{OCI_CONFIG, OCI_MANIFEST};
use kiln_oci::Descriptor;

use super::*;

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path().join("content")).unwrap();
    (d, s)
}

fn ingest_leftovers(s: &ContentStore) -> usize {
    fs::read_dir(s.tmp_dir()).unwrap().count()
}

#[test]
fn open_creates_an_oci_layout_and_reopens_it() {
    let (_d, s) = store();
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = s.index().unwrap();
    assert_eq!(index.schema_version, 2);
    assert!(index.manifests.is_empty());
    assert!(s.root().join("blobs/sha256").is_dir());
    let info = s.put_bytes(b"x").unwrap();
    let again = ContentStore::open(s.root()).unwrap();
    assert!(again.exists(&info.digest).unwrap());
}

#[test]
fn refuses_a_layout_of_another_major_version() {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = ContentStore::open(d.path()).unwrap_err();
    assert!(matches!(err, ContentError::InvalidLayout { .. }), "{err}");
}

#[test]
fn put_read_size_list_delete() {
    let (_d, s) = store();
    let a = s.put_bytes(b"hello").unwrap();
    let b = s.put_bytes(b"world!").unwrap();
    assert_eq!(a.digest, Digest::of(b"hello"));
    assert_eq!(a.size, 5);
    assert_eq!(s.read_blob(&a.digest).unwrap(), b"hello");
    assert_eq!(s.size(&b.digest).unwrap(), Some(6));
    assert_eq!(
        fs::read(s.root().join("blobs/sha256").join(a.digest.hex())).unwrap(),
        b"hello"
    );
    let listed: Vec<_> = s
        .list_blobs()
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a.digest) && listed.contains(&b.digest));
    // Storing the same bytes twice is a no-op.
    assert_eq!(s.put_bytes(b"hello").unwrap(), a);
    assert!(s.delete(&a.digest).unwrap());
    assert!(!s.delete(&a.digest).unwrap());
    assert!(!s.exists(&a.digest).unwrap());
    assert_eq!(s.size(&a.digest).unwrap(), None);
    assert!(matches!(
        s.open_blob(&a.digest),
        Err(ContentError::NotFound(_))
    ));
}

#[test]
fn streaming_ingest_verifies_and_commits() {
    let (_d, s) = store();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = Expected::exact(Digest::of(&data), data.len() as u64);
    let mut w = s.ingest(expected).unwrap();
    for chunk in data.chunks(7919) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.written(), data.len() as u64);
    let info = w.commit().unwrap();
    assert_eq!(s.read_blob(&info.digest).unwrap(), data);
    assert_eq!(ingest_leftovers(&s), 0);
}

#[test]
fn digest_mismatch_leaves_nothing_under_either_digest() {
    let (_d, s) = store();
    let wrong = Digest::of(b"something else");
    let mut w = s
        .ingest(Expected {
            digest: Some(wrong.clone()),
            size: None,
        })
        .unwrap();
    w.write_all(b"payload").unwrap();
    let err = w.commit().unwrap_err();
    assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
    assert!(!s.exists(&wrong).unwrap());
    assert!(!s.exists(&Digest::of(b"payload")).unwrap());
    assert_eq!(ingest_leftovers(&s), 0);
}

#[test]
fn size_mismatch_and_oversize_writes_fail() {
    let (_d, s) = store();
    let mut short = s
        .ingest(Expected {
            digest: None,
            size: Some(10),
        })
        .unwrap();
    short.write_all(b"abc").unwrap();
    assert!(matches!(
        short.commit().unwrap_err(),
        ContentError::SizeMismatch {
            expected: 10,
            actual: 3,
            ..
        }
    ));
    let mut long = s
        .ingest(Expected {
            digest: None,
            size: Some(2),
        })
        .unwrap();
    assert!(long.write_all(b"abc").is_err());
    drop(long);
    assert!(s.list_blobs().unwrap().is_empty());
    assert_eq!(ingest_leftovers(&s), 0);
}

#[test]
fn dropped_ingest_leaves_nothing() {
    let (_d, s) = store();
    let mut w = s.ingest(Expected::default()).unwrap();
    w.write_all(&[1u8; 100_000]).unwrap();
    assert_eq!(ingest_leftovers(&s), 1);
    drop(w);
    assert_eq!(ingest_leftovers(&s), 0);
    assert!(s.list_blobs().unwrap().is_empty());
}

#[test]
fn tags_set_resolve_replace_remove() {
    let (_d, s) = store();
    let m1 = s.put_bytes(br#"{"schemaVersion":2}"#).unwrap();
    let m2 = s.put_bytes(br#"{"schemaVersion":2,"x":1}"#).unwrap();
    let d1 = Descriptor::new(OCI_MANIFEST, m1.digest.clone(), m1.size);
    let d2 = Descriptor::new(OCI_MANIFEST, m2.digest.clone(), m2.size);
    let name = "docker.io/library/busybox:latest";
    assert_eq!(s.resolve(name).unwrap(), None);
    s.set_tag(name, &d1).unwrap();
    s.set_tag("example.com/a/b:v1", &d1).unwrap();
    let got = s.resolve(name).unwrap().unwrap();
    assert_eq!(got.digest, m1.digest);
    assert_eq!(ref_name(&got), Some(name));
    s.set_tag(name, &d2).unwrap();
    assert_eq!(s.resolve(name).unwrap().unwrap().digest, m2.digest);
    let names: Vec<_> = s.tags().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        vec![name.to_string(), "example.com/a/b:v1".to_string()]
    );
    assert_eq!(s.index().unwrap().manifests.len(), 2);
    assert!(s.remove_tag(name).unwrap());
    assert!(!s.remove_tag(name).unwrap());
    assert_eq!(s.resolve(name).unwrap(), None);
    assert_eq!(s.tags().unwrap().len(), 1);
}

#[test]
fn tagging_a_missing_blob_is_refused() {
    let (_d, s) = store();
    let d = Descriptor::new(OCI_MANIFEST, Digest::of(b"nope"), 3);
    assert!(matches!(
        s.set_tag("a:b", &d),
        Err(ContentError::NotFound(_))
    ));
    assert!(s.tags().unwrap().is_empty());
}

#[test]
fn concurrent_tag_updates_are_not_lost() {
    let (_d, s) = store();
    let m = s.put_bytes(b"{}").unwrap();
    let desc = Descriptor::new(OCI_MANIFEST, m.digest, m.size);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = ContentStore::open(s.root()).unwrap();
            let desc = desc.clone();
            scope.spawn(move || {
                for i in 0..10 {
                    s.set_tag(&format!("example.com/img:t{t}-{i}"), &desc)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(s.tags().unwrap().len(), 40);
}

#[test]
fn json_round_trip() {
    let (_d, s) = store();
    let desc = s
        .put_json(OCI_CONFIG, &serde_json::json!({"architecture": "amd64"}))
        .unwrap();
    let v: serde_json::Value = s.read_json(&desc.digest).unwrap();
    assert_eq!(v["architecture"], "amd64");
    let bad = s.put_bytes(b"not json").unwrap();
    assert!(matches!(
        s.read_json::<serde_json::Value>(&bad.digest),
        Err(ContentError::Json { .. })
    ));
}

#[test]
fn re_tagging_to_the_same_target_writes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let (_d, s) = store();
    let m1 = s.put_bytes(br#"{"schemaVersion":2}"#).unwrap();
    let m2 = s.put_bytes(br#"{"schemaVersion":2,"y":1}"#).unwrap();
    let d1 = Descriptor::new(OCI_MANIFEST, m1.digest.clone(), m1.size);
    let d2 = Descriptor::new(OCI_MANIFEST, m2.digest.clone(), m2.size);
    s.set_tag("a:1", &d1).unwrap();
    s.set_tag("b:1", &d1).unwrap();
    let index = s.root().join("index.json");
    let inode = || std::fs::metadata(&index).unwrap().ino();
    let before = inode();
    s.set_tag("a:1", &d1).unwrap();
    assert_eq!(inode(), before, "index.json was not replaced");
    // A real change still replaces it, and the tag keeps its place.
    s.set_tag("a:1", &d2).unwrap();
    assert_ne!(inode(), before);
    let names: Vec<_> = s
        .index()
        .unwrap()
        .manifests
        .iter()
        .filter_map(|d| ref_name(d).map(str::to_string))
        .collect();
    assert_eq!(names, ["a:1", "b:1"]);
    assert_eq!(s.resolve("a:1").unwrap().unwrap().digest, m2.digest);
}

#[test]
fn untagged_entries_are_kept_once_beside_tags_and_removed_alone() {
    let (_d, s) = store();
    let m = s.put_bytes(br#"{"schemaVersion":2}"#).unwrap();
    let d = Descriptor::new(OCI_MANIFEST, m.digest.clone(), m.size);
    s.add_untagged(&d).unwrap();
    s.add_untagged(&d).unwrap();
    s.set_tag("example.com/a:1", &d).unwrap();
    assert_eq!(s.untagged().unwrap().len(), 1);
    assert_eq!(s.tags().unwrap().len(), 1);
    // An unnamed entry keeps its blobs from garbage collection.
    assert!(s.remove_tag("example.com/a:1").unwrap());
    assert!(s.reachable().unwrap().contains(&m.digest));
    assert!(s.remove_untagged(&m.digest).unwrap());
    assert!(!s.remove_untagged(&m.digest).unwrap());
    assert!(s.index().unwrap().manifests.is_empty());
    let missing = Descriptor::new(OCI_MANIFEST, Digest::of(b"missing"), 1);
    assert!(s.add_untagged(&missing).is_err());
}
