//! `kiln build`'s flags at their edges: bad values fail before anything is
//! built or written, naming the flag and the value.

mod support;

use support::Build;

/// A context whose build would write to the store (a COPY), so an empty
/// state directory afterwards proves nothing was built.
fn project() -> Build {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY a /a\n");
    b.write("a", "a\n");
    b
}

/// The build fails with `flags`, its error names every one of `wanted`, and
/// the state directory stays empty.
fn refused(flags: &[&str], wanted: &[&str]) {
    let b = project();
    let err = b.build_fails(flags);
    // miette wraps long lines ("\n  │ "), at a space or inside a long word.
    let wrap = unwrapped(&err);
    for w in wanted {
        assert!(
            wrap.iter().any(|e| e.contains(w)),
            "{flags:?}: {w:?} missing from:\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{flags:?}: {err}");
    let left: Vec<_> = std::fs::read_dir(b.root.path())
        .expect("state dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{flags:?} wrote {left:?} before failing:\n{err}"
    );
}

/// The message with miette's line wraps undone, both ways (a space or nothing).
fn unwrapped(err: &str) -> [String; 2] {
    let joined = |sep: &str| {
        let mut out = String::new();
        for (i, line) in err.lines().enumerate() {
            let t = line.trim_start().trim_start_matches('│').trim();
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(t);
        }
        out
    };
    [joined(" "), joined("")]
}

#[test]
fn bad_tags_are_refused_before_building() {
    refused(
        &["-t", "App/web:1"],
        &["-t/--tag", "App/web:1", "lowercase"],
    );
    refused(
        &["-t", "app:bad!tag"],
        &["-t/--tag", "app:bad!tag", "tag must"],
    );
    refused(&["-t", "app:"], &["-t/--tag", "\"app:\""]);
    let digest = format!("app@sha256:{}", "a".repeat(64));
    refused(&["-t", &digest], &["-t/--tag", &digest, "digest"]);
}

#[test]
fn bad_outputs_are_refused_before_building() {
    refused(
        &["-o", "type=floppy"],
        &["--output", "type=floppy", "unknown type"],
    );
    refused(&["-o", "type=local"], &["--output", "type=local", "dest="]);
    refused(
        &["-o", "type=local,dest=out,colour=red"],
        &["--output", "\"colour\"", "not an attribute"],
    );
    refused(
        &["-o", "type=image,name=Bad/Name"],
        &["--output", "Bad/Name", "lowercase"],
    );
    // Nothing to push to: refused now, not after the build.
    refused(&["--push"], &["push=true needs an image name"]);
}

#[test]
fn platforms_follow_containerd_parsing() {
    refused(&["--platform", "foo"], &["--platform", "\"foo\""]);
    refused(
        &["--platform", "linux/amd64,linux/*"],
        &["--platform", "\"linux/*\""],
    );
    refused(
        &["--platform", "linux/arm64/v8/x"],
        &["--platform", "linux/arm64/v8/x"],
    );
    // Aliases and default variants are normalised as buildx normalises them.
    let b = project();
    b.build(&["--platform", "linux/aarch64/v8", "-t", "cli-platform:1"]);
    let config = b.raw_config("docker.io/library/cli-platform:1");
    assert_eq!(config["architecture"], "arm64");
    assert!(config.get("variant").is_none(), "{config}");
    b.build(&["--platform", "armhf", "-t", "cli-platform:2"]);
    let config = b.raw_config("docker.io/library/cli-platform:2");
    assert_eq!(
        (
            config["os"].as_str(),
            config["architecture"].as_str(),
            config["variant"].as_str()
        ),
        (Some("linux"), Some("arm"), Some("v7"))
    );
}

#[test]
fn session_flags_are_refused_before_building() {
    refused(
        &["--build-context", "extra=/no/such/dir"],
        &["--build-context", "/no/such/dir", "not a directory"],
    );
    refused(
        &["--build-context", "extra"],
        &["--build-context", "\"extra\""],
    );
    refused(
        &["--secret", "id=tok,src=/no/such/secret"],
        &["--secret", "/no/such/secret"],
    );
    refused(&["--secret", "id=tok,colour=red"], &["--secret", "colour"]);
    refused(&["--ssh", "key=/no/such/key"], &["--ssh", "/no/such/key"]);
    refused(&["--allow", "network.none"], &["--allow", "network.none"]);
    refused(
        &["--add-host", "db:not-an-ip"],
        &["--add-host", "not-an-ip"],
    );
}

#[test]
fn a_missing_context_or_dockerfile_is_refused_before_building() {
    refused(
        &["-f", "/no/such/Dockerfile"],
        &["/no/such/Dockerfile", "no such file"],
    );
    let b = Build::new();
    let out = b.kiln(&["build", "/no/such/context"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        unwrapped(&err)
            .iter()
            .any(|e| e.contains("/no/such/context")),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(b.root.path()).expect("state").count(),
        0,
        "{err}"
    );
    let b = Build::new();
    b.write("a", "no Dockerfile here\n");
    let err = b.build_fails(&[]);
    assert!(
        unwrapped(&err)
            .iter()
            .any(|e| e.contains("Dockerfile") && e.contains("no such file")),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(b.root.path()).expect("state").count(),
        0,
        "{err}"
    );
}

#[test]
fn other_flags_are_refused_before_building() {
    refused(&["--jobs", "0"], &["--jobs"]);
    refused(
        &["--iidfile", "/no/such/dir/iid"],
        &["--iidfile", "/no/such/dir/iid"],
    );
    refused(&["--label", "novalue"], &["--label", "novalue"]);
    refused(&["--label", "=v"], &["--label", "\"=v\""]);
    refused(&["--build-arg", "=v"], &["--build-arg", "\"=v\""]);
    refused(
        &["--annotation", "index:org.example.a=1"],
        &["--annotation", "index:org.example.a=1", "index annotations"],
    );
    refused(
        &["--annotation", "manifest[linux/amd64]:org.example.a=1"],
        &["--annotation", "linux/amd64"],
    );
    refused(
        &["--annotation", "floppy:org.example.a=1"],
        &["--annotation", "unknown annotation type \"floppy\""],
    );
    refused(&["--call", "frobnicate"], &["--call", "frobnicate"]);
    refused(&["--print", "tree"], &["--print", "tree"]);
    refused(&["--executor", "chroot"], &["chroot"]);
    refused(&["--progress", "fancy"], &["--progress", "fancy"]);
}

#[test]
fn boolean_flags_take_go_boolean_values() {
    let b = project();
    let first = b.build(&["--no-cache=false"]);
    assert!(support::executed(&first) > 0, "{first}");
    // Cached unless --no-cache is true, in any of Go's spellings.
    assert_eq!(support::executed(&b.build(&["--no-cache=False"])), 0);
    assert_eq!(
        support::executed(&b.build(&["--no-cache=0", "--pull=f"])),
        0
    );
    for yes in [
        "--no-cache",
        "--no-cache=true",
        "--no-cache=T",
        "--no-cache=1",
    ] {
        assert!(support::executed(&b.build(&[yes])) > 0, "{yes}");
    }
    // `--push=false` is no push: no name needed. `--push=TRUE` is one.
    b.build(&["--push=false", "--load=false"]);
    refused(&["--push=TRUE"], &["push=true needs an image name"]);
    // `-q`/`--quiet=true` print only the image ID; `--quiet=false` shows progress.
    let ctx = b.ctx();
    let ctx = ctx.to_str().expect("utf-8");
    for (flag, quiet) in [
        ("-q", true),
        ("--quiet=true", true),
        ("--quiet=false", false),
    ] {
        let out = b.kiln(&["build", flag, ctx]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stdout.starts_with("sha256:"), quiet, "{flag}: {stdout}");
        assert_eq!(stderr.contains("COPY a /a"), !quiet, "{flag}: {stderr}");
    }
    // A value that is not a boolean is a usage error naming the flag.
    let out = b.kiln(&["build", "--no-cache=maybe", ctx]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-cache") && stderr.contains("maybe"),
        "{stderr}"
    );
    // The value only binds with `=`: `--pull CTX` still reads CTX as the context.
    let out = b.kiln(&["build", "--pull", ctx]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn legacy_docker_build_flags_are_accepted_with_a_note() {
    let b = project();
    let ctx = b.ctx();
    let ctx = ctx.to_str().expect("utf-8");
    let out = b.kiln(&[
        "build",
        "--rm",
        "--force-rm=true",
        "--compress",
        "--squash",
        "--isolation=default",
        "--security-opt",
        "seccomp=unconfined",
        "-m",
        "1g",
        "--memory-swap=2g",
        "-c",
        "512",
        "--cpu-period=100000",
        "--cpu-quota=50000",
        "--cpuset-cpus=0",
        "--cpuset-mems=0",
        ctx,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for flag in [
        "--rm",
        "--force-rm",
        "--compress",
        "--squash",
        "--isolation",
        "--security-opt",
        "--memory",
        "--memory-swap",
        "--cpu-shares",
        "--cpu-period",
        "--cpu-quota",
        "--cpuset-cpus",
        "--cpuset-mems",
    ] {
        assert!(
            stderr.contains(&format!("note: {flag} is ignored")),
            "{flag}: {stderr}"
        );
    }
    // Not given, no note.
    let out = b.kiln(&["build", ctx]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("note:"));
}

/// Runs `kiln build CTX` with `flags` (global ones first); returns stderr, asserting success.
fn build_stderr(b: &Build, global: &[&str], flags: &[&str], env: &[(&str, &str)]) -> String {
    let ctx = b.ctx();
    let mut args: Vec<&str> = global.to_vec();
    args.push("build");
    args.extend_from_slice(flags);
    args.push(ctx.to_str().expect("utf-8"));
    let out = b.kiln_env(&args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

#[test]
fn debug_prints_the_internal_steps() {
    let env = support::TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN echo debug > /d\n",
            env.registry()
        ),
    );
    let target = format!("{}/cli-debug/app:1", env.registry());
    let push = [
        "--insecure-registry",
        env.registry(),
        "-t",
        &target,
        "--push",
    ];
    let first = build_stderr(&b, &["-D"], &push, &[]);
    for phase in [
        "loading the context",
        "context loaded",
        "Dockerfile parsed",
        "base image resolved",
        "lowering stage",
        "solve",
        "cache key",
        "cache miss",
        "executor selected",
        "executed vertex=[2/2] RUN echo debug > /d",
        "layer exported",
        "image exported",
        "writing output",
        "blob pushed",
        "manifest pushed",
    ] {
        assert!(first.contains(phase), "{phase:?} missing from:\n{first}");
    }
    // Each event carries the step's cache key.
    assert!(
        first.lines().any(|l| l.contains("cache miss")
            && l.contains("RUN echo debug")
            && l.contains("key=sha256:")),
        "{first}"
    );
    // The rebuild finds it: a hit with the same key; `-D` given after the verb, and KILN_DEBUG.
    let again = build_stderr(&b, &[], &["-D"], &[]);
    let key_of = |text: &str, event: &str| {
        text.lines()
            .find(|l| l.contains(event) && l.contains("RUN echo debug"))
            .and_then(|l| l.split("key=").nth(1))
            .map(|k| k.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no {event} for the RUN in:\n{text}"))
    };
    assert_eq!(key_of(&again, "cache hit"), key_of(&first, "cache miss"));
    let env_on = build_stderr(&b, &[], &[], &[("KILN_DEBUG", "1")]);
    assert!(env_on.contains("cache hit"), "{env_on}");
    // Without it, none of that.
    let quiet = build_stderr(&b, &[], &[], &[]);
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    let off = build_stderr(&b, &["--debug=false"], &[], &[("KILN_DEBUG", "1")]);
    assert!(!off.contains("DEBUG"), "{off}");
}

/// The lines of plain progress step `#N` named `name`, without the `#N ` prefix.
fn step_lines<'a>(plain: &'a str, name: &str) -> Vec<&'a str> {
    let header = plain
        .lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(n, rest)| n.starts_with('#') && rest == name)
        })
        .unwrap_or_else(|| panic!("no step {name:?} in:\n{plain}"));
    let number = format!("{} ", header.split_once(' ').expect("numbered").0);
    plain
        .lines()
        .filter_map(|l| l.strip_prefix(number.as_str()))
        .collect()
}

#[test]
fn plain_progress_shows_the_export_and_the_push_as_steps() {
    let env = support::TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN echo export > /e\n",
            env.registry()
        ),
    );
    let target = format!("{}/cli-progress/app:1", env.registry());
    let oci = b.path("image.tar");
    let meta = b.path("meta.json");
    let stderr = build_stderr(
        &b,
        &[],
        &[
            "--progress=plain",
            "--insecure-registry",
            env.registry(),
            "-t",
            &target,
            "--push",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "--metadata-file",
            meta.to_str().expect("utf-8"),
        ],
        &[],
    );
    let digest = support::read_json(&meta)["containerimage.digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // The oci output comes first: its step makes the layers, manifest and config.
    let archive = step_lines(&stderr, "exporting to oci image format");
    let has = |lines: &[&str], prefix: &str, suffix: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
    };
    assert!(has(&archive, "exporting layers", "done"), "{stderr}");
    assert!(
        has(&archive, "exporting manifest sha256:", "done"),
        "{stderr}"
    );
    // The default provenance makes the pushed image an index over the image and its
    // attestation manifest, as buildx makes it: the build's digest is the index's.
    assert!(
        archive.contains(&format!("exporting manifest list {digest} done").as_str()),
        "{stderr}"
    );
    assert!(
        has(&archive, "exporting attestation manifest sha256:", "done"),
        "{stderr}"
    );
    assert!(
        has(&archive, "exporting config sha256:", "done"),
        "{stderr}"
    );
    assert!(has(&archive, "sending tarball ", "done"), "{stderr}");
    assert!(has(&archive, "DONE ", "s"), "{stderr}");
    assert!(oci.is_file());
    // The image output names and pushes, with the bytes pushed.
    let image = step_lines(&stderr, "exporting to image");
    assert!(
        image.contains(&format!("naming to {target} done").as_str()),
        "{stderr}"
    );
    let pushed = image
        .iter()
        .find(|l| l.starts_with("pushing layers ") && l.ends_with(" done"))
        .unwrap_or_else(|| panic!("no finished push of the layers in:\n{stderr}"));
    let (sent, total) = pushed["pushing layers ".len()..]
        .split_once(" / ")
        .expect("bytes pushed / total");
    assert_eq!(
        sent,
        total.split_whitespace().next().expect("total"),
        "{pushed}"
    );
    assert!(
        image.contains(&format!("pushing manifest for {target}@{digest} done").as_str()),
        "{stderr}"
    );
    assert!(has(&image, "DONE ", "s"), "{stderr}");
    // Both come after the build's last step ended.
    let lines: Vec<&str> = stderr.lines().collect();
    let run_done = lines
        .iter()
        .position(|l| {
            l.starts_with('#') && l.contains(" DONE ") && {
                let n = l.split(' ').next().unwrap_or_default();
                lines
                    .iter()
                    .any(|h| *h == format!("{n} [2/2] RUN echo export > /e"))
            }
        })
        .expect("the RUN step's DONE");
    let export_start = lines
        .iter()
        .position(|l| l.ends_with(" exporting to oci image format"))
        .expect("the export step");
    assert!(run_done < export_start, "{stderr}");
    // The registry has what the step said it pushed.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "{out:?}");
    let raw = out.stdout;
    let sha = {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&raw)
            .expect("write");
        let o = child.wait_with_output().expect("sha256sum output");
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(format!("sha256:{sha}"), digest);
}

#[test]
fn manifest_annotations_keep_their_key() {
    let b = project();
    b.build(&[
        "-t",
        "cli-annotated:1",
        "--annotation",
        "manifest:org.example.typed=1",
        "--annotation",
        "org.example.plain=2",
    ]);
    let m = b.manifest("docker.io/library/cli-annotated:1");
    assert_eq!(m["annotations"]["org.example.typed"], "1", "{m}");
    assert_eq!(m["annotations"]["org.example.plain"], "2", "{m}");
}

#[test]
fn empty_flag_environment_variables_count_as_unset() {
    let b = project();
    let empty = [
        ("KILN_ROOT", ""),
        ("KILN_DEBUG", ""),
        ("KILN_EXECUTOR", ""),
        ("KILN_MAX_LAYER_SIZE", ""),
        ("BUILDKIT_PROGRESS", ""),
    ];
    let version = std::process::Command::new(support::kiln_bin())
        .arg("version")
        .envs(empty)
        .output()
        .expect("run kiln");
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    // `kiln_env` passes --root; the empty variables must not turn into flags without values.
    build_stderr(&b, &[], &[], &empty);
}
