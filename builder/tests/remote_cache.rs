//! Issue 14: `--cache-to` / `--cache-from` between two CI runners (two state directories),
//! through the test environment's registries and OCI layout directories.
//!
//! Runner A builds and exports its cache; runner B, a fresh state directory, imports it and
//! must execute no step (`kiln.vertices.executed`), run only what a one-file edit changes
//! (as many steps as runner A runs itself after the same edit), see runner A's cache-mount
//! files, and make the same image. A cache source that cannot be read is a warning with
//! `ignore-error=true` and an error without it, and never a wrong image.

mod support;

use support::{busybox, executed, read, read_json, unique, Build, TestEnv};

/// A multi-stage build whose first stage fills a cache mount: the final RUN lists the cache
/// mount, so the edit of `app.txt` (forcing it to run) shows what the mount holds.
fn multistage(b: &Build, env: &TestEnv, mount_id: &str) {
    b.write(
        "Dockerfile",
        &format!(
            "FROM {base} AS deps\n\
             COPY deps.txt /deps.txt\n\
             RUN --mount=type=cache,id={mount_id},target=/cache \\\n    \
             cp /deps.txt /cache/fetched-by-$(cat /deps.txt) && ls /cache > /deps.list\n\
             FROM {base}\n\
             COPY --from=deps /deps.list /deps.list\n\
             COPY app.txt /app.txt\n\
             RUN --mount=type=cache,id={mount_id},target=/cache ls /cache > /seen.txt && cp /app.txt /out.txt\n",
            base = busybox(env)
        ),
    );
    b.write("deps.txt", "runner-a");
    b.write("app.txt", "v1");
}

/// A single-stage build (the inline cache and `mode=min` carry the final stage only).
fn single_stage(b: &Build, env: &TestEnv) {
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY app.txt /app.txt\nRUN cp /app.txt /out.txt && date +%s%N > /made\n",
            busybox(env)
        ),
    );
    b.write("app.txt", "v1");
}

/// Runner B: a fresh state directory with the same context as `a`.
fn runner_b(a: &Build) -> Build {
    let b = Build::new();
    copy_dir(&a.ctx(), &b.ctx());
    b
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The diffIDs of a stored image: equal for two runners iff their layers are the same bytes.
fn diff_ids(b: &Build, tag: &str) -> serde_json::Value {
    b.raw_config(&format!("docker.io/library/{tag}"))["rootfs"]["diff_ids"].clone()
}

/// Builds the context (plain progress); returns the metadata and the log.
fn build_logged(b: &Build, extra: &[&str]) -> (serde_json::Value, String) {
    let meta = b.path("meta.json");
    let ctx = b.ctx();
    let mut args = vec!["build", "--metadata-file", meta.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = b.kiln(&args);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    support::stdout_ok(&out, "kiln build");
    (read_json(&meta), log)
}

/// `kiln.cache.exported` of a metadata file, the one export.
fn exported(meta: &serde_json::Value) -> &serde_json::Value {
    let list = meta["kiln.cache.exported"]
        .as_array()
        .unwrap_or_else(|| panic!("no kiln.cache.exported in {meta}"));
    assert_eq!(list.len(), 1, "{meta}");
    &list[0]
}

/// The two-runner scenario for one cache destination: `to` for runner A, `from` for B.
fn two_runners(to: &str, from: &str, env: &TestEnv, mount_id: &str) {
    let a = Build::new();
    multistage(&a, env, mount_id);
    let cold = a.build(&["-t", "cache-e2e:a", "--cache-to", to]);
    assert!(executed(&cold) > 0, "{cold}");
    let report = exported(&cold);
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");

    // Runner B, nothing local: every step from the imported cache.
    let b = runner_b(&a);
    let warm = b.build(&["-t", "cache-e2e:b", "--cache-from", from]);
    assert_eq!(executed(&warm), 0, "runner B executed steps: {warm}");
    assert_eq!(diff_ids(&b, "cache-e2e:b"), diff_ids(&a, "cache-e2e:a"));
    // The same image, history dates included.
    assert_eq!(warm["containerimage.digest"], cold["containerimage.digest"]);
    b.validate_image("cache-e2e:b");
    let rootfs = b.unpack("docker.io/library/cache-e2e:b");
    assert_eq!(read(&rootfs.join("out.txt")), "v1");

    // A one-file edit: runner B runs what runner A itself runs after the same edit.
    for r in [&a, &b] {
        r.write("app.txt", "v2");
    }
    let a_edit = a.build(&["-t", "cache-e2e:a"]);
    let (b_edit, log) = build_logged(&b, &["-t", "cache-e2e:b", "--cache-from", from]);
    // The miss is explained (plain progress): which input changed.
    assert!(
        log.contains("cache miss: the files COPY reads from"),
        "no explanation of the miss: {log}"
    );
    assert!(executed(&a_edit) > 0, "{a_edit}");
    assert_eq!(
        executed(&b_edit),
        executed(&a_edit),
        "runner B ran other steps than the edit needs: {b_edit} vs {a_edit}"
    );
    b.validate_image("cache-e2e:b");
    let rootfs = b.unpack("docker.io/library/cache-e2e:b");
    assert_eq!(read(&rootfs.join("out.txt")), "v2");
    // The final RUN ran on runner B, with runner A's cache-mount files restored.
    let seen = read(&rootfs.join("seen.txt"));
    assert!(
        seen.lines().any(|l| l == "fetched-by-runner-a"),
        "runner B's cache mount lacks runner A's file: {seen:?}"
    );
}

#[test]
fn registry_cache_max_with_cache_mounts_moves_between_runners() {
    let env = TestEnv::load();
    let cache = format!("{}/{}:cache", env.registry(), unique("cbuilder-max"));
    two_runners(
        &format!("type=registry,ref={cache},mode=max,cache-mounts=true"),
        &cache,
        &env,
        &unique("cbuilder-pkgs"),
    );
}

#[test]
fn registry_cache_min_of_a_multi_stage_build_moves_between_runners() {
    // mode=min holds the final stage's steps only: runner B does not run the first stage
    // either (its keys are known without its results, as in BuildKit).
    let env = TestEnv::load();
    let cache = format!("{}/{}:cache", env.registry(), unique("cbuilder-min"));
    two_runners(
        &format!("type=registry,ref={cache},cache-mounts=true"),
        &cache,
        &env,
        &unique("cbuilder-pkgs"),
    );
}

#[test]
fn local_cache_max_with_cache_mounts_moves_between_runners() {
    let env = TestEnv::load();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let dest = dest.to_str().unwrap();
    two_runners(
        &format!("type=local,dest={dest},mode=max,cache-mounts=true,tag=ci"),
        &format!("type=local,src={dest},tag=ci"),
        &env,
        &unique("cbuilder-pkgs"),
    );
    // The layout is a valid OCI layout, its cache image named by the tag.
    let index = read_json(&dir.path().join("cache/index.json"));
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "ci",
        "{index}"
    );
}

#[test]
fn local_cache_min_carries_the_final_stage() {
    let env = TestEnv::load();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let dest = dest.to_str().unwrap();
    let a = Build::new();
    single_stage(&a, &env);
    a.build(&[
        "-t",
        "cache-min:a",
        "--cache-to",
        &format!("type=local,dest={dest}"),
    ]);
    let b = runner_b(&a);
    let warm = b.build(&[
        "-t",
        "cache-min:b",
        "--cache-from",
        &format!("type=local,src={dest}"),
    ]);
    assert_eq!(executed(&warm), 0, "{warm}");
    assert_eq!(diff_ids(&b, "cache-min:b"), diff_ids(&a, "cache-min:a"));
    b.validate_image("cache-min:b");
    // The RUN's output is runner A's, not made again.
    let made =
        |r: &Build, tag: &str| read(&r.unpack(&format!("docker.io/library/{tag}")).join("made"));
    assert_eq!(made(&b, "cache-min:b"), made(&a, "cache-min:a"));
}

#[test]
fn inline_cache_is_read_from_the_pushed_image() {
    let env = TestEnv::load();
    let image = format!("{}/{}:1", env.registry(), unique("cbuilder-inline"));
    let a = Build::new();
    single_stage(&a, &env);
    a.build(&["-t", &image, "--push", "--cache-to", "type=inline"]);
    // The key survives into the pushed image's config.
    let config: serde_json::Value = serde_json::from_slice(&support::skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    assert!(
        config["moby.buildkit.cache.v0"].is_string(),
        "no inline cache in {config}"
    );
    support::validate_remote(&image);
    let b = runner_b(&a);
    let warm = b.build(&["-t", "inline:b", "--cache-from", &image]);
    assert_eq!(executed(&warm), 0, "{warm}");
    b.validate_image("inline:b");
}

#[test]
fn re_exporting_an_unchanged_cache_uploads_no_blob() {
    let env = TestEnv::load();
    let cache = format!("{}/{}:cache", env.registry(), unique("cbuilder-again"));
    let to = format!("type=registry,ref={cache},mode=max");
    let a = Build::new();
    single_stage(&a, &env);
    let first = a.build(&["--cache-to", &to]);
    assert!(
        exported(&first)["uploaded"].as_u64().unwrap() > 0,
        "{first}"
    );
    // Runner B imports and exports the same cache: the blobs its import listed are not
    // even checked, and nothing is uploaded.
    let b = runner_b(&a);
    let again = b.build(&["--cache-from", &cache, "--cache-to", &to]);
    assert_eq!(executed(&again), 0, "{again}");
    let report = exported(&again);
    assert_eq!(report["uploaded"], 0, "{report}");
    assert_eq!(report["mounted"], 0, "{report}");
    assert!(report["known"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["known"].as_u64().unwrap() + report["existing"].as_u64().unwrap(),
        report["blobs"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(
        report["digest"],
        exported(&first)["digest"],
        "the same cache image"
    );
}

#[test]
fn an_authenticated_registry_holds_the_cache() {
    let env = TestEnv::load();
    let tls = env.registry_tls();
    let a = Build::new();
    single_stage(&a, &env);
    let docker = docker_config(&a, &env);
    let cache = format!("{tls}/{}:cache", unique("cbuilder-auth"));
    let out = a.kiln_env(
        &[
            "build",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            a.ctx().to_str().unwrap(),
        ],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    support::stdout_ok(&out, "runner A");
    let b = runner_b(&a);
    let docker = docker_config(&b, &env);
    let meta = b.build_env(
        &["-t", "auth:b", "--cache-from", &cache],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert_eq!(executed(&meta), 0, "{meta}");
    b.validate_image("auth:b");
}

/// A Docker config dir trusting the TLS registry's CA, with its basic-auth credentials.
fn docker_config(b: &Build, env: &TestEnv) -> std::path::PathBuf {
    use base64::Engine as _;
    let tls = env.registry_tls();
    let docker = b.path("docker");
    let certs = docker.join("certs.d").join(tls);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(env.ca_cert(), certs.join("ca.crt")).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        env.get("KILN_TEST_TLS_USER"),
        env.get("KILN_TEST_TLS_PASS")
    ));
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{tls}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    docker
}

/// Builds the context expecting failure; returns stderr, miette's lines unwrapped.
fn fails(b: &Build, extra: &[&str]) -> String {
    unwrapped(&b.build_fails(extra))
}

/// miette's report with its wrapped lines joined (and its frame left out), so a message
/// is found whole.
fn unwrapped(stderr: &str) -> String {
    let mut out = String::new();
    for line in stderr.lines() {
        let text = line.trim_start_matches(|c: char| c.is_whitespace() || "│├╰─▶×".contains(c));
        if !(out.is_empty() || out.ends_with('-') || out.ends_with('\n')) {
            out.push(' ');
        }
        out.push_str(text);
        if text.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// A registry address nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

#[test]
fn an_unreachable_source_is_an_error_or_with_ignore_error_a_warning() {
    let env = TestEnv::load();
    let b = Build::new();
    single_stage(&b, &env);
    let source = format!("{}/cbuilder-gone:cache", closed_port());
    let stderr = fails(&b, &["--cache-from", &source]);
    assert!(
        stderr.contains(&format!("--cache-from {source}")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("ignore-error=true"), "the hint: {stderr}");
    // A missing cache image: the registry's status is named.
    let missing = format!("{}/{}:cache", env.registry(), unique("cbuilder-none"));
    let stderr = fails(&b, &["--cache-from", &missing]);
    assert!(stderr.contains("404"), "{stderr}");
    assert!(stderr.contains("MANIFEST_UNKNOWN"), "{stderr}");

    let out = b.kiln_env(
        &[
            "build",
            "-t",
            "ignored:1",
            "--cache-from",
            &format!("type=registry,ref={source},ignore-error=true"),
            "--cache-from",
            &format!("type=registry,ref={missing},ignore-error=true"),
            b.ctx().to_str().unwrap(),
        ],
        &[("COLUMNS", "1000")],
    );
    let stderr = support::stdout_ok(&out, "build with ignore-error")
        + &unwrapped(&String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("2 warnings found"), "{stderr}");
    assert!(
        stderr.contains(&format!("--cache-from {source}")) && stderr.contains("ignore-error=true"),
        "{stderr}"
    );
    b.validate_image("ignored:1");
    assert_eq!(
        read(&b.unpack("docker.io/library/ignored:1").join("out.txt")),
        "v1"
    );
}

#[test]
fn a_cache_export_that_fails_is_an_error_or_with_ignore_error_a_warning() {
    let env = TestEnv::load();
    let b = Build::new();
    single_stage(&b, &env);
    let target = format!("{}/cbuilder-gone:cache", closed_port());
    let stderr = fails(&b, &["--cache-to", &target]);
    assert!(stderr.contains(&format!("--cache-to {target}")), "{stderr}");
    assert!(stderr.contains("ignore-error=true"), "the hint: {stderr}");
    let out = b.kiln_env(
        &[
            "build",
            "-t",
            "kept:1",
            "--cache-to",
            &format!("type=registry,ref={target},ignore-error=true"),
            b.ctx().to_str().unwrap(),
        ],
        &[("COLUMNS", "1000")],
    );
    let stderr = support::stdout_ok(&out, "build with ignore-error")
        + &unwrapped(&String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("1 warning found"), "{stderr}");
    assert!(stderr.contains(&format!("--cache-to {target}")), "{stderr}");
    b.validate_image("kept:1");
}

#[test]
fn bad_cache_flags_fail_before_the_build_naming_the_value() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\n");
    for (flag, value, want) in [
        (
            "--cache-to",
            "type=gha",
            "type=gha is a buildx cache backend kiln does not support",
        ),
        ("--cache-to", "type=registry", "type=registry needs ref="),
        ("--cache-to", "type=local,dest=x,mode=all", "mode=\"all\""),
        (
            "--cache-from",
            "type=inline",
            "--cache-from type=registry,ref=IMAGE",
        ),
        (
            "--cache-from",
            "type=local,src=x,colour=red",
            "\"colour\" is not an attribute",
        ),
    ] {
        let stderr = fails(&b, &[flag, value]);
        assert!(
            stderr.contains(&format!("invalid {flag} {value:?}")) && stderr.contains(want),
            "{flag} {value}: {stderr}"
        );
        // Nothing ran: the flags are checked first.
        assert!(!stderr.contains("#1 "), "{stderr}");
    }
}

/// A cache directory of runner A with one blob rewritten (same size, other bytes).
fn tampered_local_cache(env: &TestEnv, what: &str) -> (Build, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let a = Build::new();
    single_stage(&a, env);
    a.build(&[
        "-t",
        "tamper:a",
        "--cache-to",
        &format!("type=local,dest={},mode=max", dest.display()),
    ]);
    let index = read_json(&dest.join("index.json"));
    let blob = |d: &serde_json::Value| {
        dest.join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let victim = match what {
        "config" => blob(&manifest["config"]["digest"]),
        _ => blob(&manifest["layers"].as_array().unwrap().last().unwrap()["digest"]),
    };
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    (a, dir)
}

#[test]
fn a_corrupt_local_cache_is_refused_and_never_gives_a_wrong_image() {
    let env = TestEnv::load();
    // A tampered config: found at import.
    let (a, dir) = tampered_local_cache(&env, "config");
    let src = format!("type=local,src={}", dir.path().join("cache").display());
    let b = runner_b(&a);
    let stderr = fails(&b, &["--cache-from", &src]);
    assert!(stderr.contains("--cache-from"), "{stderr}");
    assert!(stderr.contains("ignore-error=true"), "{stderr}");
    let meta = b.build(&[
        "-t",
        "tamper:b",
        "--cache-from",
        &format!("{src},ignore-error=true"),
    ]);
    assert!(
        executed(&meta) > 0,
        "nothing came from the corrupt cache: {meta}"
    );
    b.validate_image("tamper:b");
    assert_eq!(
        read(&b.unpack("docker.io/library/tamper:b").join("out.txt")),
        "v1"
    );

    // A tampered layer: found when its bytes are fetched (lazily, once the build relies on
    // it). Without ignore-error the build fails naming the blob; with it, the build starts
    // again without that source and makes the right image.
    let (a, dir) = tampered_local_cache(&env, "layer");
    let src = format!("type=local,src={}", dir.path().join("cache").display());
    let b = runner_b(&a);
    let stderr = fails(&b, &["--cache-from", &src]);
    assert!(stderr.contains("content verification failed"), "{stderr}");
    assert!(stderr.contains("ignore-error=true"), "the hint: {stderr}");
    let b = runner_b(&a);
    let meta = b.path("meta.json");
    let out = b.kiln(&[
        "build",
        "-t",
        "tamper:b",
        "--metadata-file",
        meta.to_str().unwrap(),
        "--cache-from",
        &format!("{src},ignore-error=true"),
        b.ctx().to_str().unwrap(),
    ]);
    let stderr =
        support::stdout_ok(&out, "build with ignore-error") + &String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("building again without this cache"),
        "{stderr}"
    );
    b.validate_image("tamper:b");
    assert_eq!(
        read(&b.unpack("docker.io/library/tamper:b").join("out.txt")),
        "v1"
    );
}

#[test]
fn a_multi_platform_build_exports_every_platform_into_one_cache() {
    let env = TestEnv::load();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let dest = dest.to_str().unwrap();
    let a = Build::new();
    a.write(
        "Dockerfile",
        &format!(
            "FROM {}\nARG TARGETARCH\nCOPY app.txt /app-$TARGETARCH.txt\n",
            busybox(&env)
        ),
    );
    a.write("app.txt", "v1");
    let platforms = "linux/amd64,linux/arm64";
    let cold = a.build(&[
        "--platform",
        platforms,
        "-t",
        "multi:a",
        "--cache-to",
        &format!("type=local,dest={dest}"),
    ]);
    let b = runner_b(&a);
    let warm = b.build(&[
        "--platform",
        platforms,
        "-t",
        "multi:b",
        "--cache-from",
        &format!("type=local,src={dest}"),
    ]);
    assert_eq!(executed(&warm), 0, "{warm}");
    b.validate_image("multi:b");
    // Both platforms' images are runner A's.
    let digests = |m: &serde_json::Value| {
        m["kiln.platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["digest"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&warm).len(), 2, "{warm}");
    assert_eq!(digests(&warm), digests(&cold));
}

#[test]
fn the_cache_mounts_the_pushed_images_layers_instead_of_uploading_them() {
    let env = TestEnv::load();
    let repo = unique("cbuilder-mount");
    let image = format!("{}/{repo}:1", env.registry());
    let cache = format!("{}/{repo}-cache:c", env.registry());
    let a = Build::new();
    single_stage(&a, &env);
    let meta = a.build(&["-t", &image, "--push", "--cache-to", &cache]);
    let report = exported(&meta);
    // The final image's layers were just pushed to the image's repository: mounted from
    // there; only the cache config is uploaded.
    // The pushed root is an index (image and default provenance): the image's layers.
    let index = a.manifest(&image);
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["os"] != "unknown")
        .expect("the image in the index");
    let manifest = support::read_json(&a.blob(entry["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap().len() as u64;
    assert_eq!(report["mounted"].as_u64().unwrap(), layers, "{report}");
    assert_eq!(report["uploaded"], 1, "{report}");
    support::validate_remote(&cache);
}

#[test]
fn a_push_only_build_from_the_cache_downloads_no_layer() {
    let env = TestEnv::load();
    let repo = unique("cbuilder-lazy");
    let cache = format!("{}/{repo}-cache:c", env.registry());
    let a = Build::new();
    single_stage(&a, &env);
    let cold = a.build(&["-t", "lazy:a", "--cache-to", &cache]);
    // Runner B only pushes the image (store=false) to the cache's registry: its layers are
    // mounted from the cache repository, never downloaded.
    let b = runner_b(&a);
    let image = format!("{}/{repo}:b", env.registry());
    let warm = b.build(&[
        "--cache-from",
        &cache,
        "-o",
        &format!("type=image,name={image},push=true,store=false"),
    ]);
    assert_eq!(executed(&warm), 0, "{warm}");
    // The pushed index (with the default provenance) lists the same image.
    let pushed_index = support::read_json(&b.blob(warm["containerimage.digest"].as_str().unwrap()));
    assert!(
        pushed_index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == cold["containerimage.digest"]),
        "{pushed_index}"
    );
    let layers = a.manifest("docker.io/library/lazy:a")["layers"].clone();
    for l in layers.as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap();
        assert!(!b.blob(digest).exists(), "runner B downloaded {digest}");
    }
    // The pushed image is whole.
    let report = support::validate_remote(&image);
    // The image and its attestation manifest.
    assert_eq!(report.images, 2);
}

#[test]
fn buildkits_older_index_form_round_trips() {
    let env = TestEnv::load();
    let cache = format!("{}/{}:cache", env.registry(), unique("cbuilder-index"));
    let a = Build::new();
    single_stage(&a, &env);
    a.build(&[
        "--cache-to",
        &format!("type=registry,ref={cache},image-manifest=false,oci-mediatypes=false"),
    ]);
    // A Docker manifest list whose entries are the layers and the cache config.
    let raw: serde_json::Value = serde_json::from_slice(&support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache}"),
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{raw}"
    );
    assert!(
        raw["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"),
        "{raw}"
    );
    let b = runner_b(&a);
    let warm = b.build(&["-t", "index:b", "--cache-from", &cache]);
    assert_eq!(executed(&warm), 0, "{warm}");
    b.validate_image("index:b");
}

#[test]
fn an_image_without_a_cache_is_not_a_cache_source() {
    let env = TestEnv::load();
    let b = Build::new();
    single_stage(&b, &env);
    let stderr = fails(&b, &["--cache-from", &busybox(&env)]);
    assert!(stderr.contains("not a build cache"), "{stderr}");
    assert!(stderr.contains("--cache-to type=inline"), "{stderr}");
    let meta = b.build(&[
        "--cache-from",
        &format!("type=registry,ref={},ignore-error=true", busybox(&env)),
    ]);
    assert!(executed(&meta) > 0, "{meta}");
}

#[test]
fn a_multi_platform_inline_cache_is_read_from_every_platforms_image() {
    let env = TestEnv::load();
    let image = format!("{}/{}:1", env.registry(), unique("cbuilder-inline-multi"));
    let a = Build::new();
    a.write(
        "Dockerfile",
        &format!(
            "FROM {}\nARG TARGETARCH\nCOPY app.txt /app-$TARGETARCH.txt\n",
            busybox(&env)
        ),
    );
    a.write("app.txt", "v1");
    let platforms = "linux/amd64,linux/arm64";
    a.build(&[
        "--platform",
        platforms,
        "-t",
        &image,
        "--push",
        "--cache-to",
        "type=inline",
    ]);
    let b = runner_b(&a);
    let warm = b.build(&[
        "--platform",
        platforms,
        "-t",
        "inline-multi:b",
        "--cache-from",
        &image,
    ]);
    assert_eq!(executed(&warm), 0, "{warm}");
    b.validate_image("inline-multi:b");
}

#[test]
fn a_cache_copied_to_another_repository_of_the_registry_is_mounted_not_downloaded() {
    let env = TestEnv::load();
    let repo = unique("cbuilder-copy");
    let first = format!("{}/{repo}-a:c", env.registry());
    let second = format!("{}/{repo}-b:c", env.registry());
    let a = Build::new();
    single_stage(&a, &env);
    a.build(&[
        "-t",
        "copy:a",
        "--cache-to",
        &format!("type=registry,ref={first},mode=max"),
    ]);
    let b = runner_b(&a);
    let meta = b.build(&[
        "--cache-from",
        &first,
        "--cache-to",
        &format!("type=registry,ref={second},mode=max"),
        "-o",
        "type=cacheonly",
    ]);
    assert_eq!(executed(&meta), 0, "{meta}");
    let report = exported(&meta);
    assert_eq!(report["uploaded"], 0, "{report}");
    assert!(report["mounted"].as_u64().unwrap() > 0, "{report}");
    // Runner B never downloaded the layers it exported.
    let layers = a.manifest("docker.io/library/copy:a")["layers"].clone();
    for l in layers.as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap();
        assert!(!b.blob(digest).exists(), "runner B downloaded {digest}");
    }
    support::validate_remote(&second);
}

#[test]
fn a_local_cache_updated_in_place_copies_nothing_it_holds() {
    // The CI pattern of a cache directory kept between jobs: import from it, export to it.
    let env = TestEnv::load();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let a = Build::new();
    single_stage(&a, &env);
    a.build(&[
        "-t",
        "inplace:a",
        "--cache-to",
        &format!("type=local,dest={cache},mode=max"),
    ]);
    let b = runner_b(&a);
    let meta = b.build(&[
        "-o",
        "type=cacheonly",
        "--cache-from",
        &format!("type=local,src={cache}"),
        "--cache-to",
        &format!("type=local,dest={cache},mode=max"),
    ]);
    assert_eq!(executed(&meta), 0, "{meta}");
    let report = exported(&meta);
    assert_eq!(report["uploaded"], 0, "{report}");
    // Runner B never copied the layers into its store.
    let layers = a.manifest("docker.io/library/inplace:a")["layers"].clone();
    for l in layers.as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap();
        assert!(!b.blob(digest).exists(), "runner B copied {digest}");
    }
    support::validate_layout(&dir.path().join("cache"), kiln_oci::walk::Partial::Refuse);
}

#[test]
fn a_buildkit_cache_is_refused_with_a_hint() {
    // BuildKit's shape with BuildKit's records (and no kiln part), in an OCI layout.
    let dir = layout_with_cache_config(br#"{"layers":[],"records":[{"digest":"sha256:0000"}]}"#);
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    let src = format!("type=local,src={}", dir.path().display());
    let stderr = fails(&b, &["--cache-from", &src]);
    assert!(stderr.contains("not a kiln cache config"), "{stderr}");
    assert!(stderr.contains("BuildKit's records"), "the hint: {stderr}");
    b.build(&["--cache-from", &format!("{src},ignore-error=true")]);
}

#[test]
fn a_cache_of_another_format_version_is_a_miss_with_a_warning() {
    // An older or newer kiln wrote it (CI runners upgrade at different times): the build
    // goes on without it, even without ignore-error, and says why.
    let dir = layout_with_cache_config(
        br#"{"layers":[],"records":[],"kiln":{"version":2,"blobs":[],"records":[]}}"#,
    );
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    let src = format!("type=local,src={}", dir.path().display());
    let (meta, log) = build_logged(&b, &["--progress", "plain", "--cache-from", &src]);
    assert!(
        log.contains("format version 2 (this kiln reads version 1)"),
        "{log}"
    );
    assert_eq!(meta["kiln.vertices.executed"], 1, "{meta}");
}

/// An OCI layout tagged `latest` holding a cache image whose config is `config`.
fn layout_with_cache_config(config: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = support::sha256_digest(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        serde_json::json!({"digest": digest, "size": bytes.len()})
    };
    let config = put(config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0",
                   "digest": config["digest"], "size": config["size"]},
        "layers": [],
    });
    let m = put(manifest.to_string().as_bytes());
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m["digest"], "size": m["size"],
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
        .to_string(),
    )
    .unwrap();
    dir
}

#[test]
fn a_corrupt_cache_mount_blob_is_refused_or_with_ignore_error_skipped() {
    let env = TestEnv::load();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let a = Build::new();
    multistage(&a, &env, &unique("cbuilder-pkgs"));
    a.build(&[
        "--cache-to",
        &format!(
            "type=local,dest={},mode=max,cache-mounts=true",
            dest.display()
        ),
    ]);
    // The cache mount's blob, rewritten.
    let blob = |d: &str| {
        dest.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read_json(&dest.join("index.json"));
    let manifest = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let at = config["kiln"]["mounts"][0]["blob"]
        .as_u64()
        .expect("a mount") as usize;
    let victim = blob(config["kiln"]["blobs"][at]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();

    let src = format!("type=local,src={}", dest.display());
    let b = runner_b(&a);
    let stderr = fails(&b, &["--cache-from", &src]);
    assert!(stderr.contains("content verification failed"), "{stderr}");
    let out = b.kiln(&[
        "build",
        "-t",
        "mount:b",
        "--cache-from",
        &format!("{src},ignore-error=true"),
        b.ctx().to_str().unwrap(),
    ]);
    let stderr =
        support::stdout_ok(&out, "build with ignore-error") + &String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("building again without this cache"),
        "{stderr}"
    );
    b.validate_image("mount:b");
    assert_eq!(
        read(&b.unpack("docker.io/library/mount:b").join("out.txt")),
        "v1"
    );
}
