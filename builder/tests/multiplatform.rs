//! `kiln build --platform a,b` end to end against the test registry (whose
//! busybox:latest is an amd64 + arm64 index): one shared graph, RUN under
//! QEMU emulation, the pushed index checked with skopeo, platform-split
//! local output, push-by-digest merged with `kiln imagetools create`.
//!
//! Runs as root: the emulated build registers the arm64 handler with
//! `kiln setup-binfmt` first.

mod support;

use std::path::Path;
use std::process::Command;
use support::{
    executed, setup_binfmt, sha256_hex, skopeo, unique, validate_archive, validate_remote, Build,
    TestEnv,
};

/// `skopeo inspect <flag>` of a registry reference, as JSON.
fn skopeo_inspect(flag: &str, reference: &str) -> serde_json::Value {
    let target = format!("docker://{reference}");
    serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", flag, &target])).unwrap()
}

/// `skopeo inspect --raw` of a registry reference: the manifest or index.
fn raw(reference: &str) -> serde_json::Value {
    skopeo_inspect("--raw", reference)
}

/// `skopeo inspect --config` of a registry reference.
fn remote_config(reference: &str) -> serde_json::Value {
    skopeo_inspect("--config", reference)
}

/// The index's (architecture, manifest digest) pairs.
fn index_platforms(index: &serde_json::Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn emulated_arm64_run_and_pushed_index() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    setup_binfmt(&b, "linux/arm64");
    b.write(
        "Dockerfile",
        &format!(
            "FROM {reg}/library/busybox:latest\nARG TARGETPLATFORM\nRUN uname -m > /arch && echo $TARGETPLATFORM > /target\n"
        ),
    );
    let name = format!("{reg}/mp/{}:v1", unique("emulated"));
    let out_dir = b.path("out");
    let meta = b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=image,name={name},push=true"),
        "-o",
        &format!("type=local,dest={}", out_dir.display()),
    ]);
    // The local output splits by platform, with buildx's directory names.
    assert_eq!(read(&out_dir.join("linux_amd64/arch")), "x86_64");
    assert_eq!(read(&out_dir.join("linux_arm64/arch")), "aarch64");
    assert_eq!(read(&out_dir.join("linux_arm64/target")), "linux/arm64");
    assert_eq!(read(&out_dir.join("linux_amd64/target")), "linux/amd64");

    let index = raw(&name);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    assert_eq!(
        meta["containerimage.digest"].as_str().unwrap(),
        format!("sha256:{}", sha256_hex(&skopeo_raw_bytes(&name))),
        "the metadata names the pushed index"
    );
    let platforms = index_platforms(&index);
    let archs: Vec<&str> = platforms.iter().map(|(a, _)| a.as_str()).collect();
    // Each image, then its attestation manifest (the default provenance, as buildx pushes).
    assert_eq!(archs, ["amd64", "arm64", "unknown", "unknown"]);
    let repo = name.rsplit_once(':').unwrap().0;
    for (arch, digest) in platforms.iter().filter(|(a, _)| a != "unknown") {
        let config = remote_config(&format!("{repo}@{digest}"));
        assert_eq!(config["architecture"].as_str(), Some(arch.as_str()));
        assert_eq!(config["os"].as_str(), Some("linux"));
    }
    // The pushed index holds together: both images (and their attestation manifests) whole,
    // platforms as their configs say.
    assert_eq!(validate_remote(&name).images, 4);

    // Docker media types: a manifest list over Docker manifests.
    let docker_name = format!("{reg}/mp/{}:v1", unique("docker-types"));
    // (Without attestations: they would turn the media types to OCI, as BuildKit does.)
    b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=false",
        "-o",
        &format!("type=registry,name={docker_name},oci-mediatypes=false"),
    ]);
    let list = raw(&docker_name);
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        list["manifests"][1]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(validate_remote(&docker_name).images, 2);
}

fn skopeo_raw_bytes(reference: &str) -> Vec<u8> {
    let target = format!("docker://{reference}");
    skopeo(&["inspect", "--tls-verify=false", "--raw", &target])
}

#[test]
fn buildplatform_stage_runs_once_for_two_targets() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    // The "compiler" stage runs natively once and makes every target's artifact;
    // each target copies its own.
    b.write(
        "Dockerfile",
        &format!(
            "FROM --platform=$BUILDPLATFORM {reg}/library/busybox:latest AS build\n\
             RUN mkdir -p /out && for a in amd64 arm64; do echo bin-$a > /out/$a; done && cat /proc/sys/kernel/random/uuid > /out/run-id\n\
             FROM scratch\n\
             ARG TARGETARCH\n\
             COPY --from=build /out/$TARGETARCH /app\n\
             COPY --from=build /out/run-id /run-id\n"
        ),
    );
    let single = Build::new();
    std::fs::create_dir_all(single.ctx()).unwrap();
    std::fs::copy(b.ctx().join("Dockerfile"), single.ctx().join("Dockerfile")).unwrap();
    let one = single.build(&["--platform", "linux/amd64"]);
    // FROM + RUN of the build stage, two COPYs.
    assert_eq!(executed(&one), 4, "{one}");

    let out_dir = b.path("out");
    let two = b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=local,dest={}", out_dir.display()),
    ]);
    // The build stage once, the COPYs per platform.
    assert_eq!(executed(&two), 6, "{two}");
    assert_eq!(read(&out_dir.join("linux_amd64/app")), "bin-amd64");
    assert_eq!(read(&out_dir.join("linux_arm64/app")), "bin-arm64");
    assert_eq!(
        read(&out_dir.join("linux_amd64/run-id")),
        read(&out_dir.join("linux_arm64/run-id")),
        "both platforms copy the result of the one RUN"
    );
    // A rebuild comes from the cache entirely; type=tar splits by top directory.
    let tar = b.path("fs.tar");
    let again = b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=tar,dest={}", tar.display()),
    ]);
    assert_eq!(executed(&again), 0, "{again}");
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("run tar");
    let names = String::from_utf8_lossy(&listing.stdout);
    for want in ["linux_amd64/app", "linux_arm64/app", "linux_arm64/run-id"] {
        assert!(
            names.lines().any(|l| l.trim_start_matches("./") == want),
            "{want} missing from the tarball: {names}"
        );
    }
}

#[test]
fn index_outputs_to_store_and_oci_and_docker_refused() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {reg}/library/busybox:latest\nCOPY hello /hello\n"),
    );
    b.write("hello", "hi\n");
    let meta = b.build(&["--platform", "linux/amd64,linux/arm64", "-t", "mp/store:1"]);
    // The store (an OCI layout) tags the index.
    let layout = b.root.path().join("content");
    let index_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index_json["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.contains("mp/store:1"))
        })
        .unwrap_or_else(|| panic!("mp/store:1 not tagged: {index_json}"));
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(entry["digest"], meta["containerimage.digest"]);
    let report = b.validate_image("mp/store:1");
    assert_eq!((report.indexes, report.images), (1, 2));

    // type=oci: the tarball's root is the index, and skopeo reads each platform from it.
    let tar = b.path("image.tar");
    b.build(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=oci,dest={}", tar.display()),
    ]);
    for arch in ["amd64", "arm64"] {
        let out = Command::new("skopeo")
            .args(["--override-arch", arch, "inspect", "--config"])
            .arg(format!("oci-archive:{}", tar.display()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo {arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(config["architecture"], arch);
    }
    // Each platform's image and its attestation manifest (the default provenance).
    assert_eq!(validate_archive(&tar)[0].images, 4);

    // BUILDKIT_MULTI_PLATFORM=1: an index even for one platform.
    let one = b.build_env(
        &["--platform", "linux/arm64", "-t", "mp/one:1"],
        &[("BUILDKIT_MULTI_PLATFORM", "1")],
    );
    assert_eq!(
        one["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        one["kiln.platforms"][0]["platform"]["architecture"],
        "arm64"
    );

    // --platform local is the host.
    let local = b.build(&["--platform", "local", "-t", "mp/local:1"]);
    assert_eq!(
        local["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // docker-archive holds one platform: a clear refusal.
    let err = b.build_fails(&[
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=docker,dest={}", b.path("d.tar").display()),
    ]);
    assert!(err.contains("type=docker"), "{err}");
    assert!(err.contains("type=oci"), "{err}");
    b.validate_image("mp/one:1");
    b.validate_image("mp/local:1");
    b.validate();
}

#[test]
fn push_by_digest_builds_merge_with_imagetools_create() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {reg}/library/busybox:latest\nARG TARGETARCH\nCOPY hello /hello-$TARGETARCH\n"
        ),
    );
    b.write("hello", "hi\n");
    let repo = format!("{reg}/mp/{}", unique("bydigest"));
    let mut digests = Vec::new();
    let mut pushed = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let meta = b.build(&[
            "--platform",
            platform,
            "-o",
            &format!("type=image,name={repo},push-by-digest=true,push=true"),
        ]);
        let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
        // Pushed untagged, but there by digest: with the default provenance, an index of
        // the image and its attestation manifest.
        let m = raw(&format!("{repo}@{digest}"));
        assert_eq!(m["mediaType"], "application/vnd.oci.image.index.v1+json");
        digests.push(m["manifests"][0]["digest"].as_str().unwrap().to_string());
        pushed.push(digest);
        assert_eq!(
            m["manifests"][1]["annotations"]["vnd.docker.reference.digest"],
            m["manifests"][0]["digest"]
        );
    }
    let tags = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repo}"))
        .output()
        .expect("run skopeo");
    let listed = String::from_utf8_lossy(&tags.stdout);
    assert!(
        !listed.contains("latest"),
        "push-by-digest must not tag: {listed}"
    );

    let target = format!("{repo}:multi");
    let sources: Vec<String> = pushed.iter().map(|d| format!("{repo}@{d}")).collect();
    let mut args = vec!["imagetools", "create", "-t", target.as_str()];
    args.extend(sources.iter().map(String::as_str));
    let out = b.kiln(&args);
    assert!(
        out.status.success(),
        "imagetools create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = raw(&target);
    let platforms = index_platforms(&index);
    assert_eq!(
        platforms,
        vec![
            ("amd64".to_string(), digests[0].clone()),
            ("unknown".to_string(), platforms[1].1.clone()),
            ("arm64".to_string(), digests[1].clone()),
            ("unknown".to_string(), platforms[3].1.clone()),
        ],
        "the images and their attestation manifests merged"
    );
    assert_eq!(validate_remote(&target).images, 4);
}

#[test]
fn foreign_run_without_a_handler_names_the_fix() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {reg}/library/busybox:latest\nRUN uname -m > /arch\n"),
    );
    // An empty directory stands for a host where binfmt_misc has no handlers.
    let empty = b.path("no-binfmt");
    std::fs::create_dir_all(&empty).unwrap();
    let ctx = b.ctx();
    let out = b.kiln_env(
        &["build", "--platform", "linux/arm64", ctx.to_str().unwrap()],
        &[("KILN_BINFMT_MISC", empty.to_str().unwrap())],
    );
    assert!(!out.status.success(), "the build should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln setup-binfmt"), "{err}");
    assert!(err.contains("apt-get install qemu-user-static"), "{err}");
    assert!(err.contains("linux/arm64"), "{err}");
    assert!(
        err.contains("Dockerfile:2"),
        "the error points at the RUN: {err}"
    );
}

#[test]
fn platforms_with_variants_name_each_image_as_its_config_does() {
    // arm/v6 and arm/v7 are two platforms; arm64/v8 is arm64 (containerd's normalisation).
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch\nARG TARGETPLATFORM\nCOPY f /f\nLABEL p=$TARGETPLATFORM\n",
    );
    b.write("f", "variants\n");
    b.build(&[
        "--platform",
        "linux/amd64,linux/arm/v7,linux/arm64/v8,linux/arm/v6,linux/386",
        "-t",
        "validate-mp/variants:1",
    ]);
    let report = b.validate_image("validate-mp/variants:1");
    assert_eq!((report.indexes, report.images, report.layers), (1, 5, 5));
}
