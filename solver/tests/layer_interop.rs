//! Layers kiln writes are read correctly by another implementation: umoci unpacks an image
//! whose upper layer carries overlay whiteouts, an opaque directory, hard links, symlinks,
//! long names, xattrs and set-uid bits, all converted by `snapshot::layer::write_layer`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use kiln_solver::content::ContentStore;
use kiln_solver::snapshot::layer::{write_layer, DiffOptions, LayerBlob};
use oci_spec::image::{
    Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
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

fn umoci() -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg("command -v umoci")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "umoci is not installed; run `bash testdata/env/setup.sh start` to install the test environment"
    );
    Command::new("umoci")
}

fn lower(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(root.join("gone.txt"), b"to be deleted").unwrap();
    fs::create_dir_all(root.join("opq/sub")).unwrap();
    fs::write(root.join("opq/old"), b"hidden by opaque").unwrap();
    fs::write(root.join("opq/sub/deep"), b"hidden too").unwrap();
    fs::create_dir(root.join("kept")).unwrap();
    fs::write(root.join("kept/a"), b"a").unwrap();
}

fn upper(root: &Path) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(&root.join("gone.txt"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    fs::create_dir(root.join("opq")).unwrap();
    xattr::set(root.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(root.join("opq/new"), b"visible").unwrap();
    fs::create_dir(root.join("kept")).unwrap();
    fs::write(root.join("kept/b"), b"b").unwrap();
    fs::write(root.join("kept/suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("kept/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("kept/b"), root.join("kept/b-link")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", root.join("kept/passwd-link")).unwrap();
    let long = "n".repeat(150);
    fs::write(root.join("kept").join(&long), b"long name").unwrap();
    xattr::set(root.join("kept/b"), "user.kiln", b"yes").unwrap();
}

#[test]
fn umoci_unpacks_kiln_layers_with_whiteouts_and_opaque_dirs() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: overlay whiteouts are device nodes (CI runs as root)"
    );
    let work = tempfile::tempdir().unwrap();
    let store = ContentStore::open(work.path().join("layout")).unwrap();
    let (lo, up) = (work.path().join("lower"), work.path().join("upper"));
    fs::create_dir(&lo).unwrap();
    fs::create_dir(&up).unwrap();
    lower(&lo);
    upper(&up);
    let layers: Vec<LayerBlob> = [&lo, &up]
        .iter()
        .map(|d| write_layer(d, &store, &DiffOptions::default()).unwrap())
        .collect();

    let config = ImageConfigurationBuilder::default()
        .architecture("amd64")
        .os("linux")
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(
                    layers
                        .iter()
                        .map(|l| l.diff_id.to_string())
                        .collect::<Vec<_>>(),
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let config = store
        .put_json(MediaType::ImageConfig.to_string().as_str(), &config)
        .unwrap();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(spec_desc(&config))
        .layers(
            layers
                .iter()
                .map(|l| {
                    Descriptor::new(
                        MediaType::ImageLayerGzip,
                        l.blob.size,
                        spec_digest(&l.blob.digest),
                    )
                })
                .collect::<Vec<_>>(),
        )
        .build()
        .unwrap();
    let manifest = store
        .put_json(MediaType::ImageManifest.to_string().as_str(), &manifest)
        .unwrap();
    store.set_tag("layered", &manifest).unwrap();

    let bundle = work.path().join("bundle");
    let out = umoci()
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:layered", store.root().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");

    assert!(!rootfs.join("gone.txt").exists(), "whiteout honoured");
    let opq: Vec<_> = fs::read_dir(rootfs.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        opq,
        vec!["new".to_string()],
        "opaque dir hides the lower contents"
    );
    assert_eq!(
        fs::read(rootfs.join("kept/a")).unwrap(),
        b"a",
        "lower files kept"
    );
    assert_eq!(fs::read(rootfs.join("kept/b")).unwrap(), b"b");
    let (b, link) = (
        fs::metadata(rootfs.join("kept/b")).unwrap(),
        fs::metadata(rootfs.join("kept/b-link")).unwrap(),
    );
    assert_eq!(b.ino(), link.ino(), "hard link");
    assert_eq!(
        fs::read_link(rootfs.join("kept/passwd-link")).unwrap(),
        Path::new("../etc/passwd")
    );
    assert_eq!(
        fs::read(rootfs.join("kept").join("n".repeat(150))).unwrap(),
        b"long name"
    );
    assert_eq!(
        fs::metadata(rootfs.join("kept/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        xattr::get(rootfs.join("kept/b"), "user.kiln").unwrap(),
        Some(b"yes".to_vec())
    );
    assert!(!rootfs.join(".wh.gone.txt").exists() && !rootfs.join("opq/.wh..wh..opq").exists());
}
