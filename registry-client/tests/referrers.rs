//! OCI 1.1 referrers against the test registry (distribution 2.8, no referrers API): pushed
//! referrers land in the fallback tag's index, which skopeo reads back independently.

use kiln_oci::media_type::OCI_MANIFEST;
use kiln_oci::{Descriptor, ImageManifest, Reference};
use kiln_registry::referrers::fallback_tag;
use kiln_registry::{RegistryClient, TransportOptions};
use std::path::Path;
use std::process::Command;

fn registry() -> String {
    let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
    let path = Path::new(&dir).join("env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test environment missing ({}: {e}); run `bash testdata/env/setup.sh start` first",
            path.display()
        )
    });
    text.lines()
        .find_map(|l| l.strip_prefix("KILN_TEST_REGISTRY="))
        .expect("KILN_TEST_REGISTRY in the env file")
        .trim()
        .to_string()
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An artifact manifest of `artifact_type` about `subject`, its config and layer `{}`.
fn artifact(artifact_type: &str, subject: &Descriptor, note: &str) -> (Vec<u8>, Descriptor) {
    let empty = Descriptor::of("application/vnd.oci.empty.v1+json", b"{}");
    let mut m = ImageManifest::new(OCI_MANIFEST, empty.clone(), vec![empty]);
    m.artifact_type = Some(artifact_type.to_string());
    m.subject = Some(subject.clone());
    m.annotations = Some([("note".to_string(), note.to_string())].into());
    let bytes = serde_json::to_vec(&m).unwrap();
    let mut desc = Descriptor::of(OCI_MANIFEST, &bytes);
    desc.artifact_type = Some(artifact_type.to_string());
    (bytes, desc)
}

#[test]
fn referrers_fall_back_to_the_tag_schema() {
    let reg = registry();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let repo = format!("{reg}/h5-sign/referrers-{}-{nanos}", std::process::id());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/library/busybox:latest"),
        &format!("docker://{repo}:1"),
    ]);
    let r = Reference::parse(&format!("{repo}:1")).unwrap();
    let client = RegistryClient::new(TransportOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (digest, size, media_type) = rt.block_on(client.head_manifest(&r)).unwrap().unwrap();
    let subject = Descriptor::new(&media_type, digest.clone(), size);

    assert!(rt
        .block_on(client.referrers(&r, &digest, None))
        .unwrap()
        .is_empty());

    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty");
    std::fs::write(&empty_file, b"{}").unwrap();
    let empty = Descriptor::of("application/vnd.oci.empty.v1+json", b"{}");
    rt.block_on(client.push_blob(
        &r,
        &empty,
        &|| std::fs::File::open(&empty_file),
        None,
        &|_| {},
    ))
    .unwrap();
    let (a, a_desc) = artifact("application/x.kiln.a", &subject, "a");
    let (b, b_desc) = artifact("application/x.kiln.b", &subject, "b");
    for (bytes, desc) in [(&a, &a_desc), (&b, &b_desc), (&a, &a_desc)] {
        rt.block_on(client.push_referrer(&r, bytes, desc, &digest))
            .unwrap();
    }

    // Listed once each (a pushed twice), filtered by artifact type on request.
    let all = rt.block_on(client.referrers(&r, &digest, None)).unwrap();
    assert_eq!(
        all.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(),
        vec![a_desc.digest.clone(), b_desc.digest.clone()]
    );
    let only_b = rt
        .block_on(client.referrers(&r, &digest, Some("application/x.kiln.b")))
        .unwrap();
    assert_eq!(only_b, vec![b_desc.clone()]);

    // skopeo reads the fallback index under `sha256-<hex>`, and the artifacts by digest.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}:{}", fallback_tag(&digest)),
    ]);
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[1]["artifactType"], "application/x.kiln.b");
    let fetched = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}@{}", b_desc.digest),
    ]);
    assert_eq!(fetched, b);
}
