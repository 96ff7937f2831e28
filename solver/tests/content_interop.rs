//! The content store is a real OCI image layout: skopeo and umoci read it as is.

use std::io::Write;
use std::process::Command;

use flate2::write::GzEncoder;
use kiln_oci::Digest;
use kiln_solver::content::{ContentStore, Expected};
use oci_spec::image::{
    ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    RootFsBuilder,
};

/// The oci-spec form of a store descriptor: the test builds its documents with oci-spec, an
/// implementation independent of kiln's vocabulary.
fn spec_desc(d: &kiln_oci::Descriptor) -> Descriptor {
    serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap()
}

/// The oci-spec form of a digest.
fn spec_digest(d: &kiln_oci::Digest) -> oci_spec::image::Digest {
    d.to_string().parse().unwrap()
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed; run `bash testdata/env/setup.sh start` to install the test environment"
    );
    Command::new(name)
}

/// Writes a one-layer image into the store and tags it; returns the manifest digest.
fn write_image(store: &ContentStore, name: &str) -> String {
    let mut tar = tar::Builder::new(Vec::new());
    let body = b"hello from kiln\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", &body[..]).unwrap();
    let tar_bytes = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let gz_bytes = gz.finish().unwrap();

    // Stream the layer through an ingest to exercise the writer path.
    let mut ingest = store
        .ingest(Expected::exact(
            Digest::of(&gz_bytes),
            gz_bytes.len() as u64,
        ))
        .unwrap();
    ingest.write_all(&gz_bytes).unwrap();
    let layer = ingest.commit().unwrap();

    let config = ImageConfigurationBuilder::default()
        .architecture("amd64")
        .os("linux")
        .config(
            ConfigBuilder::default()
                .cmd(vec!["/hello".to_string()])
                .build()
                .unwrap(),
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let config_desc = store
        .put_json(MediaType::ImageConfig.to_string().as_str(), &config)
        .unwrap();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(spec_desc(&config_desc))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            layer.size,
            spec_digest(&layer.digest),
        )])
        .build()
        .unwrap();
    let manifest_desc = store
        .put_json(MediaType::ImageManifest.to_string().as_str(), &manifest)
        .unwrap();
    store.set_tag(name, &manifest_desc).unwrap();
    manifest_desc.digest.to_string()
}

#[test]
fn skopeo_inspects_a_tagged_image_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("content")).unwrap();
    let name = "docker.io/library/hello:latest";
    let digest = write_image(&store, name);
    let out = tool("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{name}", store.root().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Layers"].as_array().map(|a| a.len()), Some(1));
}

#[test]
fn umoci_lists_the_tags_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("content")).unwrap();
    write_image(&store, "docker.io/library/hello:latest");
    write_image(&store, "example.com/team/app:v1");
    let out = tool("umoci")
        .arg("ls")
        .arg("--layout")
        .arg(store.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec!["docker.io/library/hello:latest", "example.com/team/app:v1"]
    );
}

#[test]
fn skopeo_copies_an_image_into_the_store_and_we_resolve_it() {
    // The other direction: a layout written by skopeo is readable through our API.
    let src = tempfile::tempdir().unwrap();
    let src_store = ContentStore::open(src.path().join("src")).unwrap();
    let digest = write_image(&src_store, "docker.io/library/hello:latest");
    let dst = tempfile::tempdir().unwrap();
    let dst_path = dst.path().join("dst");
    let out = tool("skopeo")
        .arg("copy")
        .arg(format!(
            "oci:{}:docker.io/library/hello:latest",
            src_store.root().display()
        ))
        .arg(format!("oci:{}:copied", dst_path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst_store = ContentStore::open(&dst_path).unwrap();
    let resolved = dst_store
        .resolve("copied")
        .unwrap()
        .expect("tag written by skopeo");
    assert_eq!(resolved.digest.to_string(), digest);
    let manifest: oci_spec::image::ImageManifest = dst_store.read_json(&resolved.digest).unwrap();
    assert_eq!(manifest.layers().len(), 1);
}
