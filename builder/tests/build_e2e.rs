//! `kiln build` end to end: real contexts, the real test registry's busybox,
//! real RUN steps; results checked with tools that are not kiln (umoci,
//! skopeo) and through the metadata file's vertex counters.

mod support;

use kiln_oci::walk::Partial;
use std::path::Path;
use std::process::Command;
use support::{executed, validate_archive, validate_layout, Build, TestEnv};

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn scratch_image_with_copy_workdir_and_config() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch\nCOPY --chown=1000:1000 --chmod=0751 app.sh /app/\nCOPY data/ /srv/data/\nWORKDIR /srv\nENV A=1\nLABEL org.example=yes\nEXPOSE 8080\nCMD [\"/app/app.sh\"]\n",
    );
    b.write("app.sh", "#!/bin/sh\necho hi\n");
    b.write("data/one.txt", "1");
    b.write("data/sub/two.txt", "2");
    b.write(".dockerignore", "data/sub\n");
    b.build(&["-t", "kiln-test/scratch:1"]);
    let root = b.unpack("docker.io/kiln-test/scratch:1");
    assert_eq!(
        std::fs::read_to_string(root.join("app/app.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&root.join("app/app.sh")), 0o751);
    assert_eq!(owner(&root.join("app/app.sh")), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(root.join("srv/data/one.txt")).unwrap(),
        "1"
    );
    assert!(
        !root.join("srv/data/sub").exists(),
        ".dockerignore'd files are not copied"
    );
    let config = b.config("docker.io/kiln-test/scratch:1");
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/app/app.sh"]));
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("A=1")));
    assert_eq!(config["config"]["Labels"]["org.example"], "yes");
    assert!(config["config"]["ExposedPorts"].get("8080/tcp").is_some());
    // WORKDIR /srv changed nothing (COPY made /srv): as BuildKit, its empty
    // layer is kept.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = config["history"].as_array().unwrap();
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        3
    );
    b.validate_image("docker.io/kiln-test/scratch:1");
}

#[test]
fn busybox_multistage_with_run_and_cache() {
    let env = TestEnv::load();
    let b = Build::new();
    let base = format!("{}/library/busybox:latest", env.registry());
    b.write(
        "Dockerfile",
        &format!(
            "FROM {base} AS build\nCOPY src.txt /src/\nRUN mkdir /out && tr a-z A-Z < /src/src.txt > /out/upper.txt && id -u > /out/uid\nFROM {base} AS other\nRUN echo other > /other.txt\nFROM {base}\nCOPY --from=build /out/ /result/\nCOPY --from=other /other.txt /\nUSER app\nRUN id -un > /tmp/whoami\n"
        ),
    );
    b.write("src.txt", "hello kiln\n");
    let first = b.build(&["-t", "kiln-test/multi:1"]);
    assert!(
        first["kiln.vertices.executed"].as_u64().unwrap() >= 5,
        "{first}"
    );
    let root = b.unpack("docker.io/kiln-test/multi:1");
    assert_eq!(
        std::fs::read_to_string(root.join("result/upper.txt")).unwrap(),
        "HELLO KILN\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("result/uid")).unwrap(),
        "0\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("other.txt")).unwrap(),
        "other\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/whoami")).unwrap(),
        "app\n"
    );
    assert!(
        root.join("bin/busybox").exists(),
        "the base layers are there"
    );

    // Nothing changed: nothing runs.
    let again = b.build(&["-t", "kiln-test/multi:1"]);
    assert_eq!(again["kiln.vertices.executed"], 0, "{again}");
    assert_eq!(
        again["containerimage.digest"],
        first["containerimage.digest"]
    );

    // One file changed: the build stage re-runs; the other stage stays cached.
    b.write("src.txt", "changed\n");
    let third = b.build(&["-t", "kiln-test/multi:1"]);
    let executed = third["kiln.vertices.executed"].as_u64().unwrap();
    assert!(
        (1..=5).contains(&executed),
        "only what depends on src.txt re-runs: {third}"
    );
    let root = b.unpack("docker.io/kiln-test/multi:1");
    assert_eq!(
        std::fs::read_to_string(root.join("result/upper.txt")).unwrap(),
        "CHANGED\n"
    );
    b.validate_image("docker.io/kiln-test/multi:1");
    b.validate();
}

#[test]
fn docker_and_oci_archives_are_read_by_skopeo() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "x");
    let docker = b.work.path().join("img.docker.tar");
    let oci = b.work.path().join("img.oci.tar");
    b.build(&[
        "-t",
        "kiln-test/arch:1",
        "-o",
        &format!("type=docker,dest={}", docker.display()),
        "-o",
        &format!("type=oci,dest={}", oci.display()),
    ]);
    let out = Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", docker.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo docker-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", oci.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo oci-archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    validate_archive(&docker);
    validate_archive(&oci);
}

#[test]
fn tar_false_writes_layout_directories_skopeo_reads() {
    // BuildKit's `tar=false`: the OCI (and docker) exporters write a layout directory.
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "x");
    let oci = b.work.path().join("oci-dir");
    let docker = b.work.path().join("docker-dir");
    b.build(&[
        "-t",
        "kiln-test/dir:1",
        "-o",
        &format!("type=oci,tar=false,dest={}", oci.display()),
        "-o",
        &format!("type=docker,tar=false,dest={}", docker.display()),
    ]);
    assert!(oci.join("index.json").is_file() && oci.join("oci-layout").is_file());
    assert!(
        docker.join("manifest.json").is_file(),
        "docker's manifest.json beside the layout"
    );
    for dir in [&oci, &docker] {
        let out = Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:1", dir.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo oci:{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
        assert_eq!(validate_layout(dir, Partial::Refuse).len(), 1);
    }
    let err = b.build_fails(&["-o", "type=oci,tar=false"]);
    assert!(err.contains("tar=false needs dest"), "{err}");
}

#[test]
fn local_and_tar_outputs_hold_the_filesystem() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY a.txt /dir/a.txt\n");
    b.write("a.txt", "A");
    let dir = b.work.path().join("out");
    let tar = b.work.path().join("fs.tar");
    b.build(&[
        "-o",
        &format!("type=local,dest={}", dir.display()),
        "-o",
        &format!("type=tar,dest={}", tar.display()),
    ]);
    assert_eq!(std::fs::read_to_string(dir.join("dir/a.txt")).unwrap(), "A");
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("dir/a.txt"));
}

#[test]
fn bad_input_gives_located_errors() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY missing.txt /x\n");
    let err = b.build_fails(&[]);
    assert!(err.contains("missing.txt"), "{err}");
    assert!(
        err.contains("Dockerfile:2") || err.contains(":2:"),
        "the error names the line: {err}"
    );

    b.write("Dockerfile", "FROM scratch\nCOPY ../../etc/passwd /x\n");
    let err = b.build_fails(&[]);
    assert!(err.contains("passwd"), "{err}");

    b.write(
        "Dockerfile",
        "FROM scratch\nCOPY --from=nosuchstage /a /b\n",
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("nosuchstage"), "{err}");

    b.write("Dockerfile", "FROM scratch\n");
    let err = b.build_fails(&["-o", "type=floppy"]);
    assert!(err.contains("floppy"), "{err}");
}

#[test]
fn failing_run_reports_exit_code_and_location() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN echo before-failing && exit 3\n",
            env.registry()
        ),
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("before-failing"), "the output is shown: {err}");
    // Quiet progress still shows the failed step's last lines, as buildx does.
    let quiet = b.build_fails(&["--progress", "quiet"]);
    assert!(quiet.contains(" > [2/2] RUN"), "{quiet}");
    assert!(quiet.contains("before-failing"), "{quiet}");
    assert!(err.contains("Dockerfile:2") || err.contains(":2:"), "{err}");
}

/// Serves `body` for every request on a loopback port, `count` times.
fn serve(body: &'static [u8], count: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_urls_with_checksums_and_unpacks_local_tarballs() {
    let b = Build::new();
    let url = serve(b"downloaded\n", 4);
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf 'downloaded\\n' | sha256sum | cut -d' ' -f1")
        .output()
        .unwrap();
    let sum = format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim());
    // A gzip tarball in the context: ADD unpacks it.
    let tar_dir = b.work.path().join("t");
    std::fs::create_dir_all(tar_dir.join("pkg")).unwrap();
    std::fs::write(tar_dir.join("pkg/inside.txt"), "inside").unwrap();
    b.write("placeholder", "");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(b.ctx().join("pkg.tar.gz"))
        .arg("-C")
        .arg(&tar_dir)
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum={sum} {url}/files/data.txt /dl/\nADD pkg.tar.gz /opt/\n"
        ),
    );
    b.build(&["-t", "kiln-test/add:1"]);
    let root = b.unpack("docker.io/kiln-test/add:1");
    assert_eq!(
        std::fs::read_to_string(root.join("dl/data.txt")).unwrap(),
        "downloaded\n"
    );
    assert_eq!(
        mode(&root.join("dl/data.txt")),
        0o600,
        "ADD from a URL gives mode 600"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("opt/pkg/inside.txt")).unwrap(),
        "inside"
    );

    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} {url}/x /x\n",
            "0".repeat(64)
        ),
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("checksum") || err.contains("digest"), "{err}");
}

#[test]
fn secrets_reach_run_but_never_the_image_and_cache_mounts_persist() {
    let env = TestEnv::load();
    let b = Build::new();
    let secret = b.work.path().join("token");
    std::fs::write(&secret, "TOPSECRET-4711").unwrap();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count\n",
            env.registry()
        ),
    );
    let spec = format!("id=tok,src={}", secret.display());
    b.build(&["-t", "kiln-test/secret:1", "--secret", &spec]);
    let root = b.unpack("docker.io/kiln-test/secret:1");
    assert_eq!(
        std::fs::read_to_string(root.join("len")).unwrap().trim(),
        "14"
    );
    assert!(!root.join("run/secrets/tok").exists());
    // The secret is nowhere in the store: not in a layer, config or history.
    let found = Command::new("grep")
        .args(["-r", "-a", "-l", "TOPSECRET-4711"])
        .arg(b.root.path())
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "secret found in {}",
        String::from_utf8_lossy(&found.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("count")).unwrap().trim(),
        "1"
    );
    // --no-cache re-runs the step; the cache mount kept its file.
    b.build(&["-t", "kiln-test/secret:1", "--secret", &spec, "--no-cache"]);
    let root = b.unpack("docker.io/kiln-test/secret:1");
    assert_eq!(
        std::fs::read_to_string(root.join("count")).unwrap().trim(),
        "2"
    );
    // A missing required secret is a clear error.
    b.write(
        "Dockerfile",
        &format!("FROM {}/library/busybox:latest\nRUN --mount=type=secret,id=other,required cat /run/secrets/other\n", env.registry()),
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("other"), "{err}");
}

#[test]
fn compression_media_types_and_annotations_follow_the_output() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "zstd me");
    b.build(&[
        "-o",
        "type=image,name=kiln-test/zstd:1,compression=zstd,compression-level=3",
        "--annotation",
        "org.opencontainers.image.title=zstd-test",
    ]);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}/content:docker.io/kiln-test/zstd:1",
            b.root.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.title"],
        "zstd-test"
    );

    b.build(&[
        "-o",
        "type=image,name=kiln-test/docker:1,oci-mediatypes=false",
    ]);
    // skopeo's oci: transport skips Docker-typed entries, so read the layout directly.
    let content = b.root.path().join("content");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(content.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/kiln-test/docker:1"
        })
        .expect("the tag is in index.json");
    assert_eq!(
        entry["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(content.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    // Both images (zstd in OCI, gzip in Docker media types) hold together.
    b.validate_image("docker.io/kiln-test/zstd:1");
    b.validate_image("docker.io/kiln-test/docker:1");
    assert_eq!(b.validate().iter().map(|r| r.images).sum::<usize>(), 2);
}

#[test]
fn du_and_prune_account_for_and_remove_the_cache() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "some bytes for the cache");
    b.build(&["-o", "type=tar,dest=/dev/null"]);
    let du = b.kiln(&["du"]);
    assert!(
        du.status.success(),
        "{}",
        String::from_utf8_lossy(&du.stderr)
    );
    let text = String::from_utf8_lossy(&du.stdout).into_owned();
    assert!(text.contains("Cache records:\t1"), "{text}");
    let pruned = b.kiln(&["prune", "--all", "--force"]);
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert!(String::from_utf8_lossy(&pruned.stdout).contains("Deleted cache records:\t1"));
    let du = b.kiln(&["du"]);
    assert!(String::from_utf8_lossy(&du.stdout).contains("Cache records:\t0"));
    assert_eq!(
        std::fs::read_dir(b.root.path().join("layers"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .map(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .unwrap_or(false)
            })
            .count(),
        0,
        "no layer is left"
    );
    // The build still works after a prune, and runs again.
    let meta = b.build(&["-o", "type=tar,dest=/dev/null"]);
    assert_eq!(meta["kiln.vertices.executed"], 1);
}

#[test]
fn named_build_contexts_replace_stages_and_images() {
    let env = TestEnv::load();
    let b = Build::new();
    let extra = b.work.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("note.txt"), "from a named context").unwrap();
    b.write(
        "Dockerfile",
        "FROM assets AS whole\nFROM somebase\nCOPY --from=whole /note.txt /whole.txt\nCOPY --from=assets /note.txt /direct.txt\n",
    );
    let assets = format!("assets={}", extra.display());
    let base = format!(
        "somebase=docker-image://{}/library/busybox:latest",
        env.registry()
    );
    b.build(&[
        "-t",
        "kiln-test/named:1",
        "--build-context",
        &assets,
        "--build-context",
        &base,
    ]);
    let root = b.unpack("docker.io/kiln-test/named:1");
    assert_eq!(
        std::fs::read_to_string(root.join("whole.txt")).unwrap(),
        "from a named context"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("direct.txt")).unwrap(),
        "from a named context"
    );
    assert!(
        root.join("bin/busybox").exists(),
        "somebase was replaced by the busybox image"
    );
    let err = b.build_fails(&["--build-context", "x=oci-layout:///nowhere"]);
    assert!(err.contains("oci-layout"), "{err}");
}

#[test]
fn a_base_images_onbuild_triggers_run_in_the_child_only() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nONBUILD RUN echo triggered > /onbuild.txt\nONBUILD ENV FROM_TRIGGER=yes\n",
            env.registry()
        ),
    );
    b.build(&["-t", "kiln-test/parent:1"]);
    let parent = b.unpack("docker.io/kiln-test/parent:1");
    assert!(
        !parent.join("onbuild.txt").exists(),
        "triggers do not run in the image that declares them"
    );
    assert_eq!(
        b.raw_config("docker.io/kiln-test/parent:1")["config"]["OnBuild"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    b.write(
        "Dockerfile",
        "FROM kiln-test/parent:1\nRUN cat /onbuild.txt > /seen.txt\n",
    );
    b.build(&["-t", "kiln-test/child:1"]);
    let child = b.unpack("docker.io/kiln-test/child:1");
    assert_eq!(
        std::fs::read_to_string(child.join("seen.txt")).unwrap(),
        "triggered\n"
    );
    let config = b.raw_config("docker.io/kiln-test/child:1");
    assert!(
        config["config"]["OnBuild"].is_null(),
        "the child does not carry the triggers: {config}"
    );
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("FROM_TRIGGER=yes")));
}

#[test]
fn ssh_key_files_are_served_by_an_agent_of_kilns_own() {
    let env = TestEnv::load();
    let b = Build::new();
    let key = b.path("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (Debian package openssh-client)");
    assert!(out.status.success());
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /agent && stat -c '%a %u' \"$SSH_AUTH_SOCK\" >> /agent\n",
            env.registry()
        ),
    );
    let spec = format!("default={}", key.display());
    b.build(&["--ssh", &spec, "-t", "kiln-test/ssh:1"]);
    let root = b.unpack("docker.io/kiln-test/ssh:1");
    assert_eq!(
        std::fs::read_to_string(root.join("agent")).unwrap(),
        "/run/buildkit/ssh_agent.0\n600 0\n"
    );
    assert!(
        !root.join("run/buildkit/ssh_agent.0").exists(),
        "the socket is not part of the image"
    );
    // A path that is neither a socket nor a file, and a passphrase-protected key.
    let err = b.build_fails(&["--ssh", "default=/nonexistent/key"]);
    assert!(
        err.contains("neither an agent socket nor a key file"),
        "{err}"
    );
    let locked = b.path("locked");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "pass", "-f"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = b.build_fails(&["--ssh", &format!("default={}", locked.display())]);
    assert!(err.contains("passphrase"), "{err}");
}

#[test]
fn buildkit_sandbox_hostname_names_the_run_sandbox() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN hostname > /names && cat /etc/hostname >> /names && grep -c \"$(hostname)\" /etc/hosts >> /names\n",
            env.registry()
        ),
    );
    b.build(&["-t", "kiln-test/host:default"]);
    let root = b.unpack("docker.io/kiln-test/host:default");
    assert_eq!(
        std::fs::read_to_string(root.join("names")).unwrap(),
        "buildkitsandbox\nbuildkitsandbox\n1\n"
    );
    // The arg changes the step (BuildKit keys it too) and is not an unused-arg warning.
    let meta = b.build(&[
        "--build-arg",
        "BUILDKIT_SANDBOX_HOSTNAME=kiln-box",
        "-t",
        "kiln-test/host:named",
    ]);
    assert_eq!(executed(&meta), 1, "{meta}");
    let root = b.unpack("docker.io/kiln-test/host:named");
    assert_eq!(
        std::fs::read_to_string(root.join("names")).unwrap(),
        "kiln-box\nkiln-box\n1\n"
    );
    assert!(
        !root.join("etc/hostname").exists(),
        "the sandbox's /etc/hostname is not part of the layer"
    );
}

#[test]
fn the_validate_oracle_catches_a_tampered_layer() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "oracle");
    b.build(&["-t", "kiln-test/validate-oracle:1"]);
    let name = "docker.io/kiln-test/validate-oracle:1";
    assert_eq!(b.validate_image(name).layers, 1);
    // Flip one byte of the layer: same size, another digest.
    let layer = b.manifest(name)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = b.blob(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let caught = std::panic::catch_unwind(|| b.validate_image(name)).unwrap_err();
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains(&layer) && message.contains("corrupt"),
        "{message}"
    );
}

#[test]
fn layer_media_types_and_diff_ids_hold_for_every_base_and_output() {
    // A Docker-typed base (skopeo writes it, v2s2) and an OCI one, each built into every
    // output form: the base's layers take the output's media types (and zstd forces OCI),
    // and every diff_id stays the digest of the uncompressed layer.
    let env = TestEnv::load();
    let reg = env.registry();
    let docker_base = format!("{reg}/{}:1", support::unique("validate-v2s2"));
    support::skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--override-arch",
        "amd64",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/library/busybox:latest"),
        &format!("docker://{docker_base}"),
    ]);
    let oci_base = format!("{reg}/library/busybox:latest");
    let outputs = [
        "",
        ",oci-mediatypes=false",
        ",compression=zstd",
        ",compression=zstd,force-compression=true",
        ",compression=uncompressed",
        ",compression=uncompressed,force-compression=true,oci-mediatypes=false",
    ];
    let b = Build::new();
    b.write("f", "media types\n");
    for (i, base) in [docker_base, oci_base].iter().enumerate() {
        b.write(
            "Dockerfile",
            &format!("FROM --platform=linux/amd64 {base}\nCOPY f /f\n"),
        );
        for (j, out) in outputs.iter().enumerate() {
            let name = format!("docker.io/validate-mt/b{i}:{j}");
            b.build(&["-o", &format!("type=image,name={name}{out}")]);
            let report = b.validate_image(&name);
            assert_eq!(report.layers, 2, "{base} {out}");
        }
    }
    b.validate();
    // Pushed: the registry holds the same whole image (zstd layers, one re-tarred base layer).
    let pushed = format!("{reg}/{}:zstd", support::unique("validate-mt/push"));
    b.build(&[
        "-o",
        &format!("type=image,name={pushed},push=true,compression=zstd,force-compression=true"),
    ]);
    // With the default provenance: the image's 2 layers and the attestation manifest's
    // statement.
    let report = support::validate_remote(&pushed);
    assert_eq!((report.images, report.layers), (2, 3));
    // A Docker manifest cannot list zstd layers: refused, as BuildKit refuses it.
    let err = b.build_fails(&[
        "-o",
        "type=image,name=validate-mt/zstd-docker,compression=zstd,oci-mediatypes=false",
    ]);
    assert!(err.contains("oci-mediatypes=true"), "{err}");
}

#[test]
fn images_stay_whole_after_rmi_and_prune_of_what_they_share() {
    // An image built on a base shares the base's blobs: removing the base's tag and pruning
    // the cache must leave the built image whole; so must an image with no layer at all.
    let env = TestEnv::load();
    let b = Build::new();
    let base = format!("{}/library/busybox:latest", env.registry());
    b.write(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo built > /built\nRUN true\n"),
    );
    b.build(&["-t", "validate-shared/app:1"]);
    let app = "docker.io/validate-shared/app:1";
    // RUN true changed nothing: its empty layer is kept, as BuildKit keeps it.
    assert_eq!(b.validate_image(app).layers, 3);
    let out = b.kiln(&["rmi", &base]);
    support::stdout_ok(&out, "kiln rmi");
    let out = b.kiln(&["prune", "--all", "--force"]);
    support::stdout_ok(&out, "kiln prune");
    assert_eq!(b.validate_image(app).layers, 3);
    b.write("Dockerfile", "FROM scratch\nENV A=1\nLABEL x=y\n");
    b.build(&["-t", "validate-shared/empty:1"]);
    assert_eq!(
        b.validate_image("docker.io/validate-shared/empty:1").layers,
        0
    );
    b.validate();
}
