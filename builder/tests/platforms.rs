//! Base images are chosen by platform, never assumed: a local image without a
//! recorded platform (loaded from a `docker save` archive, or built) is used only
//! for the platform its config declares; another platform comes from the registry
//! or fails naming it. Indexes never list one platform twice. The registry's
//! `library/busybox:latest` is an amd64 + arm64 index; skopeo is the oracle.

mod support;

use support::{read_json, skopeo, stdout_ok, unique, Build, TestEnv};

/// `skopeo inspect FLAG docker://REF` (plain HTTP registry) as JSON.
fn inspect(flag: &str, reference: &str) -> serde_json::Value {
    let target = format!("docker://{reference}");
    serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", flag, &target])).unwrap()
}

/// An error as one line: miette's wrapping and margins removed.
fn flat(err: &str) -> String {
    err.split_whitespace()
        .filter(|t| *t != "│")
        .collect::<Vec<_>>()
        .join(" ")
        .replace("/ ", "/")
}

/// The first diffID of the registry image for `arch`, as skopeo reads it.
fn registry_base_layer(reference: &str, arch: &str) -> String {
    let target = format!("docker://{reference}");
    let config: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        arch,
        "--config",
        &target,
    ]))
    .unwrap();
    assert_eq!(config["architecture"], arch);
    config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// Loads the amd64 busybox into `b`'s store from a docker-archive, under `name`:
/// a single manifest, no platform recorded.
fn load_amd64_busybox(b: &Build, reg: &str, name: &str) {
    let tar = b.path("busybox-amd64.tar");
    let _ = std::fs::remove_file(&tar);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        &format!("docker://{reg}/library/busybox:latest"),
        &format!("docker-archive:{}:{name}", tar.display()),
    ]);
    stdout_ok(&b.kiln(&["load", "-i", tar.to_str().unwrap()]), "kiln load");
    let index = read_json(&b.root.path().join("content/index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not loaded: {index}"));
    assert!(
        entry.get("platform").is_none(),
        "the loaded image must have no recorded platform for this test: {entry}"
    );
}

#[test]
fn platformless_local_base_is_not_used_for_another_platform() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    let busybox = format!("{reg}/library/busybox:latest");
    load_amd64_busybox(&b, reg, &busybox);
    b.write("f", "hello\n");
    b.write("Dockerfile", &format!("FROM {busybox}\nCOPY f /f\n"));

    // arm64 is not in the store: it comes from the registry.
    b.build(&["--platform", "linux/arm64", "-t", "platform-arm:1"]);
    let config = b.raw_config("docker.io/library/platform-arm:1");
    assert_eq!(config["architecture"], "arm64", "{config}");
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        registry_base_layer(&busybox, "arm64"),
        "the base layer is arm64 busybox's"
    );
    // amd64 is the loaded image.
    b.build(&["--platform", "linux/amd64", "-t", "platform-amd:1"]);
    let config = b.raw_config("docker.io/library/platform-amd:1");
    assert_eq!(config["architecture"], "amd64", "{config}");
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        registry_base_layer(&busybox, "amd64")
    );

    // Both at once, pushed: one entry per platform, each image for its platform.
    let pushed = format!("{reg}/{}:1", unique("platform-multi"));
    b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &pushed,
        "--push",
    ]);
    let index = inspect("--raw", &pushed);
    let entries = index["manifests"].as_array().expect("an index");
    let archs: Vec<&str> = entries
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    // Each image, then its attestation manifest (the default provenance, as buildx pushes).
    assert_eq!(archs, ["amd64", "arm64", "unknown", "unknown"], "{index}");
    let repo = pushed.rsplit_once(':').unwrap().0;
    for m in entries.iter().filter(|m| m["platform"]["os"] != "unknown") {
        let config = inspect(
            "--config",
            &format!("{repo}@{}", m["digest"].as_str().unwrap()),
        );
        assert_eq!(config["architecture"], m["platform"]["architecture"]);
    }
}

#[test]
fn local_only_base_for_another_platform_fails_naming_it() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    // A name the registry does not have.
    let name = format!("{reg}/{}:1", unique("platform-missing"));
    load_amd64_busybox(&b, reg, &name);
    b.write("Dockerfile", &format!("FROM {name}\nENV A=1\n"));
    let err = flat(&b.build_fails(&["--platform", "linux/arm64"]));
    assert!(
        err.contains("linux/arm64") && err.contains("linux/amd64"),
        "the error names the platform wanted and the one the store has: {err}"
    );
    // Nor does `kiln save` put it in an archive asked to be arm64.
    let tar = b.path("arm.tar");
    let out = b.kiln(&[
        "save",
        "--platform",
        "linux/arm64",
        "-o",
        tar.to_str().unwrap(),
        &name,
    ]);
    assert!(!out.status.success(), "kiln save should refuse");
    let err = flat(&String::from_utf8_lossy(&out.stderr));
    assert!(
        err.contains("no manifest for platform linux/arm64"),
        "{err}"
    );
    // Its own platform builds.
    b.build(&["--platform", "linux/amd64"]);
}

#[test]
fn one_platform_twice_is_refused_in_builds_and_imagetools() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    // The final stage pins amd64: both targets would be amd64 images.
    b.write(
        "Dockerfile",
        &format!("FROM --platform=linux/amd64 {reg}/library/busybox:latest\nENV A=1\n"),
    );
    let name = format!("{reg}/{}:1", unique("platform-twice"));
    let err = flat(&b.build_fails(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &name,
        "--push",
    ]));
    assert!(err.contains("two images for platform linux/amd64"), "{err}");

    // imagetools create over two different amd64 images.
    let repo = format!("{reg}/{}", unique("platform-tools"));
    b.write("Dockerfile", "FROM scratch\nLABEL v=a\n");
    b.build(&[
        "--platform",
        "linux/amd64",
        "-t",
        &format!("{repo}:a"),
        "--push",
    ]);
    b.write("Dockerfile", "FROM scratch\nLABEL v=b\n");
    b.build(&[
        "--platform",
        "linux/amd64",
        "-t",
        &format!("{repo}:b"),
        "--push",
    ]);
    let out = b.kiln(&[
        "imagetools",
        "create",
        "-t",
        &format!("{repo}:both"),
        &format!("{repo}:a"),
        &format!("{repo}:b"),
    ]);
    assert!(!out.status.success(), "imagetools create should refuse");
    let err = flat(&String::from_utf8_lossy(&out.stderr));
    assert!(err.contains("two images for platform linux/amd64"), "{err}");
}

#[test]
fn single_platform_registry_image_is_refused_for_another_platform() {
    let env = TestEnv::load();
    let reg = env.registry();
    // A single amd64 manifest (no index) in the registry.
    let single = format!("{reg}/{}:1", unique("platform-single"));
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--override-arch",
        "amd64",
        &format!("docker://{reg}/library/busybox:latest"),
        &format!("docker://{single}"),
    ]);
    assert!(
        inspect("--raw", &single)["config"].is_object(),
        "a single manifest"
    );
    let b = Build::new();
    b.write("Dockerfile", &format!("FROM {single}\nENV A=1\n"));
    let err = flat(&b.build_fails(&["--platform", "linux/arm64"]));
    assert!(
        err.contains("no image for platform linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    let out = b.kiln(&["pull", "--platform", "linux/arm64", &single]);
    assert!(!out.status.success(), "kiln pull should refuse");
    let err = flat(&String::from_utf8_lossy(&out.stderr));
    assert!(err.contains("wanted linux/arm64"), "{err}");
    let out = b.kiln(&["images", "-q"]);
    assert!(out.stdout.is_empty(), "nothing was tagged");
    // The platform it is for builds.
    b.build(&["--platform", "linux/amd64"]);
}
