//! A registry repository as an image source and sink (`kiln_registry::remote::Remote`),
//! against the real registry of testdata/env/setup.sh, with skopeo as the oracle of what a
//! copy into it left.

use kiln_oci::copy::copy_images;
use kiln_oci::layout::LayoutDir;
use kiln_oci::store::{ImageSink, ImageSource};
use kiln_oci::validate::{validate, Options};
use kiln_oci::walk::{walk, Partial};
use kiln_oci::{Digest, Manifest, Reference};
use kiln_registry::remote::Remote;
use kiln_registry::{RegistryClient, TransportOptions};
use std::process::Command;
use support::{env, unique};

mod support;

/// The manifest bytes skopeo reads at `reference`, or `None` when there is none.
fn skopeo_raw(reference: &str) -> Option<Vec<u8>> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    out.status.success().then_some(out.stdout)
}

/// The trait methods block on the runtime: they run on this (test) thread, outside it.
fn remote(rt: &tokio::runtime::Runtime, reference: &str) -> Remote {
    let r = Reference::parse(reference).unwrap();
    let client = RegistryClient::new(TransportOptions::default());
    Remote::new(client, &r, rt.handle().clone())
}

#[test]
fn a_repository_is_a_source_and_a_sink_of_the_one_copy() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // Source: busybox's index, resolved by tag and by digest, walked and validated in place.
    let busybox = remote(&rt, &format!("{reg}/library/busybox"));
    let root = busybox.resolve("latest").unwrap();
    let raw = skopeo_raw(&format!("{reg}/library/busybox:latest")).unwrap();
    assert_eq!(root.digest, Digest::of(&raw));
    assert_eq!(busybox.resolve(root.digest.as_ref()).unwrap(), root);
    let err = busybox
        .resolve(&format!("{reg}/library/alpine:latest"))
        .unwrap_err();
    assert!(err.to_string().contains("library/busybox"), "{err}");
    let blobs = walk(&busybox, &root, Partial::Refuse).unwrap();
    assert_eq!(blobs.last(), Some(&root));
    let report = validate(&busybox, &root, Options::default()).unwrap();
    assert_eq!((report.indexes, report.images), (1, 2));
    assert!(!ImageSource::has_blob(&busybox, &Digest::of(b"h5-registry: no such blob")).unwrap());

    // Registry -> layout: every blob verified on the way, the index as it was served.
    let layout = LayoutDir::create(tmp.path().join("layout")).unwrap();
    let into_layout = copy_images(
        &busybox,
        &[(root.clone(), vec!["v1".into()])],
        &layout,
        Partial::Refuse,
    )
    .unwrap();
    assert_eq!(into_layout.written, blobs.len());
    assert_eq!(layout.resolve("v1").unwrap().digest, root.digest);

    // Layout -> another repository: skopeo reads back the same index and each image.
    let target = format!("{reg}/{}", unique("h5-registry-remote-sink"));
    let sink = remote(&rt, &target);
    let report = copy_images(
        &layout,
        &[(root.clone(), vec!["v1".into(), format!("{target}:v2")])],
        &sink,
        Partial::Refuse,
    )
    .unwrap();
    assert_eq!(report.written, blobs.len());
    for tag in ["v1", "v2"] {
        assert_eq!(
            skopeo_raw(&format!("{target}:{tag}")).unwrap(),
            raw,
            "{tag}"
        );
    }
    let (Manifest::Index(index), _) = Manifest::parse("index", &raw, None).unwrap() else {
        panic!("busybox:latest is not an index")
    };
    for d in &index.manifests {
        let child = skopeo_raw(&format!("{target}@{}", d.digest)).unwrap();
        assert_eq!(Digest::of(&child), d.digest);
    }
    // The sink knows what it holds, manifests included: nothing is written twice.
    let again = copy_images(&layout, &[(root.clone(), vec![])], &sink, Partial::Refuse).unwrap();
    assert_eq!(again.written, 0);
}

#[test]
fn a_tampered_blob_never_reaches_the_registry() {
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = remote(&rt, &format!("{reg}/library/busybox"));
    let root = busybox.resolve("latest-amd64").unwrap();
    let layout = LayoutDir::create(tmp.path().join("layout")).unwrap();
    copy_images(
        &busybox,
        &[(root.clone(), vec![])],
        &layout,
        Partial::Refuse,
    )
    .unwrap();
    let bytes = std::fs::read(layout.blob_path(&root.digest)).unwrap();
    let (Manifest::Image(image), _) = Manifest::parse("m", &bytes, None).unwrap() else {
        panic!("busybox:latest-amd64 is not an image")
    };
    let layer = &image.layers[0];
    let mut data = std::fs::read(layout.blob_path(&layer.digest)).unwrap();
    data[100] ^= 0xff;
    std::fs::write(layout.blob_path(&layer.digest), data).unwrap();

    let target = format!("{reg}/{}", unique("h5-registry-remote-tampered"));
    let sink = remote(&rt, &target);
    let err = copy_images(
        &layout,
        &[(root.clone(), vec!["v1".into()])],
        &sink,
        Partial::Refuse,
    )
    .unwrap_err();
    assert!(matches!(err, kiln_oci::Error::Verification { .. }), "{err}");
    assert!(!ImageSink::has_blob(&sink, &layer.digest).unwrap());
    assert!(!ImageSink::has_blob(&sink, &root.digest).unwrap());
    assert!(
        skopeo_raw(&format!("{target}:v1")).is_none(),
        "nothing is tagged"
    );
}

#[test]
fn a_blob_the_repository_lost_fails_the_pull_before_anything_is_stored() {
    use kiln_registry::progress::NoProgress;
    use kiln_registry::pull::{pull, PlatformSelection, PullOptions};
    let env = env();
    let reg = &env["KILN_TEST_REGISTRY"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(TransportOptions::default());
    let src = Reference::parse(&format!("{reg}/library/busybox:latest-amd64")).unwrap();
    let dst = Reference::parse(&format!("{reg}/{}:v1", unique("h5-registry-lost"))).unwrap();
    let staging = tempfile::tempdir().unwrap();
    rt.block_on(kiln_registry::copy::copy(
        &client,
        &src,
        &dst,
        staging.path(),
        4,
        &NoProgress,
    ))
    .unwrap();
    let raw = skopeo_raw(&dst.to_string()).unwrap();
    let (Manifest::Image(image), _) = Manifest::parse("m", &raw, None).unwrap() else {
        panic!("busybox:latest-amd64 is not an image")
    };
    // The registry (delete enabled) unlinks the layer from the repository.
    let layer = &image.layers[0].digest;
    let url = format!("http://{reg}/v2/{}/blobs/{layer}", dst.repository());
    let deleted = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-X", "DELETE", &url])
        .status()
        .unwrap();
    assert!(deleted.success(), "DELETE {url}");

    let store = tempfile::tempdir().unwrap();
    let layout = LayoutDir::create(store.path()).unwrap();
    let err = rt
        .block_on(pull(
            &client,
            &dst,
            &layout,
            &PullOptions {
                platforms: PlatformSelection::All,
                concurrency: 4,
            },
            &NoProgress,
        ))
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("{}@{layer}", dst.name())),
        "names the repository and blob: {shown}"
    );
    let stored = std::fs::read_dir(store.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(stored, 0, "the walk fails before any download");
}
