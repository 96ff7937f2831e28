//! `kiln imagetools inspect` of attestations as buildx prints them (`{{json .Provenance}}`,
//! `{{json .SBOM}}`), checked against the statements skopeo copies out of the registry and
//! against an independent JSON printer (Python's, with Go's HTML escaping); and the local
//! commands (`inspect`, `history`, `images`) unaffected by an index's attestation entries.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use support::{busybox, skopeo, skopeo_raw_json as raw, stdout_ok, unique, Build, TestEnv};

/// Per image digest, the statements of its attestation manifest, copied out of the registry
/// by skopeo (`repo@digest` to a `dir:`), in layer order.
fn statements_by_image(repo: &str, work: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let index = raw(&format!("{repo}:1"));
    let mut out = BTreeMap::new();
    for (i, entry) in index["manifests"].as_array().unwrap().iter().enumerate() {
        let Some(subject) = entry["annotations"]["vnd.docker.reference.digest"].as_str() else {
            continue;
        };
        let dir = work.join(format!("attestation-{i}"));
        let digest = entry["digest"].as_str().unwrap();
        out.insert(subject.to_string(), copy_statements(repo, digest, &dir));
    }
    out
}

/// The statements (layers) of the manifest `repo@digest`, copied out by skopeo into `dir`.
fn copy_statements(repo: &str, digest: &str, dir: &Path) -> Vec<serde_json::Value> {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{repo}@{digest}"),
        &format!("dir:{}", dir.display()),
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            serde_json::from_slice(&std::fs::read(dir.join(hex)).unwrap()).unwrap()
        })
        .collect()
}

/// The platform (`linux/arm64`) of each image entry of the index at `repo:1`, by digest.
fn platforms(repo: &str) -> BTreeMap<String, String> {
    raw(&format!("{repo}:1"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["platform"]["os"] != "unknown")
        .map(|d| {
            let p = &d["platform"];
            (
                d["digest"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

/// `v` printed as Go's `json.MarshalIndent(v, "", "  ")` does, by Python: sorted keys, two
/// spaces, HTML characters escaped.
fn go_indented(v: &serde_json::Value) -> String {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json,sys; s=json.dumps(json.load(sys.stdin), indent=2, sort_keys=True, \
             ensure_ascii=False); print(s.replace('<','\\\\u003c').replace('>','\\\\u003e')\
             .replace('&','\\\\u0026'), end='')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(v.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn inspect_format(b: &Build, tag: &str, format: &str) -> String {
    stdout_ok(
        &b.kiln(&["imagetools", "inspect", "--format", format, tag]),
        "imagetools inspect",
    )
}

/// The predicate of the statement of `predicate_type` (first one) among `sts`.
fn predicate<'a>(sts: &'a [serde_json::Value], prefix: &str) -> &'a serde_json::Value {
    &sts.iter()
        .find(|s| s["predicateType"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} statement in {sts:#?}"))["predicate"]
}

#[test]
fn single_platform_provenance_and_sbom_print_as_buildx_prints_them() {
    let env = TestEnv::load();
    let b = Build::new();
    let base = env.get("KILN_TEST_DEBIAN_IMAGE");
    b.write("Dockerfile", &format!("FROM {base}\nCOPY f /f\n"));
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("sbomx-single"));
    let tag = format!("{repo}:1");
    b.build(&["--push", "-t", &tag, "--provenance=mode=max", "--sbom=true"]);
    let by_image = statements_by_image(&repo, b.work.path());
    assert_eq!(by_image.len(), 1, "{by_image:#?}");
    let sts = by_image.values().next().unwrap();
    let slsa = predicate(sts, "https://slsa.dev/provenance/");
    let spdx = predicate(sts, "https://spdx.dev/Document");
    assert!(slsa["buildDefinition"]["internalParameters"]["buildConfig"].is_object());
    assert!(spdx["packages"].as_array().is_some_and(|p| !p.is_empty()));

    let provenance = inspect_format(&b, &tag, "{{json .Provenance}}");
    let want = serde_json::json!({ "SLSA": slsa });
    assert_eq!(provenance.trim_end(), go_indented(&want));
    let sbom = inspect_format(&b, &tag, "{{json .SBOM}}");
    let want = serde_json::json!({ "SPDX": spdx });
    assert_eq!(sbom.trim_end(), go_indented(&want));
    // Fields reach into them as into any map.
    let name = inspect_format(&b, &tag, "{{.SBOM.SPDX.name}}");
    assert_eq!(name.trim(), spdx["name"].as_str().unwrap());

    // The whole document and `.Image` (the config the registry has for the image).
    let image_digest = by_image.keys().next().unwrap();
    let image = raw(&format!("{repo}@{image_digest}"));
    let doc: serde_json::Value = serde_json::from_str(&inspect_format(&b, &tag, "json")).unwrap();
    assert_eq!(doc["name"], tag.as_str());
    assert_eq!(doc["manifest"]["digest"], sha256_of_raw(&tag));
    assert_eq!(doc["manifest"]["manifests"], raw(&tag)["manifests"]);
    let config_digest = image["config"]["digest"].as_str().unwrap();
    let config = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        "--config",
        &format!("docker://{repo}@{image_digest}"),
    ]);
    assert_eq!(support::sha256_digest(&config), config_digest);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(doc["image"], config);

    // The summary lists the attestation manifest as buildx does.
    let summary = stdout_ok(
        &b.kiln(&["imagetools", "inspect", &tag]),
        "imagetools inspect",
    );
    assert!(summary.contains("unknown/unknown"), "{summary}");
    assert!(
        summary.contains(&format!("vnd.docker.reference.digest: {image_digest}")),
        "{summary}"
    );
    assert!(
        summary.contains("vnd.docker.reference.type: attestation-manifest"),
        "{summary}"
    );
    // `{{.Manifest}}`, buildx's default format, is the summary.
    assert_eq!(inspect_format(&b, &tag, "{{ .Manifest }}"), summary);
    // --raw is the registry's bytes, and refuses --format as buildx does.
    let out = b.kiln(&["imagetools", "inspect", "--raw", &tag]);
    assert_eq!(
        out.stdout,
        skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{tag}")
        ])
    );
    let out = b.kiln(&["imagetools", "inspect", "--raw", "--format", "json", &tag]);
    assert!(!out.status.success());
}

fn sha256_of_raw(tag: &str) -> String {
    support::sha256_digest(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ]))
}

#[test]
fn multi_platform_attestations_are_maps_keyed_by_platform() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("sbomx-multi"));
    let tag = format!("{repo}:1");
    b.build(&[
        "--push",
        "-t",
        &tag,
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=max",
        "--sbom=true",
    ]);
    let by_image = statements_by_image(&repo, b.work.path());
    let platforms = platforms(&repo);
    assert_eq!(by_image.len(), 2, "{by_image:#?}");
    let mut provenance = serde_json::Map::new();
    let mut sbom = serde_json::Map::new();
    for (digest, sts) in &by_image {
        let p = platforms[digest].clone();
        provenance.insert(
            p.clone(),
            serde_json::json!({"SLSA": predicate(sts, "https://slsa.dev/provenance/")}),
        );
        sbom.insert(
            p,
            serde_json::json!({"SPDX": predicate(sts, "https://spdx.dev/Document")}),
        );
    }
    assert_eq!(
        provenance.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    assert_eq!(
        inspect_format(&b, &tag, "{{json .Provenance}}").trim_end(),
        go_indented(&provenance.into())
    );
    assert_eq!(
        inspect_format(&b, &tag, "{{json .SBOM}}").trim_end(),
        go_indented(&sbom.into())
    );
    let one = inspect_format(
        &b,
        &tag,
        r#"{{(index .Provenance "linux/arm64").SLSA.buildDefinition.buildType}}"#,
    );
    assert!(one.trim().starts_with("https://"), "{one}");
}

#[test]
fn an_image_without_attestations_prints_empty_stubs() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let tag = format!("{}/{}:1", env.registry(), unique("sbomx-plain"));
    b.build(&["--push", "-t", &tag, "--provenance=false"]);
    assert_eq!(
        inspect_format(&b, &tag, "{{json .Provenance}}").trim(),
        "{}"
    );
    assert_eq!(inspect_format(&b, &tag, "{{json .SBOM}}").trim(), "{}");
    // A single manifest's `.Manifest` is its descriptor, as buildx prints it.
    let m: serde_json::Value =
        serde_json::from_str(&inspect_format(&b, &tag, "{{json .Manifest}}")).unwrap();
    assert_eq!(m["digest"], sha256_of_raw(&tag));
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
}

#[test]
fn local_inspect_history_and_images_skip_attestation_entries() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    // A platform other than this machine's: the index holds it and its attestation
    // manifest (`unknown/unknown`), and commands asked for no platform must pick the image.
    let tag = "sbomx-local:1";
    b.build(&[
        "-t",
        tag,
        "--platform",
        "linux/arm64",
        "--provenance=mode=min",
        "--sbom=true",
    ]);
    let m = b.manifest("docker.io/library/sbomx-local:1");
    let unknown = m["manifests"].as_array().map(|ms| {
        ms.iter()
            .filter(|d| d["platform"]["os"] == "unknown")
            .count()
    });
    assert_eq!(unknown, Some(1), "the store holds the attestations: {m:#}");
    let arch = stdout_ok(
        &b.kiln(&["inspect", "--format", "{{.Architecture}}", tag]),
        "inspect",
    );
    assert_eq!(arch.trim(), "arm64");
    let history = stdout_ok(&b.kiln(&["history", tag]), "history");
    assert!(history.contains("COPY f /f"), "{history}");
    let images = stdout_ok(
        &b.kiln(&["images", "--format", "{{.Repository}} {{.Platforms}}"]),
        "images",
    );
    assert!(!images.contains("unknown"), "{images}");
}

#[test]
fn referrers_attestations_print_as_the_index_form_does() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("sbomx-referrers"));
    let tag = format!("{repo}:1");
    b.build(&[
        "-o",
        &format!("type=registry,name={tag},referrers=true"),
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=mode=max",
        "--sbom=true",
    ]);
    let platforms = platforms(&repo);
    assert_eq!(platforms.len(), 2);
    let index = raw(&tag);
    assert!(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["platform"]["os"] != "unknown"),
        "no unknown/unknown entry in referrers mode: {index:#}"
    );
    // The oracle: each image's referrers, listed by the fallback tag `sha256-<hex>`
    // (distribution 2.8 has no referrers API), copied out by skopeo.
    let mut provenance = serde_json::Map::new();
    let mut sbom = serde_json::Map::new();
    for (digest, platform) in &platforms {
        let listed = raw(&format!("{repo}:{}", digest.replace(':', "-")));
        let artifacts = listed["manifests"].as_array().unwrap();
        let attestation = artifacts
            .iter()
            .find(|d| d["artifactType"] == "application/vnd.docker.attestation.manifest.v1+json")
            .unwrap_or_else(|| panic!("no attestation referrer of {digest}: {listed:#}"));
        let dir = b.work.path().join(digest.replace(':', "-"));
        let sts = copy_statements(&repo, attestation["digest"].as_str().unwrap(), &dir);
        provenance.insert(
            platform.clone(),
            serde_json::json!({"SLSA": predicate(&sts, "https://slsa.dev/provenance/")}),
        );
        sbom.insert(
            platform.clone(),
            serde_json::json!({"SPDX": predicate(&sts, "https://spdx.dev/Document")}),
        );
    }
    assert_eq!(
        inspect_format(&b, &tag, "{{json .Provenance}}").trim_end(),
        go_indented(&provenance.into())
    );
    assert_eq!(
        inspect_format(&b, &tag, "{{json .SBOM}}").trim_end(),
        go_indented(&sbom.into())
    );
}
