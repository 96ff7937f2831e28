//! Acceptance of issue 5's cache, image and state bullets through `kiln build`:
//! `--pull`, `--no-cache-filter`, `SOURCE_DATE_EPOCH`, `--iidfile` and the
//! metadata file against skopeo, `kiln du`/`kiln prune`, concurrent builds on
//! one state directory, and the image config of every metadata instruction.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{
    busybox, executed, kiln_bin, read, read_json, sha256_digest, unique, Build, TestEnv,
};

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `skopeo inspect ARGS oci:<store>:<tag>`'s raw bytes.
fn skopeo_store(b: &Build, args: &[&str], tag: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(args)
        .arg(format!("oci:{}/content:{tag}", b.root.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out));
    out.stdout
}

/// Sleeps until the wall clock's second changes (history times have second precision).
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 10_000_000,
    ));
}

#[test]
fn pull_re_resolves_a_moved_tag_and_without_it_the_stored_image_is_used() {
    let env = TestEnv::load();
    let tag = format!("{}/accept/{}:v", env.registry(), unique("pull"));
    // The publisher has its own state: the consumer only sees the registry.
    let publisher = Build::new();
    let publish = |which: &str| {
        publisher.write(
            "Dockerfile",
            &format!("FROM {}\nCOPY which /which\n", busybox(&env)),
        );
        publisher.write("which", which);
        publisher.build(&["-o", &format!("type=registry,name={tag}")]);
    };
    publish("one\n");

    let b = Build::new();
    b.write("Dockerfile", &format!("FROM {tag}\nCOPY f /f\n"));
    b.write("f", "f");
    b.build(&["-t", "kiln-test/pull:1"]);
    assert_eq!(
        read(&b.unpack("docker.io/kiln-test/pull:1").join("which")),
        "one\n"
    );

    publish("two\n");
    let meta = b.build(&["-t", "kiln-test/pull:1"]);
    assert_eq!(executed(&meta), 0, "the stored image is used: {meta}");
    assert_eq!(
        read(&b.unpack("docker.io/kiln-test/pull:1").join("which")),
        "one\n",
        "without --pull the tag is not looked up again"
    );
    let meta = b.build(&["--pull", "-t", "kiln-test/pull:1"]);
    assert!(executed(&meta) >= 1, "{meta}");
    assert_eq!(
        read(&b.unpack("docker.io/kiln-test/pull:1").join("which")),
        "two\n",
        "--pull resolves the tag again"
    );
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {bb} AS a\nRUN cat /proc/sys/kernel/random/uuid > /a-id\nFROM {bb} AS b\nRUN cat /proc/sys/kernel/random/uuid > /b-id\nFROM scratch\nCOPY --from=a /a-id /\nCOPY --from=b /b-id /\n",
            bb = busybox(&env)
        ),
    );
    b.build(&["-t", "kiln-test/ncf:1"]);
    let first = b.unpack("docker.io/kiln-test/ncf:1");
    let (a1, b1) = (read(&first.join("a-id")), read(&first.join("b-id")));
    let meta = b.build(&["-t", "kiln-test/ncf:1"]);
    assert_eq!(executed(&meta), 0, "{meta}");

    let meta = b.build(&["--no-cache-filter", "a", "-t", "kiln-test/ncf:1"]);
    let second = b.unpack("docker.io/kiln-test/ncf:1");
    let a2 = read(&second.join("a-id"));
    assert_ne!(a2, a1, "stage a ran again");
    assert_eq!(
        read(&second.join("b-id")),
        b1,
        "stage b came from the cache"
    );
    // a's FROM and RUN, and the two COPYs over the changed file: never b's RUN.
    assert!((2..=4).contains(&executed(&meta)), "{meta}");
    // The records were replaced: a rebuild with the cache keeps the new result.
    let meta = b.build(&["-t", "kiln-test/ncf:1"]);
    assert_eq!(executed(&meta), 0, "{meta}");
    let third = b.unpack("docker.io/kiln-test/ncf:1");
    assert_eq!(read(&third.join("a-id")), a2);
}

#[test]
fn source_date_epoch_makes_builds_reproducible_across_state_dirs() {
    let env = TestEnv::load();
    let dockerfile = format!(
        "FROM {}\nCOPY app.txt /app/\nRUN mkdir /made && echo built > /made/out && touch /app/app.txt\n",
        busybox(&env)
    );
    let epoch = "1700000000";
    let make = || {
        let b = Build::new();
        b.write("Dockerfile", &dockerfile);
        b.write("app.txt", "same bytes\n");
        b
    };
    let b1 = make();
    let first = b1.build_env(&["-t", "kiln-test/sde:1"], &[("SOURCE_DATE_EPOCH", epoch)]);
    next_second();
    // The context files of b2 have other mtimes; its state dir is fresh.
    let b2 = make();
    let second = b2.build(&[
        "--build-arg",
        &format!("SOURCE_DATE_EPOCH={epoch}"),
        "-t",
        "kiln-test/sde:1",
    ]);
    assert_eq!(
        first["containerimage.digest"], second["containerimage.digest"],
        "same input, same epoch: same image"
    );
    let config = b1.config("docker.io/kiln-test/sde:1");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    for h in config["history"].as_array().unwrap().iter().skip(1) {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }
    // File times in the new layers are clamped too.
    let root = b1.unpack("docker.io/kiln-test/sde:1");
    use std::os::unix::fs::MetadataExt;
    for f in ["made/out", "made", "app/app.txt"] {
        let mtime = std::fs::symlink_metadata(root.join(f)).unwrap().mtime();
        assert!(mtime <= 1_700_000_000, "{f}: mtime {mtime}");
    }
    // Clamped layers are new tars: their diff_ids must be of those tars.
    for b in [&b1, &b2] {
        assert_eq!(b.validate_image("docker.io/kiln-test/sde:1").layers, 3);
    }

    // Without it, the history records when each build ran.
    let third = b1.build(&["-t", "kiln-test/sde:2"]);
    next_second();
    let fourth = b2.build(&["-t", "kiln-test/sde:2"]);
    assert_ne!(
        third["containerimage.digest"],
        fourth["containerimage.digest"]
    );
    let h3 = b1.config("docker.io/kiln-test/sde:2")["history"].clone();
    let h4 = b2.config("docker.io/kiln-test/sde:2")["history"].clone();
    assert_ne!(
        h3.as_array().unwrap().last().unwrap()["created"],
        h4.as_array().unwrap().last().unwrap()["created"]
    );
    // The same layers, clamped for one image and not for the other, in one store.
    for b in [&b1, &b2] {
        b.validate_image("docker.io/kiln-test/sde:2");
        b.validate();
    }
}

#[test]
fn iidfile_and_metadata_file_match_what_skopeo_reads() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    b.write("f", "ids");
    let iid = b.path("iid");
    let meta = b.build(&[
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        "kiln-test/ids:1",
        "-t",
        "kiln-test/ids:2",
    ]);
    let manifest = skopeo_store(&b, &["--raw"], "docker.io/kiln-test/ids:1");
    let config = skopeo_store(&b, &["--raw", "--config"], "docker.io/kiln-test/ids:1");
    assert_eq!(
        meta["containerimage.digest"].as_str().unwrap(),
        sha256_digest(&manifest)
    );
    assert_eq!(
        meta["containerimage.config.digest"].as_str().unwrap(),
        sha256_digest(&config)
    );
    // The image ID is the config digest, as buildx writes it.
    assert_eq!(read(&iid), sha256_digest(&config));
    // The names as given, comma-separated (BuildKit's `name=` attribute).
    assert_eq!(meta["image.name"], "kiln-test/ids:1,kiln-test/ids:2");
    let other = skopeo_store(&b, &["--raw"], "docker.io/kiln-test/ids:2");
    assert_eq!(other, manifest, "both tags name the same manifest");
    // `-q` prints the same ID.
    let out = b.kiln(&["build", "-q", b.ctx().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha256_digest(&config)
    );
}

fn du(b: &Build) -> String {
    let out = b.kiln(&["du", "--verbose"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn prune(b: &Build, args: &[&str]) -> String {
    let mut all = vec!["prune", "--force"];
    all.extend_from_slice(args);
    let out = b.kiln(&all);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn prune_keep_storage_until_and_all_after_builds() {
    let b = Build::new();
    b.write("a.bin", &"a".repeat(100_000));
    b.write("b.bin", &"b".repeat(200_000));
    let build = |name: &str| {
        b.write("Dockerfile", &format!("FROM scratch\nCOPY {name}.bin /\n"));
        b.build(&["-t", &format!("kiln-test/prune:{name}")])
    };
    build("a");
    next_second();
    next_second();
    build("b");
    let text = du(&b);
    assert!(text.contains("Cache records:\t2"), "{text}");
    assert!(
        text.contains("COPY a.bin /") && text.contains("COPY b.bin /"),
        "{text}"
    );

    // 250 kB keep the newest record (b, 200 kB) only.
    let out = prune(&b, &["--keep-storage", "250KB"]);
    assert!(out.contains("Deleted cache records:\t1"), "{out}");
    let text = du(&b);
    assert!(text.contains("Cache records:\t1"), "{text}");
    assert!(
        !text.contains("COPY a.bin /") && text.contains("COPY b.bin /"),
        "{text}"
    );
    let out = prune(&b, &["--filter", "until=1h"]);
    assert!(out.contains("Deleted cache records:\t0"), "{out}");
    assert_eq!(executed(&build("a")), 1, "a's record was removed");

    // A cache hit counts as a use: after a pause, b is old and a fresh.
    for _ in 0..3 {
        next_second();
    }
    assert_eq!(executed(&build("a")), 0);
    let out = prune(&b, &["--filter", "until=2s"]);
    assert!(out.contains("Deleted cache records:\t1"), "{out}");
    let text = du(&b);
    assert!(
        text.contains("COPY a.bin /") && !text.contains("COPY b.bin /"),
        "{text}"
    );

    let out = prune(&b, &["--all"]);
    assert!(out.contains("Deleted cache records:\t1"), "{out}");
    let text = du(&b);
    assert!(text.contains("Cache records:\t0"), "{text}");
    // The images themselves stay whole.
    for name in ["a", "b"] {
        let root = b.unpack(&format!("docker.io/kiln-test/prune:{name}"));
        assert_eq!(
            std::fs::metadata(root.join(format!("{name}.bin")))
                .unwrap()
                .len() as usize,
            if name == "a" { 100_000 } else { 200_000 }
        );
        b.validate_image(&format!("docker.io/kiln-test/prune:{name}"));
    }
    let out = b.kiln(&["prune", "--force", "--filter", "label=x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("label=x"),
        "{}",
        self::text(&out)
    );
}

#[test]
fn concurrent_builds_on_one_state_dir_both_succeed() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "one/Dockerfile",
        &format!(
            "FROM {}\nCOPY f /f\nRUN echo one > /one && cat /f >> /one\n",
            busybox(&env)
        ),
    );
    b.write("one/f", "shared\n");
    b.write(
        "two/Dockerfile",
        &format!("FROM {}\nRUN echo two > /two\nCOPY g /g\n", busybox(&env)),
    );
    b.write("two/g", "g\n");
    // A fresh state dir: all three pull the base at the same time.
    let runs = [
        ("one", "kiln-test/conc:one"),
        ("one", "kiln-test/conc:one-again"),
        ("two", "kiln-test/conc:two"),
    ];
    let children: Vec<_> = runs
        .iter()
        .map(|(dir, tag)| {
            Command::new(kiln_bin())
                .arg("--root")
                .arg(b.root.path())
                .args(["build", "--progress", "plain", "-t", tag])
                .arg(b.ctx().join(dir))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    // Every blob is whole, and the images unpack.
    let blobs = b.root.path().join("content/blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        assert_eq!(
            sha256_digest(&std::fs::read(e.path()).unwrap()),
            format!("sha256:{name}")
        );
    }
    read_json(&b.root.path().join("content/index.json"));
    for (_, tag) in runs {
        skopeo_store(&b, &[], &format!("docker.io/{tag}"));
    }
    let one = b.unpack("docker.io/kiln-test/conc:one");
    assert_eq!(read(&one.join("one")), "one\nshared\n");
    let again = b.unpack("docker.io/kiln-test/conc:one-again");
    assert_eq!(read(&again.join("one")), "one\nshared\n");
    let two = b.unpack("docker.io/kiln-test/conc:two");
    assert_eq!(read(&two.join("two")), "two\n");
    assert_eq!(read(&two.join("g")), "g\n");
    for (_, tag) in runs {
        b.validate_image(&format!("docker.io/{tag}"));
    }
    b.validate();
    // The cache the three wrote is whole: a rebuild of each context is all cached.
    for dir in ["one", "two"] {
        let meta = b.path("meta.json");
        let out = b.kiln(&[
            "build",
            "--metadata-file",
            meta.to_str().unwrap(),
            b.ctx().join(dir).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(executed(&read_json(&meta)), 0, "{dir}");
    }
}

#[test]
fn image_config_carries_every_metadata_instruction() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            r#"FROM {bb} AS shellform
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT echo entry "$0"
CMD run me
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --start-interval=2s --retries=4 CMD wget -q -O- localhost || exit 1
STOPSIGNAL SIGQUIT
VOLUME ["/data", "/logs"]
VOLUME /cache
EXPOSE 80 53/udp 443/tcp
LABEL org.example.a=1 "org.example.spaced key"="two words"
ONBUILD RUN echo child
USER app:app

FROM {bb} AS execform
ENTRYPOINT ["/bin/echo", "exec"]
HEALTHCHECK NONE
USER 1000
"#,
            bb = busybox(&env)
        ),
    );
    b.build(&["--target", "shellform", "-t", "kiln-test/config:shell"]);
    let c = b.config("docker.io/kiln-test/config:shell")["config"].clone();
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "-ec", "echo entry \"$0\""])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-ec", "run me"]));
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(
        c["Volumes"],
        serde_json::json!({"/data": {}, "/logs": {}, "/cache": {}})
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "53/udp": {}, "443/tcp": {}})
    );
    assert_eq!(c["Labels"]["org.example.a"], "1");
    assert_eq!(c["Labels"]["org.example.spaced key"], "two words");
    assert_eq!(c["User"], "app:app");
    // Docker-only fields (skopeo's OCI view drops them): the stored config.
    let raw = b.raw_config("docker.io/kiln-test/config:shell");
    assert_eq!(
        raw["config"]["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD-SHELL", "wget -q -O- localhost || exit 1"],
            "Interval": 30_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "StartPeriod": 10_000_000_000u64,
            "StartInterval": 2_000_000_000u64,
            "Retries": 4
        })
    );
    assert_eq!(
        raw["config"]["OnBuild"],
        serde_json::json!(["RUN echo child"])
    );
    assert_eq!(
        raw["config"]["Shell"],
        serde_json::json!(["/bin/sh", "-ec"])
    );

    b.build(&["--target", "execform", "-t", "kiln-test/config:exec"]);
    let c = b.config("docker.io/kiln-test/config:exec")["config"].clone();
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo", "exec"]));
    // ENTRYPOINT resets the base image's CMD (busybox's `sh`).
    assert!(c["Cmd"].is_null(), "{c}");
    let raw = b.raw_config("docker.io/kiln-test/config:exec");
    assert_eq!(
        raw["config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert_eq!(c["User"], "1000");
}

#[test]
fn prune_never_removes_what_a_running_build_uses() {
    use std::io::{BufRead, BufReader};
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY f /f\nRUN sleep 2 && cat /f > /g\n",
            busybox(&env)
        ),
    );
    b.write("f", "kept\n");
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(["build", "--progress", "plain", "-t", "kiln-test/busy:1"])
        .arg(b.ctx())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN step is going: its input layers are in use.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("RUN sleep 2") {
            break;
        }
    }
    assert!(log.contains("RUN sleep 2"), "{log}");
    let out = b.kiln(&["prune", "--all", "--force"]);
    assert!(
        !out.status.success(),
        "prune ran beside a build: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another kiln command"),
        "{}",
        text(&out)
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success(), "{log}{}", rest.join("\n"));
    assert_eq!(
        read(&b.unpack("docker.io/kiln-test/busy:1").join("g")),
        "kept\n"
    );
    // Once the build is done, prune runs; the image stays whole.
    let out = b.kiln(&["prune", "--all", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read(&b.unpack("docker.io/kiln-test/busy:1").join("g")),
        "kept\n"
    );
    b.validate_image("docker.io/kiln-test/busy:1");
}
