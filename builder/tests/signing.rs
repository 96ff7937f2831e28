//! End-to-end tests of `kiln keygen`, `kiln sign` and `kiln verify` against the test
//! registries, with openssl as the independent oracle for keys and signatures and skopeo
//! and curl for what the registry holds.

mod support;

use base64::Engine as _;
use std::path::Path;
use std::process::{Command, Output};
use support::{sha256_digest, skopeo, stdout_ok, unique, Build, TestEnv};

/// Runs a tool that must succeed; its stdout.
fn tool(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    stdout_ok(&out, what);
    out.stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kiln ARGS` that must succeed: its stdout.
fn ok(b: &Build, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = b.kiln_env(args, env);
    stdout_ok(&out, &format!("kiln {args:?}"))
}

/// An error message without miette's line wrapping and frame, to find long digests in.
fn flat(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

/// `kiln ARGS` that must fail: its stderr.
fn fails(b: &Build, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = b.kiln_env(args, env);
    assert!(
        !out.status.success(),
        "kiln {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(&out)
}

/// Copies the test registry's busybox index (both platforms) to `dest` on the plain registry.
fn seed(env: &TestEnv, dest: &str) {
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/library/busybox:latest", env.registry()),
        &format!("docker://{dest}"),
    ]);
}

/// The digest of the manifest `reference` names, computed by sha256sum over skopeo's bytes.
fn manifest_digest(reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--raw"];
    args.extend_from_slice(extra);
    let r = format!("docker://{reference}");
    args.push(&r);
    sha256_digest(&skopeo(&args))
}

/// A manifest of the plain registry as JSON, fetched with curl.
fn get_json(registry: &str, repo: &str, reference: &str) -> serde_json::Value {
    let body = tool(
        Command::new("curl").args([
            "-sSf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            &format!("http://{registry}/v2/{repo}/manifests/{reference}"),
        ]),
        "curl manifest",
    );
    serde_json::from_slice(&body).expect("manifest JSON")
}

fn keygen(b: &Build, prefix: &Path, env: &[(&str, &str)]) {
    ok(b, &["keygen", prefix.to_str().unwrap()], env);
}

#[test]
fn keygen_writes_keys_openssl_reads_and_never_overwrites() {
    let b = Build::new();
    let prefix = b.path("cosign");
    keygen(&b, &prefix, &[("KILN_PASSWORD", "")]);
    let key = b.path("cosign.key");
    let public = b.path("cosign.pub");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    let text = tool(
        Command::new("openssl").args(["pkey", "-in", key.to_str().unwrap(), "-noout", "-text"]),
        "openssl pkey",
    );
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    tool(
        Command::new("openssl").args(["ec", "-pubin", "-in", public.to_str().unwrap(), "-noout"]),
        "openssl ec -pubin",
    );
    // The public key is the private key's (openssl derives it independently).
    let derived = tool(
        Command::new("openssl").args(["pkey", "-in", key.to_str().unwrap(), "-pubout"]),
        "openssl pkey -pubout",
    );
    assert_eq!(
        String::from_utf8_lossy(&derived),
        std::fs::read_to_string(&public).unwrap()
    );
    // A second keygen refuses and leaves both files as they were.
    let before = std::fs::read(&key).unwrap();
    let err = fails(&b, &["keygen", prefix.to_str().unwrap()], &[]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // Nor does it write the missing half of a pair whose other half exists.
    std::fs::remove_file(&key).unwrap();
    let err = fails(&b, &["keygen", prefix.to_str().unwrap()], &[]);
    assert!(err.contains("cosign.pub already exists"), "{err}");
    assert!(!key.exists());
}

#[test]
fn sign_then_verify_and_openssl_checks_the_stored_signature() {
    let env = TestEnv::load();
    let b = Build::new();
    let repo = unique("h5-sign/plain");
    let image = format!("{}/{repo}:1", env.registry());
    seed(&env, &image);
    let digest = manifest_digest(&image, &["--tls-verify=false"]);
    let prefix = b.path("k");
    keygen(&b, &prefix, &[]);
    ok(
        &b,
        &["sign", "--key", b.path("k.key").to_str().unwrap(), &image],
        &[],
    );

    // Stored as cosign stores it: one payload layer under the `.sig` tag.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let sig_manifest = get_json(env.registry(), &repo, &format!("sha256-{hex}.sig"));
    let layers = sig_manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{sig_manifest}");
    let layer = &layers[0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let payload = tool(
        Command::new("curl").args([
            "-sSf",
            &format!(
                "http://{}/v2/{repo}/blobs/{}",
                env.registry(),
                layer["digest"].as_str().unwrap()
            ),
        ]),
        "curl payload",
    );
    assert_eq!(sha256_digest(&payload), layer["digest"].as_str().unwrap());
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claims["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        claims["critical"]["identity"]["docker-reference"],
        format!("{}/{repo}", env.registry())
    );
    assert_eq!(
        claims["critical"]["type"],
        "cosign container image signature"
    );
    // openssl verifies the signature over the payload with the public key.
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(b.path("payload"), &payload).unwrap();
    std::fs::write(b.path("sig.der"), &sig).unwrap();
    let verified = tool(
        Command::new("openssl").args([
            "dgst",
            "-sha256",
            "-verify",
            b.path("k.pub").to_str().unwrap(),
            "-signature",
            b.path("sig.der").to_str().unwrap(),
            b.path("payload").to_str().unwrap(),
        ]),
        "openssl dgst -verify",
    );
    assert!(String::from_utf8_lossy(&verified).contains("Verified OK"));

    // And as a referrer, through the fallback tag (distribution 2.8 has no referrers API).
    let index = get_json(env.registry(), &repo, &format!("sha256-{hex}"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(
        entries[0]["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );
    let referrer = get_json(
        env.registry(),
        &repo,
        entries[0]["digest"].as_str().unwrap(),
    );
    assert_eq!(referrer["subject"]["digest"], digest.as_str());
    assert_eq!(referrer["layers"][0]["digest"], layer["digest"]);

    // verify prints the verified payload.
    let out = ok(
        &b,
        &["verify", "--key", b.path("k.pub").to_str().unwrap(), &image],
        &[],
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, vec![claims.clone()]);

    // A second signing appends to the `.sig` manifest rather than replacing it.
    keygen(&b, &b.path("second"), &[]);
    ok(
        &b,
        &[
            "sign",
            "--key",
            b.path("second.key").to_str().unwrap(),
            &image,
        ],
        &[],
    );
    let sig_manifest = get_json(env.registry(), &repo, &format!("sha256-{hex}.sig"));
    assert_eq!(
        sig_manifest["layers"].as_array().unwrap().len(),
        2,
        "{sig_manifest}"
    );
    let index = get_json(env.registry(), &repo, &format!("sha256-{hex}"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    for k in ["k.pub", "second.pub"] {
        let out = ok(
            &b,
            &["verify", "--key", b.path(k).to_str().unwrap(), &image],
            &[],
        );
        assert_eq!(out.lines().count(), 1, "{k}: {out}");
    }

    // The referrers alone carry the signatures: delete the `.sig` manifest.
    let raw = tool(
        Command::new("curl").args([
            "-sSf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!(
                "http://{}/v2/{repo}/manifests/sha256-{hex}.sig",
                env.registry()
            ),
        ]),
        "curl .sig",
    );
    let sig_digest = sha256_digest(&raw);
    tool(
        Command::new("curl").args([
            "-sSf",
            "-X",
            "DELETE",
            &format!("http://{}/v2/{repo}/manifests/{sig_digest}", env.registry()),
        ]),
        "curl DELETE .sig",
    );
    for k in ["k.pub", "second.pub"] {
        let out = ok(
            &b,
            &["verify", "--key", b.path(k).to_str().unwrap(), &image],
            &[],
        );
        assert_eq!(out.lines().count(), 1, "{k} via referrers: {out}");
    }
}

#[test]
fn verify_fails_for_a_wrong_key_a_changed_image_and_a_moved_signature() {
    let env = TestEnv::load();
    let b = Build::new();
    let repo = unique("h5-sign/tamper");
    let image = format!("{}/{repo}:1", env.registry());
    seed(&env, &image);
    let signed = manifest_digest(&image, &["--tls-verify=false"]);
    keygen(&b, &b.path("k"), &[]);
    keygen(&b, &b.path("other"), &[]);
    ok(
        &b,
        &["sign", "--key", b.path("k.key").to_str().unwrap(), &image],
        &[],
    );
    ok(
        &b,
        &["verify", "--key", b.path("k.pub").to_str().unwrap(), &image],
        &[],
    );

    let err = fails(
        &b,
        &[
            "verify",
            "--key",
            b.path("other.pub").to_str().unwrap(),
            &image,
        ],
        &[],
    );
    assert!(err.contains("does not verify with this key"), "{err}");

    // The tag moved to another manifest (one platform of the index): no signature for it.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{image}"),
        &format!("docker://{image}"),
    ]);
    let changed = manifest_digest(&image, &["--tls-verify=false"]);
    assert_ne!(changed, signed, "the tag must now name another manifest");
    let err = fails(
        &b,
        &["verify", "--key", b.path("k.pub").to_str().unwrap(), &image],
        &[],
    );
    assert!(err.contains("no signatures found"), "{err}");
    assert!(flat(&err).contains(&changed), "{err}");

    // The old signature copied onto the new image's `.sig` tag is refused: it signs the
    // old manifest.
    let sig = tool(
        Command::new("curl").args([
            "-sSf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!(
                "http://{}/v2/{repo}/manifests/sha256-{}.sig",
                env.registry(),
                signed.strip_prefix("sha256:").unwrap()
            ),
        ]),
        "curl .sig",
    );
    std::fs::write(b.path("sig.json"), &sig).unwrap();
    tool(
        Command::new("curl").args([
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", b.path("sig.json").display()),
            &format!(
                "http://{}/v2/{repo}/manifests/sha256-{}.sig",
                env.registry(),
                changed.strip_prefix("sha256:").unwrap()
            ),
        ]),
        "curl PUT .sig",
    );
    let err = fails(
        &b,
        &["verify", "--key", b.path("k.pub").to_str().unwrap(), &image],
        &[],
    );
    assert!(
        flat(&err).contains(&flat(&format!("signs manifest {signed}, not {changed}"))),
        "{err}"
    );
}

#[test]
fn encrypted_key_needs_its_password_on_the_authenticated_registry() {
    let env = TestEnv::load();
    let b = Build::new();
    let tls = env.registry_tls();
    let user = env.get("KILN_TEST_TLS_USER");
    let pass = env.get("KILN_TEST_TLS_PASS");
    let image = format!("{tls}/{}:1", unique("h5-sign/auth"));
    // Credentials as `kiln login` stores them, the CA as certs.d holds it.
    let docker = b.path("docker");
    docker_config(&docker, tls, user, pass);
    let certs = b.path("certs.d").join(tls);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(env.ca_cert(), certs.join("ca.crt")).unwrap();
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        "--dest-creds",
        &format!("{user}:{pass}"),
        &format!("docker://{}/library/busybox:latest", env.registry()),
        &format!("docker://{image}"),
    ]);
    let docker_s = docker.to_str().unwrap().to_string();
    let certs_s = b.path("certs.d").to_str().unwrap().to_string();
    let base = [
        ("DOCKER_CONFIG", docker_s.as_str()),
        ("KILN_CERTS_DIR", certs_s.as_str()),
    ];
    let with_pw = |pw: &'static str| {
        let mut v = base.to_vec();
        v.push(("KILN_PASSWORD", pw));
        v
    };

    keygen(&b, &b.path("enc"), &with_pw("s3cret"));
    let pem = std::fs::read_to_string(b.path("enc.key")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );
    // openssl cannot read it as a plain key: it is not stored in the clear.
    let plain = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            b.path("enc.key").to_str().unwrap(),
            "-noout",
            "-passin",
            "pass:",
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());

    let key = b.path("enc.key");
    let key = key.to_str().unwrap();
    let err = fails(&b, &["sign", "--key", key, &image], &base);
    assert!(
        err.contains("encrypted") && err.contains("KILN_PASSWORD"),
        "{err}"
    );
    let err = fails(&b, &["sign", "--key", key, &image], &with_pw("wrong"));
    assert!(err.contains("wrong password"), "{err}");
    let err = fails(
        &b,
        &[
            "verify",
            "--key",
            b.path("enc.pub").to_str().unwrap(),
            &image,
        ],
        &base,
    );
    assert!(err.contains("no signatures found"), "{err}");
    ok(&b, &["sign", "--key", key, &image], &with_pw("s3cret"));
    let out = ok(
        &b,
        &[
            "verify",
            "--key",
            b.path("enc.pub").to_str().unwrap(),
            &image,
        ],
        &base,
    );
    let claims: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let digest = manifest_digest(
        &image,
        &[
            "--cert-dir",
            certs.to_str().unwrap(),
            "--creds",
            &format!("{user}:{pass}"),
        ],
    );
    assert_eq!(
        claims["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
}

/// A Docker config.json holding `user:pass` for `registry`, as `kiln login` writes it.
fn docker_config(dir: &Path, registry: &str, user: &str, pass: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn bearer_registry_reader_verifies_but_cannot_sign() {
    let env = TestEnv::load();
    let b = Build::new();
    let reg = env.registry_token();
    let (user, pass) = (
        env.get("KILN_TEST_TOKEN_USER"),
        env.get("KILN_TEST_TOKEN_PASS"),
    );
    let image = format!("{reg}/{}:1", unique("h5-sign/bearer"));
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{user}:{pass}"),
        &format!("docker://{}/library/busybox:latest", env.registry()),
        &format!("docker://{image}"),
    ]);
    let writer = b.path("writer");
    let reader = b.path("reader");
    docker_config(&writer, reg, user, pass);
    docker_config(
        &reader,
        reg,
        env.get("KILN_TEST_TOKEN_RO_USER"),
        env.get("KILN_TEST_TOKEN_RO_PASS"),
    );
    let as_writer = [("DOCKER_CONFIG", writer.to_str().unwrap())];
    let as_reader = [("DOCKER_CONFIG", reader.to_str().unwrap())];
    keygen(&b, &b.path("k"), &[]);
    let key = b.path("k.key");
    let public = b.path("k.pub");

    let err = fails(
        &b,
        &["sign", "--key", key.to_str().unwrap(), &image],
        &as_reader,
    );
    assert!(err.contains("reader") && err.contains("pull,push"), "{err}");
    let err = fails(
        &b,
        &["verify", "--key", public.to_str().unwrap(), &image],
        &as_reader,
    );
    assert!(err.contains("no signatures found"), "{err}");

    ok(
        &b,
        &["sign", "--key", key.to_str().unwrap(), &image],
        &as_writer,
    );
    let out = ok(
        &b,
        &["verify", "--key", public.to_str().unwrap(), &image],
        &as_reader,
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // Signing what does not exist says so.
    let missing = format!("{reg}/{}:none", unique("h5-sign/bearer-missing"));
    let err = fails(
        &b,
        &["sign", "--key", key.to_str().unwrap(), &missing],
        &as_writer,
    );
    assert!(err.contains("nothing to sign"), "{err}");
}

#[test]
fn copy_carries_the_signatures_along() {
    let env = TestEnv::load();
    let b = Build::new();
    let src = format!("{}/{}:1", env.registry(), unique("h5-sign/copy-src"));
    let dst = format!("{}/{}:1", env.registry(), unique("h5-sign/copy-dst"));
    seed(&env, &src);
    keygen(&b, &b.path("k"), &[]);
    let key = b.path("k.key");
    ok(&b, &["sign", "--key", key.to_str().unwrap(), &src], &[]);
    ok(&b, &["copy", &src, &dst], &[]);
    assert_eq!(
        manifest_digest(&dst, &["--tls-verify=false"]),
        manifest_digest(&src, &["--tls-verify=false"])
    );
    let out = ok(
        &b,
        &["verify", "--key", b.path("k.pub").to_str().unwrap(), &dst],
        &[],
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}
