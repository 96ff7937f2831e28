//! Image archives with skopeo as the oracle: `kiln load` of multi-image `docker save`
//! archives (legacy `ID/layer.tar` symbolic links to shared layers, several RepoTags),
//! `kiln copy` with skopeo's `oci-archive:` and `docker-archive:` transports both ways,
//! and OCI tarballs whose `org.opencontainers.image.ref.name` is the tag (the full name in
//! `io.containerd.image.name`), as containerd and BuildKit write them.

mod support;

use std::path::Path;
use std::process::Command;
use support::{
    sha256_hex, skopeo, stdout_ok, unique, validate_archive, validate_remote, Build, TestEnv,
};

fn ok(b: &Build, args: &[&str]) -> String {
    stdout_ok(&b.kiln(args), &format!("kiln {args:?}"))
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&skopeo(args)).unwrap()
}

fn entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, data: &[u8], link: &str) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    if !link.is_empty() {
        h.set_link_name(link).unwrap();
    }
    b.append_data(&mut h, name, data).unwrap();
}

/// An uncompressed layer holding one file.
fn layer(file: &str, content: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    entry(
        &mut b,
        tar::EntryType::Regular,
        file,
        content.as_bytes(),
        "",
    );
    b.into_inner().unwrap()
}

fn config(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A `docker save` archive of Docker 24 and before with two images sharing a layer: the
/// second image's copy of it is a symbolic link to the first's `layer.tar`.
fn legacy_multi_image_archive(path: &Path) -> (String, String) {
    let shared = layer("shared.txt", "in both images");
    let own = layer("own.txt", "only in b");
    let config_a = config(&[&shared]);
    let config_b = config(&[&shared, &own]);
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["1111", "2222", "3333"] {
        entry(
            &mut b,
            tar::EntryType::Directory,
            &format!("{dir}/"),
            b"",
            "",
        );
        entry(
            &mut b,
            tar::EntryType::Regular,
            &format!("{dir}/VERSION"),
            b"1.0",
            "",
        );
    }
    entry(
        &mut b,
        tar::EntryType::Regular,
        "1111/layer.tar",
        &shared,
        "",
    );
    entry(
        &mut b,
        tar::EntryType::Symlink,
        "2222/layer.tar",
        b"",
        "../1111/layer.tar",
    );
    entry(&mut b, tar::EntryType::Regular, "3333/layer.tar", &own, "");
    let (ca, cb) = (sha256_hex(&config_a), sha256_hex(&config_b));
    entry(
        &mut b,
        tar::EntryType::Regular,
        &format!("{ca}.json"),
        &config_a,
        "",
    );
    entry(
        &mut b,
        tar::EntryType::Regular,
        &format!("{cb}.json"),
        &config_b,
        "",
    );
    let manifest = serde_json::json!([
        {"Config": format!("{ca}.json"), "RepoTags": ["platform-a:1", "platform-a:latest"], "Layers": ["1111/layer.tar"]},
        {"Config": format!("{cb}.json"), "RepoTags": ["platform-b:1"], "Layers": ["2222/layer.tar", "3333/layer.tar"]},
    ]);
    entry(
        &mut b,
        tar::EntryType::Regular,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
        "",
    );
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
    (format!("sha256:{ca}"), format!("sha256:{cb}"))
}

#[test]
fn load_reads_multi_image_docker_save_archives_with_linked_layers() {
    let env = TestEnv::load();
    let b = Build::new();
    let tar = b.path("multi.tar");
    let (id_a, id_b) = legacy_multi_image_archive(&tar);
    let out = ok(&b, &["load", "-i", tar.to_str().unwrap()]);
    for name in ["platform-a:1", "platform-a:latest", "platform-b:1"] {
        assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    }
    let id = |name: &str| {
        ok(&b, &["inspect", "--format", "{{.Id}}", name])
            .trim()
            .to_string()
    };
    assert_eq!(id("platform-a:1"), id_a);
    assert_eq!(id("platform-a:latest"), id_a);
    assert_eq!(id("platform-b:1"), id_b);
    // The linked layer is stored, byte for byte, and listed by the manifest.
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&b, &["inspect", "platform-b:1"])).unwrap();
    let layers: Vec<String> = inspected[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let (shared, own) = (
        layer("shared.txt", "in both images"),
        layer("own.txt", "only in b"),
    );
    assert_eq!(
        layers,
        [
            format!("sha256:{}", sha256_hex(&shared)),
            format!("sha256:{}", sha256_hex(&own))
        ]
    );
    assert_eq!(std::fs::read(b.blob(&layers[0])).unwrap(), shared);
    assert_eq!(std::fs::read(b.blob(&layers[1])).unwrap(), own);
    // What load stored holds together (a legacy archive has no layout to validate itself).
    let reports = b.validate();
    assert_eq!(reports.iter().map(|r| r.images).sum::<usize>(), 2);
    b.validate_image("platform-b:1");

    // kiln copy takes one image of the archive by name, and skopeo reads the copy.
    let dest = format!(
        "{}/{}:1",
        env.registry(),
        unique("platform-archives-from-archive")
    );
    ok(
        &b,
        &[
            "copy",
            &format!("docker-archive:{}:platform-b:1", tar.display()),
            &dest,
        ],
    );
    let config = skopeo_json(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{dest}"),
    ]);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let raw = skopeo_json(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ]);
    assert_eq!(raw["config"]["digest"], id_b.as_str());
    assert_eq!(validate_remote(&dest).layers, 2);
    // Without a name, several images are an error that lists them.
    let err = b.kiln(&["copy", &format!("docker-archive:{}", tar.display()), &dest]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("platform-b:1") && err.contains("2 images"),
        "{err}"
    );
}

#[test]
fn load_takes_every_name_of_a_skopeo_archive() {
    let env = TestEnv::load();
    let b = Build::new();
    let tar = b.path("skopeo.tar");
    let src = format!("docker://{}/library/busybox:latest", env.registry());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        "--additional-tag",
        "platform-extra:2",
        &src,
        &format!("docker-archive:{}:platform-main:1", tar.display()),
    ]);
    let out = ok(&b, &["load", "-i", tar.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: platform-main:1")
            && out.contains("Loaded image: platform-extra:2"),
        "{out}"
    );
    let raw = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}", tar.display()),
    ]);
    for name in ["platform-main:1", "platform-extra:2"] {
        let id = ok(&b, &["inspect", "--format", "{{.Id}}", name]);
        assert_eq!(
            id.trim(),
            raw["config"]["digest"].as_str().unwrap(),
            "{name}"
        );
    }
    b.validate_image("platform-main:1");
}

#[test]
fn oci_archives_name_the_tag_and_copy_both_ways() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("f", "oci archive\n");
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    let built = b.path("built.tar");
    b.build(&[
        "-t",
        "platform-app:1",
        "-o",
        &format!("type=oci,dest={}", built.display()),
    ]);
    let saved = b.path("saved.tar");
    ok(
        &b,
        &[
            "build",
            "-q",
            "-t",
            "platform-app:1",
            b.ctx().to_str().unwrap(),
        ],
    );
    ok(
        &b,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            saved.to_str().unwrap(),
            "platform-app:1",
        ],
    );
    for tar in [&built, &saved] {
        // As containerd writes it: the tag, and the full name beside it.
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(tar)
            .arg("index.json")
            .output()
            .unwrap();
        let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let a = &index["manifests"][0]["annotations"];
        assert_eq!(a["org.opencontainers.image.ref.name"], "1", "{index}");
        assert_eq!(
            a["io.containerd.image.name"],
            "docker.io/library/platform-app:1"
        );
        // skopeo finds the image by that tag.
        let config = skopeo_json(&[
            "inspect",
            "--config",
            &format!("oci-archive:{}:1", tar.display()),
        ]);
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().map(Vec::len),
            Some(1)
        );
        validate_archive(tar);
    }

    // oci-archive -> registry -> oci-archive, each read back by skopeo.
    let repo = format!("{}/{}", env.registry(), unique("platform-archives-oci"));
    ok(
        &b,
        &[
            "copy",
            &format!("oci-archive:{}:1", saved.display()),
            &format!("{repo}:1"),
        ],
    );
    let pushed = skopeo_json(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{repo}:1"),
    ]);
    let local = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:1", saved.display()),
    ]);
    assert_eq!(pushed, local, "the registry has the archive's manifest");
    validate_remote(&format!("{repo}:1"));
    let back = b.path("back.tar");
    ok(
        &b,
        &[
            "copy",
            &format!("{repo}:1"),
            &format!("oci-archive:{}:v2", back.display()),
        ],
    );
    let again = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v2", back.display()),
    ]);
    assert_eq!(again, local);
    validate_archive(&back);
    // A tag the archive lacks is named in the error.
    let err = b.kiln(&[
        "copy",
        &format!("oci-archive:{}:nope", back.display()),
        &format!("{repo}:2"),
    ]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("no image tagged nope") && err.contains("v2"),
        "{err}"
    );

    // An archive skopeo wrote (a tag, no full name) copies into a registry and a docker archive.
    let by_skopeo = b.path("by-skopeo.tar");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}:1", saved.display()),
        &format!("oci-archive:{}:3", by_skopeo.display()),
    ]);
    let docker = b.path("docker.tar");
    ok(
        &b,
        &[
            "copy",
            &format!("oci-archive:{}:3", by_skopeo.display()),
            &format!("docker-archive:{}:platform-app:3", docker.display()),
        ],
    );
    let raw = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}", docker.display()),
    ]);
    assert_eq!(raw["config"]["digest"], local["config"]["digest"]);
    validate_archive(&docker);
    b.validate_image("platform-app:1");
}
