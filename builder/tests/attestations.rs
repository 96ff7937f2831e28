//! Build attestations end to end: provenance (and SBOM) pushed to the test registry as buildx
//! stores them, read back with skopeo, checked against the in-toto and SLSA schemas and
//! against independent facts (sha256sum, skopeo's view of the base image, dpkg-deb).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{
    busybox, files_holding, sha256_digest, skopeo, skopeo_raw_json as raw, unique, Build, TestEnv,
};

const SECRET: &str = "h5attest-secret-value-3b9f";

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("vendored schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("a valid schema")
}

fn assert_valid(schema_name: &str, doc: &serde_json::Value) {
    let v = schema(schema_name);
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\n{doc:#}");
}

/// A blob the build pushed, from the build's store, checked against its digest by sha256sum.
fn blob(b: &Build, digest: &str) -> Vec<u8> {
    let bytes = std::fs::read(b.blob(digest)).expect("blob in the store");
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "blob content matches its digest"
    );
    bytes
}

/// The attestation-manifest entries of an index.
fn attestation_entries(index: &serde_json::Value) -> Vec<serde_json::Value> {
    index["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .filter(|d| d["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .cloned()
        .collect()
}

/// Each statement of an attestation manifest read from the registry (`repo@digest`).
fn statements(b: &Build, repo: &str, entry: &serde_json::Value) -> Vec<serde_json::Value> {
    let m = raw(&format!("{repo}@{}", entry["digest"].as_str().unwrap()));
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            let st: serde_json::Value =
                serde_json::from_slice(&blob(b, l["digest"].as_str().unwrap())).unwrap();
            assert_eq!(
                l["annotations"]["in-toto.io/predicate-type"], st["predicateType"],
                "the layer names its predicate"
            );
            st
        })
        .collect()
}

fn image_entries(index: &serde_json::Value) -> Vec<serde_json::Value> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["platform"]["os"] != "unknown")
        .cloned()
        .collect()
}

fn context_with_secret(b: &Build, env: &TestEnv) -> PathBuf {
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nARG GREETING\nCOPY hello /hello\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo \"$GREETING\" > /greeting\n",
            busybox(env)
        ),
    );
    b.write("hello", "hi\n");
    let secret = b.path("tok");
    std::fs::write(&secret, SECRET).unwrap();
    secret
}

#[test]
fn pushed_image_carries_min_provenance_by_default_as_buildx_stores_it() {
    let env = TestEnv::load();
    let b = Build::new();
    let secret = context_with_secret(&b, &env);
    let repo = format!("{}/{}", env.registry(), unique("h5attest-default"));
    let tag = format!("{repo}:1");
    let secret_flag = format!("id=tok,src={}", secret.display());
    b.build(&[
        "--push",
        "-t",
        &tag,
        "--secret",
        &secret_flag,
        "--build-arg",
        "GREETING=hello-arg",
    ]);
    let index = raw(&tag);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let images = image_entries(&index);
    assert_eq!(images.len(), 1, "{index:#}");
    let attests = attestation_entries(&index);
    assert_eq!(attests.len(), 1, "{index:#}");
    let a = &attests[0];
    assert_eq!(a["platform"]["os"], "unknown");
    assert_eq!(a["platform"]["architecture"], "unknown");
    assert_eq!(
        a["annotations"]["vnd.docker.reference.digest"],
        images[0]["digest"]
    );
    let sts = statements(&b, &repo, a);
    assert_eq!(sts.len(), 1, "min provenance only");
    let st = &sts[0];
    assert_valid("in-toto-statement-v1.schema.json", st);
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_valid("slsa-provenance-v1.schema.json", &st["predicate"]);
    let image_digest = images[0]["digest"].as_str().unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            st["subject"][0]["digest"]["sha256"].as_str().unwrap()
        ),
        image_digest
    );
    let def = &st["predicate"]["buildDefinition"];
    let dockerfile = std::fs::read(b.ctx().join("Dockerfile")).unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            def["externalParameters"]["configSource"]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        sha256_digest(&dockerfile)
    );
    assert_eq!(
        def["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let args = &def["externalParameters"]["request"]["args"];
    assert_eq!(args["build-arg:GREETING"], "hello-arg");
    assert_eq!(
        args["platform"],
        images[0]["platform"]["os"].as_str().unwrap().to_string()
            + "/"
            + images[0]["platform"]["architecture"].as_str().unwrap()
    );
    // The base image is pinned by the digest skopeo finds for this platform.
    let base = raw(&busybox(&env));
    let arch = images[0]["platform"]["architecture"].as_str().unwrap();
    let base_digest = base["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"]["architecture"] == arch)
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .expect("busybox for this platform");
    let deps = def["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter()
            .any(|d| d["uri"].as_str().unwrap().starts_with("pkg:docker/")
                && d["uri"].as_str().unwrap().contains("library/busybox")
                && format!("sha256:{}", d["digest"]["sha256"].as_str().unwrap()) == base_digest),
        "busybox {base_digest} in {deps:#?}"
    );
    // min: no steps, no Dockerfile source.
    let text = st.to_string();
    assert!(!text.contains("llbDefinition") && !text.contains("buildkit_metadata"));
    let meta = &st["predicate"]["runDetails"]["metadata"];
    assert!(meta["startedOn"].as_str().unwrap() <= meta["finishedOn"].as_str().unwrap());
    // The secret is in no attestation, nor anywhere in the state dir.
    assert!(!text.contains(SECRET));
    let holding = files_holding(b.root.path(), SECRET.as_bytes(), Path::new("/nonexistent"));
    assert!(holding.is_empty(), "the secret is stored in {holding:?}");
}

#[test]
fn provenance_off_or_no_default_attestations_push_a_plain_manifest() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("h5attest-off"));
    let off = format!("{repo}:off");
    b.build(&["--push", "-t", &off, "--provenance=false"]);
    let m = raw(&off);
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{m:#}"
    );
    let env_off = format!("{repo}:env");
    b.build_env(
        &["--push", "-t", &env_off],
        &[("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")],
    );
    let m = raw(&env_off);
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{m:#}"
    );
    // Asked for explicitly, provenance is on despite the variable.
    let asked = format!("{repo}:asked");
    b.build_env(
        &["--push", "-t", &asked, "--provenance=true"],
        &[("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")],
    );
    assert_eq!(attestation_entries(&raw(&asked)).len(), 1);
}

#[test]
fn max_provenance_of_each_platform_has_the_steps_and_the_dockerfile() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("h5attest-max"));
    let tag = format!("{repo}:1");
    b.build(&[
        "--push",
        "-t",
        &tag,
        "--platform",
        "linux/amd64,linux/arm64",
        "--attest",
        "type=provenance,mode=max,builder-id=https://ci.example/run/7",
    ]);
    let index = raw(&tag);
    let images = image_entries(&index);
    let attests = attestation_entries(&index);
    assert_eq!((images.len(), attests.len()), (2, 2), "{index:#}");
    let dockerfile = std::fs::read(b.ctx().join("Dockerfile")).unwrap();
    for image in &images {
        let a = attests
            .iter()
            .find(|a| a["annotations"]["vnd.docker.reference.digest"] == image["digest"])
            .expect("an attestation manifest for each platform");
        let st = &statements(&b, &repo, a)[0];
        assert_valid("in-toto-statement-v1.schema.json", st);
        assert_valid("slsa-provenance-v1.schema.json", &st["predicate"]);
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            image["digest"].as_str().unwrap()
        );
        let p = &st["predicate"];
        assert_eq!(p["runDetails"]["builder"]["id"], "https://ci.example/run/7");
        let steps = p["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"]
            .as_array()
            .expect("max mode lists the steps");
        assert!(steps
            .iter()
            .any(|s| s["op"].to_string().contains("docker-image://")));
        let data = p["runDetails"]["metadata"]["buildkit_metadata"]["source"]["infos"][0]["data"]
            .as_str()
            .expect("max mode has the Dockerfile source");
        let out = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(data.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run base64");
        assert_eq!(out.stdout, dockerfile);
    }
}

#[test]
fn sbom_of_the_debian_packages_image_lists_its_packages() {
    let env = TestEnv::load();
    let b = Build::new();
    let base = env.get("KILN_TEST_DEBIAN_IMAGE");
    b.write("Dockerfile", &format!("FROM {base}\nCOPY f /f\n"));
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("h5attest-sbom"));
    let tag = format!("{repo}:1");
    b.build(&["--push", "-t", &tag, "--sbom=true"]);
    let index = raw(&tag);
    let attests = attestation_entries(&index);
    assert_eq!(attests.len(), 1, "{index:#}");
    let sts = statements(&b, &repo, &attests[0]);
    let types: Vec<&str> = sts
        .iter()
        .map(|s| s["predicateType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ],
        "the default provenance stays beside the SBOM"
    );
    let spdx = &sts[1];
    assert_valid("in-toto-statement-v1.schema.json", spdx);
    assert_valid("spdx-2.3.schema.json", &spdx["predicate"]);
    let packages = spdx["predicate"]["packages"].as_array().unwrap();
    let debs: Vec<PathBuf> = std::fs::read_dir(env.get("KILN_TEST_DEBIAN_DEBS"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert!(!debs.is_empty());
    for deb in debs {
        let field = |f: &str| {
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(&deb)
                .arg(f)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let (name, version) = (field("Package"), field("Version"));
        assert!(
            packages
                .iter()
                .any(|p| p["name"] == name.as_str() && p["versionInfo"] == version.as_str()),
            "{name} {version} missing from the SBOM"
        );
    }
}

#[test]
fn bad_attestation_flags_fail_before_building() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\n");
    let err = b.build_fails(&["--provenance=mode=full"]);
    assert!(
        err.contains("--provenance") && err.contains("mode"),
        "{err}"
    );
    let err = b.build_fails(&["--attest", "type=vex"]);
    assert!(err.contains("unknown type"), "{err}");
    let err = b.build_fails(&["--sbom=generator=docker/scout-sbom-indexer"]);
    assert!(err.contains("builtin"), "{err}");
}

#[test]
fn local_and_tar_outputs_write_the_asked_attestations_beside_the_files() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    // The default provenance is for images only.
    let plain = b.path("plain");
    b.build(&["-o", &format!("type=local,dest={}", plain.display())]);
    assert!(plain.join("f").is_file() && !plain.join("provenance.json").exists());
    let out = b.path("out");
    b.build(&[
        "-o",
        &format!("type=local,dest={}", out.display()),
        "--provenance=true",
        "--sbom=true",
    ]);
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let prov = read(out.join("provenance.json"));
    assert_valid("in-toto-statement-v1.schema.json", &prov);
    assert_valid("slsa-provenance-v1.schema.json", &prov["predicate"]);
    let f = prov["subject"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "f")
        .expect("the file f is a subject");
    assert_eq!(
        format!("sha256:{}", f["digest"]["sha256"].as_str().unwrap()),
        sha256_digest(b"x")
    );
    let sbom = read(out.join("sbom.spdx.json"));
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    assert_valid("spdx-2.3.schema.json", &sbom["predicate"]);
    let tarball = b.path("out.tar");
    b.build(&[
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        "--attest",
        "type=provenance,mode=max",
    ]);
    let list = Command::new("tar")
        .arg("-tf")
        .arg(&tarball)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "provenance.json")
            && names.lines().any(|l| l.trim_start_matches("./") == "f"),
        "{names}"
    );
}

#[test]
fn attestations_turn_docker_media_types_to_oci_with_a_warning() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let name = format!("{}/{}:1", env.registry(), unique("h5attest-mt"));
    let ctx = b.ctx();
    let out = b.kiln(&[
        "build",
        "-o",
        &format!("type=registry,name={name},oci-mediatypes=false"),
        ctx.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARNING: oci-mediatypes=false ignored"),
        "{stderr}"
    );
    let index = raw(&name);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(attestation_entries(&index).len(), 1);
}

/// The referrers of `digest` in `repo` as the fallback tag lists them (the test registry has
/// no referrers API), each artifact manifest read back.
fn fallback_referrers(repo: &str, digest: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let tag = format!("{repo}:{}", digest.replace(':', "-"));
    let index = raw(&tag);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    index["manifests"]
        .as_array()
        .expect("referrers index manifests")
        .iter()
        .map(|d| {
            (
                d.clone(),
                raw(&format!("{repo}@{}", d["digest"].as_str().unwrap())),
            )
        })
        .collect()
}

/// Checks one attestation artifact about `subject` (its descriptor as a referrers index
/// lists it, and the manifest); returns its statements.
fn check_artifact(
    b: &Build,
    repo: &str,
    (desc, m): &(serde_json::Value, serde_json::Value),
    subject: &serde_json::Value,
) -> Vec<serde_json::Value> {
    const ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";
    assert_eq!(desc["artifactType"], ARTIFACT, "{desc:#}");
    assert_eq!(m["artifactType"], ARTIFACT, "{m:#}");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(m["subject"]["digest"], subject["digest"]);
    assert_eq!(m["subject"]["size"], subject["size"]);
    let sts = statements(b, repo, desc);
    for st in &sts {
        assert_valid("in-toto-statement-v1.schema.json", st);
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            subject["digest"].as_str().unwrap()
        );
    }
    sts
}

#[test]
fn referrers_mode_pushes_a_clean_index_and_each_platform_s_attestations_as_a_referrer() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "x");
    let repo = format!("{}/{}", env.registry(), unique("referrers-multi"));
    let tag = format!("{repo}:1");
    let meta = b.build(&[
        "-o",
        &format!("type=registry,name={tag},referrers=true"),
        "--platform",
        "linux/amd64,linux/arm64",
        "--sbom=true",
    ]);
    let index_bytes = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ]);
    let index: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    assert!(
        entries
            .iter()
            .all(|d| d["platform"]["os"] == "linux" && d.get("annotations").is_none()),
        "no unknown/unknown entry: {index:#}"
    );
    assert_eq!(meta["containerimage.digest"], sha256_digest(&index_bytes));
    let recorded = meta["kiln.attestations"].as_array().expect("{meta:#}");
    assert_eq!(recorded.len(), 2, "{meta:#}");
    for image in entries {
        let referrers = fallback_referrers(&repo, image["digest"].as_str().unwrap());
        assert_eq!(referrers.len(), 1, "one artifact per platform");
        let sts = check_artifact(&b, &repo, &referrers[0], image);
        let mut predicates: Vec<&str> = sts
            .iter()
            .map(|s| s["predicateType"].as_str().unwrap())
            .collect();
        predicates.sort();
        assert_eq!(
            predicates,
            [
                "https://slsa.dev/provenance/v1",
                "https://spdx.dev/Document"
            ]
        );
        let prov = sts
            .iter()
            .find(|s| s["predicateType"] == "https://slsa.dev/provenance/v1")
            .unwrap();
        assert_valid("slsa-provenance-v1.schema.json", &prov["predicate"]);
        assert!(recorded
            .iter()
            .any(|r| r["subject"] == image["digest"] && r["digest"] == referrers[0].0["digest"]));
    }
    // The same build buildx-style: the attestation entries are in the index.
    let buildx = format!("{repo}:buildx");
    b.build(&[
        "-o",
        &format!("type=registry,name={buildx}"),
        "--platform",
        "linux/amd64,linux/arm64",
    ]);
    assert_eq!(attestation_entries(&raw(&buildx)).len(), 2);
    // One platform asked to be an index stays one, without the attestation entry.
    let forced = format!("{repo}:forced");
    let meta = b.build_env(
        &["-o", &format!("type=registry,name={forced},referrers=true")],
        &[("BUILDKIT_MULTI_PLATFORM", "1")],
    );
    let index = raw(&forced);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    assert_eq!(entries[0]["platform"]["os"], "linux");
    // The image may be the first build's own (same content): its new attestation is added
    // to the referrers it already has.
    let artifact = &meta["kiln.attestations"][0];
    assert_eq!(artifact["subject"], entries[0]["digest"]);
    let referrers = fallback_referrers(&repo, entries[0]["digest"].as_str().unwrap());
    assert!(
        referrers
            .iter()
            .any(|(d, _)| d["digest"] == artifact["digest"]),
        "{referrers:#?}"
    );
}

#[test]
fn referrers_mode_of_one_platform_pushes_the_plain_manifest_and_keeps_secrets_out() {
    let env = TestEnv::load();
    let b = Build::new();
    let secret = context_with_secret(&b, &env);
    let repo = format!("{}/{}", env.registry(), unique("referrers-one"));
    let tag = format!("{repo}:1");
    let layout = b.path("out.tar");
    let meta = b.build(&[
        "-o",
        &format!("type=registry,name={tag},referrers=true"),
        "-o",
        &format!("type=oci,dest={},referrers=true", layout.display()),
        "--secret",
        &format!("id=tok,src={}", secret.display()),
        "--build-arg",
        "GREETING=hello-arg",
    ]);
    let m_bytes = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ]);
    let m: serde_json::Value = serde_json::from_slice(&m_bytes).unwrap();
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "one platform: the image itself, as without attestations: {m:#}"
    );
    let digest = sha256_digest(&m_bytes);
    assert_eq!(meta["containerimage.digest"], digest);
    let subject = serde_json::json!({"digest": digest, "size": m_bytes.len()});
    let referrers = fallback_referrers(&repo, &digest);
    assert_eq!(referrers.len(), 1);
    let sts = check_artifact(&b, &repo, &referrers[0], &subject);
    assert_eq!(sts.len(), 1, "min provenance");
    assert_eq!(
        sts[0]["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"]
            ["build-arg:GREETING"],
        "hello-arg"
    );
    for (desc, artifact) in &referrers {
        assert!(!desc.to_string().contains(SECRET) && !artifact.to_string().contains(SECRET));
    }
    assert!(!sts[0].to_string().contains(SECRET));
    // The OCI layout: the image tagged, the artifact an untagged entry beside it (as oras
    // keeps referrers in a layout).
    let dir = b.path("layout");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&layout)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    let image = entries
        .iter()
        .find(|d| d["digest"] == digest)
        .expect("{index:#}");
    assert!(image.get("artifactType").is_none());
    let artifact = entries.iter().find(|d| d["digest"] != digest).unwrap();
    assert_eq!(artifact["digest"], referrers[0].0["digest"]);
    assert!(artifact["annotations"]
        .get("org.opencontainers.image.ref.name")
        .is_none());
    let bytes = std::fs::read(
        dir.join("blobs/sha256").join(
            artifact["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        ),
    )
    .unwrap();
    assert_eq!(sha256_digest(&bytes), artifact["digest"].as_str().unwrap());
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(parsed["subject"]["digest"], digest);
    let holding = files_holding(&dir, SECRET.as_bytes(), Path::new("/nonexistent"));
    assert!(holding.is_empty(), "the secret is in {holding:?}");
}

/// `kiln ARGS` that must succeed: its stdout.
fn kiln_ok(b: &Build, args: &[&str]) -> String {
    support::stdout_ok(&b.kiln(args), &format!("kiln {args:?}"))
}

/// A blob of the plain registry, fetched with curl and checked against its digest.
fn registry_blob(repo: &str, digest: &str) -> Vec<u8> {
    let (host, name) = repo.split_once('/').unwrap();
    let out = Command::new("curl")
        .args(["-sSf", &format!("http://{host}/v2/{name}/blobs/{digest}")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{repo}@{digest}");
    assert_eq!(sha256_digest(&out.stdout), digest);
    out.stdout
}

/// The attestation artifacts of the single-platform image `tag` as referrers: (artifact
/// descriptor, predicate types of its statements, fetched from the registry).
fn referrer_predicates(repo: &str, image_digest: &str) -> Vec<(String, Vec<String>)> {
    fallback_referrers(repo, image_digest)
        .into_iter()
        .filter(|(d, _)| d["artifactType"] == "application/vnd.docker.attestation.manifest.v1+json")
        .map(|(d, m)| {
            let preds = m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let st: serde_json::Value =
                        serde_json::from_slice(&registry_blob(repo, l["digest"].as_str().unwrap()))
                            .unwrap();
                    st["predicateType"].as_str().unwrap().to_string()
                })
                .collect();
            (d["digest"].as_str().unwrap().to_string(), preds)
        })
        .collect()
}

#[test]
fn copy_carries_attestations_and_signatures_in_both_modes() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "copied");
    let repo = |what: &str| {
        format!(
            "{}/{}",
            env.registry(),
            unique(&format!("referrers-copy-{what}"))
        )
    };
    let (buildx_src, ref_src) = (repo("buildx-src"), repo("ref-src"));
    let buildx_tag = format!("{buildx_src}:1");
    let ref_tag = format!("{ref_src}:1");
    b.build(&[
        "-o",
        &format!("type=registry,name={buildx_tag}"),
        "--sbom=true",
    ]);
    b.build(&[
        "-o",
        &format!("type=registry,name={ref_tag},referrers=true"),
        "--sbom=true",
    ]);
    kiln_ok(&b, &["keygen", b.path("k").to_str().unwrap()]);
    let (key, public) = (b.path("k.key"), b.path("k.pub"));
    for tag in [&buildx_tag, &ref_tag] {
        kiln_ok(&b, &["sign", "--key", key.to_str().unwrap(), tag]);
    }

    // buildx-style: the attestation entries come with the index, digests kept.
    let buildx_dst = format!("{}:1", repo("buildx-dst"));
    kiln_ok(&b, &["copy", "--all", &buildx_tag, &buildx_dst]);
    let (src_index, dst_index) = (raw(&buildx_tag), raw(&buildx_dst));
    assert_eq!(src_index, dst_index);
    let attests = attestation_entries(&dst_index);
    assert_eq!(attests.len(), 1, "{dst_index:#}");
    let dst_repo = buildx_dst.trim_end_matches(":1");
    let att = raw(&format!(
        "{dst_repo}@{}",
        attests[0]["digest"].as_str().unwrap()
    ));
    for l in att["layers"].as_array().unwrap() {
        registry_blob(dst_repo, l["digest"].as_str().unwrap());
    }
    kiln_ok(
        &b,
        &["verify", "--key", public.to_str().unwrap(), &buildx_dst],
    );

    // Referrers: each artifact found again through the destination's fallback tag, the
    // signature too, whether copied directly or through an OCI layout.
    let image = sha256_digest(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{ref_tag}"),
    ]));
    let expected = referrer_predicates(&ref_src, &image);
    assert_eq!(expected.len(), 1);
    let mut preds = expected[0].1.clone();
    preds.sort();
    assert_eq!(
        preds,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ]
    );
    let direct = repo("ref-dst");
    let layout = b.path("layout");
    let via_layout = repo("ref-layout");
    kiln_ok(&b, &["copy", "--all", &ref_tag, &format!("{direct}:1")]);
    kiln_ok(
        &b,
        &["copy", &ref_tag, &format!("oci:{}:1", layout.display())],
    );
    kiln_ok(
        &b,
        &[
            "copy",
            &format!("oci:{}", layout.display()),
            &format!("{via_layout}:1"),
        ],
    );
    for dst in [&direct, &via_layout] {
        let tag = format!("{dst}:1");
        assert_eq!(
            sha256_digest(&skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{tag}"),
            ])),
            image
        );
        assert_eq!(referrer_predicates(dst, &image), expected, "{dst}");
        let listed = fallback_referrers(dst, &image);
        assert!(
            listed.iter().any(
                |(d, _)| d["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
            ),
            "the signature referrer is carried: {listed:#?}"
        );
        kiln_ok(&b, &["verify", "--key", public.to_str().unwrap(), &tag]);
    }
}

/// A `Cargo.lock` naming one crate.
fn cargo_lock(name: &str) -> String {
    format!(
        "version = 3\n\n[[package]]\nname = \"{name}\"\nversion = \"1.2.3\"\n\
         source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
    )
}

/// The package names of an SPDX document.
fn package_names(spdx: &serde_json::Value) -> Vec<String> {
    spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sbom_scan_context_and_stage_args_add_statements_as_buildkit_does() {
    let env = TestEnv::load();
    let b = Build::new();
    let debian = env.get("KILN_TEST_DEBIAN_IMAGE");
    // BuildKit's rules: the context for the target (a global ARG reaches it), stages the
    // target needs that declare the stage ARG; `unused` is not built, so not scanned.
    b.write(
        "Dockerfile",
        &format!(
            "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
             FROM {debian} AS deps\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY f /f\n\
             FROM {bb} AS unused\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
             FROM {bb}\nARG BUILDKIT_SBOM_SCAN_CONTEXT\n\
             RUN test -z \"$BUILDKIT_SBOM_SCAN_STAGE\" && test -z \"$BUILDKIT_SBOM_SCAN_CONTEXT\"\n\
             COPY --from=deps /f /f\n",
            bb = busybox(&env)
        ),
    );
    b.write("f", "x");
    b.write("Cargo.lock", &cargo_lock("sbomx-context-crate"));
    b.write("ignored/Cargo.lock", &cargo_lock("sbomx-ignored-crate"));
    b.write(".dockerignore", "ignored\n");
    let repo = format!("{}/{}", env.registry(), unique("sbomx-extras"));
    let tag = format!("{repo}:1");
    b.build(&["--push", "-t", &tag, "--sbom=true"]);
    let index = raw(&tag);
    let attests = attestation_entries(&index);
    assert_eq!(attests.len(), 1, "{index:#}");
    let sts = statements(&b, &repo, &attests[0]);
    let types: Vec<&str> = sts
        .iter()
        .map(|s| s["predicateType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document",
            "https://spdx.dev/Document",
            "https://spdx.dev/Document"
        ]
    );
    let image_digest = image_entries(&index)[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for st in &sts[1..] {
        assert_valid("in-toto-statement-v1.schema.json", st);
        assert_valid("spdx-2.3.schema.json", &st["predicate"]);
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            image_digest,
            "each SBOM is about the image"
        );
    }
    // The image's SBOM first, then the scans by name: sbom-context, sbom-deps.
    let (image, context, deps) = (
        &sts[1]["predicate"],
        &sts[2]["predicate"],
        &sts[3]["predicate"],
    );
    assert_eq!(context["name"], "sbom-context");
    assert_eq!(deps["name"], "sbom-deps");
    let context_packages = package_names(context);
    assert!(
        context_packages.iter().any(|n| n == "sbomx-context-crate"),
        "{context_packages:?}"
    );
    assert!(
        !context_packages.iter().any(|n| n == "sbomx-ignored-crate"),
        ".dockerignore'd files are not scanned: {context_packages:?}"
    );
    // The Debian packages are in the deps stage, not in the busybox image.
    let deps_packages = package_names(deps);
    assert!(
        deps_packages.iter().any(|n| n == "base-files"),
        "{deps_packages:?}"
    );
    assert!(!package_names(image).iter().any(|n| n == "base-files"));
    // imagetools shows them as buildx does: the image's as SPDX, the others after it.
    let out = b.kiln(&["imagetools", "inspect", "--format", "{{json .SBOM}}", &tag]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&shown["SPDX"], image);
    assert_eq!(shown["AdditionalSPDXs"], serde_json::json!([context, deps]));

    // Turned off by build args, as in BuildKit.
    let off = format!("{repo}:off");
    b.build(&[
        "--push",
        "-t",
        &off,
        "--sbom=true",
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_STAGE=false",
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_CONTEXT=false",
    ]);
    let index = raw(&off);
    assert_eq!(
        statements(&b, &repo, &attestation_entries(&index)[0]).len(),
        2
    );

    // A local output writes each scan beside sbom.spdx.json.
    let dest = b.path("local");
    b.build(&[
        "-o",
        &format!("type=local,dest={}", dest.display()),
        "--sbom=true",
    ]);
    for name in [
        "sbom.spdx.json",
        "sbom-context.spdx.json",
        "sbom-deps.spdx.json",
    ] {
        assert!(dest.join(name).is_file(), "{name} missing");
    }
}

#[test]
fn sbom_lists_the_rpm_packages_rpm_itself_lists() {
    let env = TestEnv::load();
    let b = Build::new();
    // The rpm database the setup made with rpmbuild and `rpm --justdb`, copied into the image.
    let fixture = Path::new(env.get("KILN_TEST_RPM_ROOT"));
    std::fs::create_dir_all(b.ctx()).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture)
        .arg(b.ctx().join("rpm-root"))
        .status()
        .unwrap();
    assert!(st.success());
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY rpm-root/ /\n", busybox(&env)),
    );
    let out = b.path("out");
    b.build(&[
        "-o",
        &format!("type=local,dest={}", out.display()),
        "--sbom=true",
    ]);
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_valid("spdx-2.3.schema.json", &st["predicate"]);
    let packages = st["predicate"]["packages"].as_array().unwrap();
    // rpm's own view of the database is the oracle.
    let listed = Command::new("rpm")
        .arg("--dbpath")
        .arg(fixture.join("var/lib/rpm"))
        .args([
            "-qa",
            "--qf",
            "%{NAME}|%{EPOCH}|%{VERSION}-%{RELEASE}|%{ARCH}|%{LICENSE}\\n",
        ])
        .output()
        .expect("run rpm");
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    for line in listed.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let (name, epoch, evr, arch, license) = (f[0], f[1], f[2], f[3], f[4]);
        let p = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {packages:#?}"));
        assert_eq!(p["versionInfo"], format!("{epoch}:{evr}"));
        assert_eq!(p["licenseDeclared"], license);
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        assert!(
            purl.starts_with(&format!(
                "pkg:rpm/kiln%20test%20vendor/{name}@{evr}?arch={arch}&epoch={epoch}"
            )),
            "{purl}"
        );
    }
}

#[test]
fn imagetools_create_carries_referrers_and_signatures_of_each_image() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY f /f\n", busybox(&env)),
    );
    b.write("f", "merged");
    let repo = |what: &str| {
        format!(
            "{}/{}",
            env.registry(),
            unique(&format!("referrers-create-{what}"))
        )
    };
    let src = repo("src");
    let src_tag = format!("{src}:1");
    b.build(&[
        "-o",
        &format!("type=registry,name={src_tag},referrers=true"),
        "--sbom=true",
    ]);
    kiln_ok(&b, &["keygen", b.path("k").to_str().unwrap()]);
    let (key, public) = (b.path("k.key"), b.path("k.pub"));
    kiln_ok(&b, &["sign", "--key", key.to_str().unwrap(), &src_tag]);
    let image = sha256_digest(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{src_tag}"),
    ]));
    let expected = referrer_predicates(&src, &image);
    assert_eq!(expected.len(), 1, "the source has its attestations");

    let dst = repo("dst");
    kiln_ok(
        &b,
        &["imagetools", "create", "-t", &format!("{dst}:1"), &src_tag],
    );
    let index = raw(&format!("{dst}:1"));
    assert_eq!(index["manifests"][0]["digest"], image.as_str(), "{index:#}");
    assert_eq!(referrer_predicates(&dst, &image), expected);
    let listed = fallback_referrers(&dst, &image);
    assert!(
        listed
            .iter()
            .any(|(d, _)| d["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"),
        "the signature referrer is carried: {listed:#?}"
    );
    // The image's signature verifies in the new repository.
    kiln_ok(
        &b,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("{dst}@{image}"),
        ],
    );
}
