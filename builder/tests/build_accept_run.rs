//! Acceptance of issue 6 (RUN in a sandbox) through `kiln build`, for both
//! executors: entitlements (`--security=insecure`, `--network=host`), network
//! isolation against a server on the host's loopback, USER resolution, OCI
//! whiteouts across layers read back with umoci, cache mount sharing modes,
//! secrets kept out of the state dir, heredoc and exec-form RUN, and host files
//! out of reach.

mod support;

use std::process::Command;
use support::{build_with, busybox, pong_server, read, Build, TestEnv};

fn entitlements_are_required_and_grant_caps_and_host_network(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN grep CapEff /proc/self/status | cut -f2 > /caps-sandbox\nRUN --security=insecure grep CapEff /proc/self/status | cut -f2 > /caps-insecure\n",
            busybox(&env)
        ),
    );
    let err = b.build_fails(&["--executor", executor]);
    assert!(err.contains("security.insecure"), "{err}");
    assert!(err.contains("Dockerfile:3") || err.contains(":3:"), "{err}");
    let root = build_with(
        &b,
        executor,
        "kiln-test/run-insecure:1",
        &["--allow", "security.insecure"],
    );
    // Docker's default capability set in the sandbox; CAP_SYS_ADMIN (bit 21) when insecure.
    assert_eq!(read(&root.join("caps-sandbox")).trim(), "00000000a80425fb");
    let insecure = u64::from_str_radix(read(&root.join("caps-insecure")).trim(), 16).unwrap();
    assert_ne!(insecure & (1 << 21), 0, "{insecure:x}");

    // `none` has its own network namespace; `host` reaches the host's loopback.
    // (nc, not wget: this static busybox's wget crashes in its resolver.)
    let port = pong_server("127.0.0.1:0", 1);
    let probe = |mode: &str| {
        format!(
            "RUN --network={mode} sh -c 'if nc -w 5 127.0.0.1 {port} < /dev/null > /got-{mode}; then echo reached; else echo blocked; fi > /{mode}'"
        )
    };
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\n{}\n{}\nRUN --network=none ip addr show lo | grep -c 'inet 127.0.0.1' > /lo\n",
            busybox(&env),
            probe("none"),
            probe("host")
        ),
    );
    let err = b.build_fails(&["--executor", executor]);
    assert!(err.contains("network.host"), "{err}");
    let root = build_with(
        &b,
        executor,
        "kiln-test/run-net:1",
        &["--allow", "network.host"],
    );
    assert_eq!(read(&root.join("none")), "blocked\n");
    assert_eq!(read(&root.join("host")), "reached\n");
    assert_eq!(read(&root.join("got-host")), "pong\n");
    assert_eq!(
        read(&root.join("lo")),
        "1\n",
        "lo is up in the none namespace"
    );
}

fn users_by_name_and_id_and_unknown_names_fail_at_their_line(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nUSER app\nRUN id > /tmp/by-name\nUSER 1000:0\nRUN id > /tmp/by-uid-gid\nUSER 4242:4343\nRUN id -u > /tmp/numeric && id -g >> /tmp/numeric\nUSER app:root\nRUN id -G > /tmp/name-group\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/run-user:1", &[]);
    assert!(
        read(&root.join("tmp/by-name")).starts_with("uid=1000(app) gid=1000(app)"),
        "{}",
        read(&root.join("tmp/by-name"))
    );
    assert!(
        read(&root.join("tmp/by-uid-gid")).starts_with("uid=1000(app) gid=0(root)"),
        "{}",
        read(&root.join("tmp/by-uid-gid"))
    );
    assert_eq!(
        read(&root.join("tmp/numeric")),
        "4242\n4343\n",
        "numeric ids work without passwd entries"
    );
    assert_eq!(read(&root.join("tmp/name-group")).trim(), "0");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(root.join("tmp/numeric")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));

    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN true\nUSER nosuchuser\nRUN id\n",
            busybox(&env)
        ),
    );
    let err = b.build_fails(&["--executor", executor]);
    assert!(err.contains("nosuchuser"), "{err}");
    assert!(err.contains("Dockerfile:4") || err.contains(":4:"), "{err}");
}

/// The last layer's entries, as GNU tar lists them.
fn last_layer_entries(b: &Build, tag: &str) -> Vec<String> {
    let m = b.manifest(tag);
    let digest = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = b.blob(&digest);
    let out = Command::new("tar").arg("-tzf").arg(blob).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}

fn deletes_renames_and_replaced_dirs_become_whiteouts(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}
RUN mkdir -p /d/keep /d/gone /r /op/sub && echo k > /d/keep/f && echo g > /d/gone/f && echo old > /r/old && echo x > /op/sub/x && echo y > /op/y && echo base > /f1
RUN rm -rf /d/gone && mv /r/old /r/new && rm -rf /op && mkdir /op && echo fresh > /op/z && rm /f1 && rm /bin/vi
",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/run-wh:1", &[]);
    assert_eq!(read(&root.join("d/keep/f")), "k\n");
    assert!(!root.join("d/gone").exists());
    assert_eq!(read(&root.join("r/new")), "old\n");
    assert!(!root.join("r/old").exists());
    let mut op: Vec<String> = std::fs::read_dir(root.join("op"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    op.sort();
    assert_eq!(op, ["z"], "the replaced directory holds only its new file");
    assert!(!root.join("f1").exists());
    assert!(
        std::fs::symlink_metadata(root.join("bin/vi")).is_err(),
        "a base layer's file is deleted"
    );
    assert!(root.join("bin/busybox").exists());

    let entries = last_layer_entries(&b, "docker.io/kiln-test/run-wh:1");
    for wh in ["d/.wh.gone", "r/.wh.old", ".wh.f1", "bin/.wh.vi"] {
        assert!(entries.iter().any(|e| e == wh), "{wh} in {entries:?}");
    }
    let opaque = entries.iter().any(|e| e == "op/.wh..wh..opq");
    let explicit = ["op/.wh.sub", "op/.wh.y"]
        .iter()
        .all(|w| entries.iter().any(|e| e == w));
    assert!(
        opaque || explicit,
        "op's old entries are hidden: {entries:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.contains(".wh.") && e.contains("keep")),
        "{entries:?}"
    );
}

fn cache_mounts_locked_run_one_after_the_other_and_private_apart(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    let stage = |name: &str, sharing: &str| {
        format!(
            "FROM {bb} AS {name}\nRUN --mount=type=cache,id={sharing}-cache,target=/c,sharing={sharing} sh -c 'cut -d\" \" -f1 /proc/uptime > /{name}; echo {name} > /c/{name}; sleep 1; ls /c > /{name}-saw; cut -d\" \" -f1 /proc/uptime >> /{name}'\n",
            bb = busybox(&env)
        )
    };
    b.write(
        "Dockerfile",
        &format!(
            "{}{}{}{}FROM scratch\nCOPY --from=l1 /l1 /l1-saw /\nCOPY --from=l2 /l2 /l2-saw /\nCOPY --from=p1 /p1 /p1-saw /\nCOPY --from=p2 /p2 /p2-saw /\n",
            stage("l1", "locked"),
            stage("l2", "locked"),
            stage("p1", "private"),
            stage("p2", "private")
        ),
    );
    let root = build_with(&b, executor, "kiln-test/run-cache:1", &["--jobs", "8"]);
    let span = |name: &str| -> (f64, f64) {
        let t = read(&root.join(name));
        let v: Vec<f64> = t.lines().map(|l| l.trim().parse().unwrap()).collect();
        (v[0], v[1])
    };
    let (l1, l2) = (span("l1"), span("l2"));
    assert!(
        l1.1 <= l2.0 || l2.1 <= l1.0,
        "locked steps overlapped: l1 {l1:?}, l2 {l2:?}"
    );
    // The second locked step sees the first one's file: one shared directory.
    let saw = [read(&root.join("l1-saw")), read(&root.join("l2-saw"))];
    assert!(
        saw.iter().any(|s| s.contains("l1") && s.contains("l2")),
        "{saw:?}"
    );
    // Private steps that run at once get a directory each.
    let (p1, p2) = (span("p1"), span("p2"));
    assert!(
        p1.0 < p2.1 && p2.0 < p1.1,
        "private steps ran at once: {p1:?} {p2:?}"
    );
    assert_eq!(read(&root.join("p1-saw")), "p1\n");
    assert_eq!(read(&root.join("p2-saw")), "p2\n");
}

fn secrets_stay_out_of_the_image_history_and_state(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    let file = b.path("secret-file");
    std::fs::write(&file, "FILE-SECRET-51423").unwrap();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /file-len && ls /run/secrets > /listed\nRUN --mount=type=secret,id=envtok,env=TOKEN sh -c 'echo ${{#TOKEN}} > /env-len'\nRUN echo \"[$TOKEN]\" > /after\n",
            busybox(&env)
        ),
    );
    let tag = "kiln-test/run-secret:1";
    b.build_env(
        &[
            "--executor",
            executor,
            "-t",
            tag,
            "--secret",
            &format!("id=tok,src={}", file.display()),
            "--secret",
            "id=envtok,env=KILN_ACCEPT_SECRET",
        ],
        &[("KILN_ACCEPT_SECRET", "ENV-SECRET-90817")],
    );
    let root = b.unpack(&format!("docker.io/{tag}"));
    assert_eq!(read(&root.join("file-len")).trim(), "17");
    assert_eq!(read(&root.join("listed")), "tok\n");
    assert_eq!(read(&root.join("env-len")).trim(), "16");
    assert_eq!(
        read(&root.join("after")),
        "[]\n",
        "the env var ends with its step"
    );
    assert!(!root.join("run/secrets/tok").exists());
    let history = b.raw_config(&format!("docker.io/{tag}"))["history"].to_string();
    for secret in ["FILE-SECRET-51423", "ENV-SECRET-90817"] {
        assert!(!history.contains(secret));
        for dir in [b.root.path(), root.as_path()] {
            let found = Command::new("grep")
                .args(["-r", "-a", "-l", secret])
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                found.stdout.is_empty(),
                "{secret} found in {}",
                String::from_utf8_lossy(&found.stdout)
            );
        }
    }
}

fn heredoc_and_exec_form_runs(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            r#"FROM {}
ENV GREETING=hello
RUN <<EOF
echo one > /heredoc
echo "$GREETING two" >> /heredoc
EOF
RUN cat <<EOT > /catdoc
home=$HOME
EOT
RUN <<EOF
#!/usr/bin/awk -f
BEGIN {{ print "from awk" > "/awk" }}
EOF
RUN ["/bin/sh", "-c", "echo exec $0 $GREETING > /exec", "zero"]
RUN ["touch", "/exec-via-path"]
"#,
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/run-forms:1", &[]);
    assert_eq!(read(&root.join("heredoc")), "one\nhello two\n");
    assert_eq!(read(&root.join("catdoc")), "home=/root\n");
    assert_eq!(
        read(&root.join("awk")),
        "from awk\n",
        "a shebang picks the interpreter"
    );
    assert_eq!(read(&root.join("exec")), "exec zero hello\n");
    assert!(root.join("exec-via-path").is_file());
}

fn host_files_outside_the_rootfs_are_unreachable(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    // A host file at a path the image also has a directory for.
    let marker = format!("/tmp/kiln-accept-host-{}-{executor}", std::process::id());
    std::fs::write(&marker, "HOST-ONLY-BYTES").unwrap();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN if cat {marker} 2>/dev/null; then echo read > /result; else echo unreachable > /result; fi; ls /tmp > /tmp-listing\n",
            busybox(&env)
        ),
    );
    let root = build_with(&b, executor, "kiln-test/run-host:1", &[]);
    let _ = std::fs::remove_file(&marker);
    assert_eq!(read(&root.join("result")), "unreachable\n");
    assert!(!read(&root.join("tmp-listing")).contains("kiln-accept-host"));
    b.write(
        "Dockerfile",
        &format!("FROM {}\nRUN cat {marker}\n", busybox(&env)),
    );
    std::fs::write(&marker, "HOST-ONLY-BYTES").unwrap();
    let err = b.build_fails(&["--executor", executor]);
    let _ = std::fs::remove_file(&marker);
    assert!(err.contains("exit code: 1"), "{err}");
}

fn bind_tmpfs_cache_mounts_and_add_host_through_the_dockerfile(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("in.txt", "from the context\n");
    b.write(
        "Dockerfile",
        &format!(
            "FROM {bb} AS src
RUN mkdir /seed && echo seeded > /seed/s && echo stagefile > /sf
FROM {bb}
RUN --mount=type=bind,target=/ctx cat /ctx/in.txt > /from-ctx && if touch /ctx/new 2>/dev/null; then echo rw; else echo ro; fi > /ctx-ro
RUN --mount=type=bind,from=src,source=/sf,target=/mnt/sf cat /mnt/sf > /from-stage
RUN --mount=type=bind,target=/ctx,rw echo x > /ctx/written && cat /ctx/written > /rw-saw
RUN --mount=type=tmpfs,target=/t,size=1m df -k /t | tail -1 | awk '{{print $2}}' > /tmpfs-size && touch /t/x
RUN --mount=type=cache,target=/c,from=src,source=/seed,mode=0700,uid=1000,gid=1000 cat /c/s > /cache-seed && stat -c '%a %u %g' /c > /cache-meta
RUN grep myhost /etc/hosts > /hosts-line
",
            bb = busybox(&env)
        ),
    );
    let root = build_with(
        &b,
        executor,
        "kiln-test/run-mounts:1",
        &["--add-host", "myhost:10.1.2.3"],
    );
    assert_eq!(read(&root.join("from-ctx")), "from the context\n");
    assert_eq!(
        read(&root.join("ctx-ro")),
        "ro\n",
        "binds are read-only by default"
    );
    assert_eq!(read(&root.join("from-stage")), "stagefile\n");
    assert_eq!(read(&root.join("rw-saw")), "x\n");
    assert!(
        !b.ctx().join("written").exists(),
        "rw writes never reach the context"
    );
    assert!(
        !root.join("ctx/written").exists(),
        "rw writes are discarded"
    );
    assert_eq!(read(&root.join("tmpfs-size")).trim(), "1024");
    assert!(!root.join("t/x").exists());
    assert_eq!(read(&root.join("cache-seed")), "seeded\n");
    assert_eq!(read(&root.join("cache-meta")), "700 1000 1000\n");
    let hosts = read(&root.join("hosts-line"));
    assert!(
        hosts.starts_with("10.1.2.3") && hosts.trim_end().ends_with("myhost"),
        "{hosts}"
    );
    assert!(
        !std::fs::read_to_string(root.join("etc/hosts"))
            .unwrap_or_default()
            .contains("myhost"),
        "/etc/hosts is not in the layer"
    );

    // BUILDKIT_CACHE_MOUNT_NS puts cache ids in a namespace of their own.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nARG BUILDKIT_CACHE_MOUNT_NS\nRUN --mount=type=cache,id=ns-cache,target=/c sh -c 'ls /c > /saw; echo \"$BUILDKIT_CACHE_MOUNT_NS\" > /c/mark-$BUILDKIT_CACHE_MOUNT_NS'\n",
            busybox(&env)
        ),
    );
    let saw = |ns: &str| {
        let tag = format!("kiln-test/run-ns:{ns}");
        let root = build_with(
            &b,
            executor,
            &tag,
            &[
                "--no-cache",
                "--build-arg",
                &format!("BUILDKIT_CACHE_MOUNT_NS={ns}"),
            ],
        );
        read(&root.join("saw"))
    };
    assert_eq!(saw("one"), "");
    assert_eq!(saw("two"), "", "another namespace starts empty");
    assert_eq!(saw("one"), "mark-one\n", "the namespace's cache persisted");
}

fn env_args_workdir_and_a_default_path(executor: &str) {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {} AS bb
FROM scratch
COPY --from=bb / /
ARG FROM_ARG=argdefault
ENV FROM_ENV=envvalue
WORKDIR /w/x
RUN echo \"$PATH|$FROM_ARG|$FROM_ENV|$(pwd)\" > /seen
",
            busybox(&env)
        ),
    );
    let root = build_with(
        &b,
        executor,
        "kiln-test/run-env:1",
        &["--build-arg", "FROM_ARG=given"],
    );
    // A scratch stage has no PATH: RUN gets the default one.
    assert_eq!(
        read(&root.join("seen")),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|given|envvalue|/w/x\n"
    );
    let config = b.config("docker.io/kiln-test/run-env:1");
    let env_list = config["config"]["Env"].to_string();
    assert!(
        !env_list.contains("FROM_ARG"),
        "ARG is not image env: {env_list}"
    );
}

support::for_both_executors!(
    entitlements_are_required_and_grant_caps_and_host_network,
    users_by_name_and_id_and_unknown_names_fail_at_their_line,
    deletes_renames_and_replaced_dirs_become_whiteouts,
    cache_mounts_locked_run_one_after_the_other_and_private_apart,
    secrets_stay_out_of_the_image_history_and_state,
    heredoc_and_exec_form_runs,
    host_files_outside_the_rootfs_are_unreachable,
    bind_tmpfs_cache_mounts_and_add_host_through_the_dockerfile,
    env_args_workdir_and_a_default_path,
);
