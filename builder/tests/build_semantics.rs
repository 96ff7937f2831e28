//! Dockerfile semantics `kiln build` must share with BuildKit, end to end:
//! ONBUILD of a parent stage, ENTRYPOINT and CMD, WORKDIR, heredoc
//! expansion; checked in the stored image config and the unpacked rootfs.

mod support;

use support::{Build, TestEnv};

#[test]
fn a_parent_stages_onbuild_triggers_run_in_the_child_stage() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest AS parent\nARG GREETING=hello\nONBUILD RUN echo \"$GREETING from trigger\" > /trigger.txt\nONBUILD ENV FROM_TRIGGER=$GREETING\nONBUILD LABEL trigger=yes\nRUN test ! -e /trigger.txt\n\nFROM parent AS child\nRUN cat /trigger.txt > /seen.txt\n",
            env.registry()
        ),
    );
    b.build(&["-t", "kiln-test/semantics-onbuild-child:1"]);
    let root = b.unpack("docker.io/kiln-test/semantics-onbuild-child:1");
    assert_eq!(
        std::fs::read_to_string(root.join("seen.txt")).unwrap(),
        "hello from trigger\n",
        "the trigger ran before the child's own RUN, with the parent's ARG"
    );
    let config = b.raw_config("docker.io/kiln-test/semantics-onbuild-child:1");
    assert!(
        config["config"]["OnBuild"].is_null(),
        "the child does not carry the parent's triggers: {config}"
    );
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("FROM_TRIGGER=hello")));
    assert_eq!(config["config"]["Labels"]["trigger"], "yes");

    // The parent built as the target keeps its triggers and did not run them.
    b.build(&[
        "--target",
        "parent",
        "-t",
        "kiln-test/semantics-onbuild-parent:1",
    ]);
    let parent = b.raw_config("docker.io/kiln-test/semantics-onbuild-parent:1");
    assert_eq!(
        parent["config"]["OnBuild"].as_array().map(Vec::len),
        Some(3),
        "{parent}"
    );
    assert!(parent["config"]["Labels"]["trigger"].is_null());
}

#[test]
fn entrypoint_resets_only_a_cmd_the_stage_inherited() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch AS base\nCMD [\"from-base\"]\n\nFROM base AS inherits\nENTRYPOINT [\"/e\"]\n\nFROM base AS own\nCMD [\"x\"]\nENTRYPOINT [\"/e\"]\n",
    );
    b.build(&[
        "--target",
        "inherits",
        "-t",
        "kiln-test/semantics-ep-inherits:1",
    ]);
    let inherits = b.raw_config("docker.io/kiln-test/semantics-ep-inherits:1");
    assert_eq!(inherits["config"]["Entrypoint"], serde_json::json!(["/e"]));
    assert!(
        inherits["config"]["Cmd"].is_null(),
        "the parent stage's CMD is reset: {inherits}"
    );
    b.build(&["--target", "own", "-t", "kiln-test/semantics-ep-own:1"]);
    let own = b.raw_config("docker.io/kiln-test/semantics-ep-own:1");
    assert_eq!(own["config"]["Entrypoint"], serde_json::json!(["/e"]));
    assert_eq!(
        own["config"]["Cmd"],
        serde_json::json!(["x"]),
        "a CMD set in the same stage is kept: {own}"
    );
}

#[test]
fn workdir_is_kept_as_written_and_relative_ones_join() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nARG SUB=made\nWORKDIR /srv/app/\nRUN pwd > /first.txt\nWORKDIR $SUB/./x/../y/\nRUN pwd > /second.txt\n",
            env.registry()
        ),
    );
    b.build(&["-t", "kiln-test/semantics-workdir:1"]);
    let config = b.raw_config("docker.io/kiln-test/semantics-workdir:1");
    assert_eq!(config["config"]["WorkingDir"], "/srv/app/made/y");
    let root = b.unpack("docker.io/kiln-test/semantics-workdir:1");
    assert_eq!(
        std::fs::read_to_string(root.join("first.txt")).unwrap(),
        "/srv/app\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("second.txt")).unwrap(),
        "/srv/app/made/y\n"
    );
    let history: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .filter(|c| c.starts_with("WORKDIR"))
        .collect();
    assert_eq!(history, ["WORKDIR /srv/app/", "WORKDIR /srv/app/made/y"]);

    b.write("Dockerfile", "FROM scratch\nWORKDIR /tmp/\nCOPY f ./\n");
    b.write("f", "x");
    b.build(&["-t", "kiln-test/semantics-workdir:2"]);
    let config = b.raw_config("docker.io/kiln-test/semantics-workdir:2");
    assert_eq!(config["config"]["WorkingDir"], "/tmp/", "{config}");
    let root = b.unpack("docker.io/kiln-test/semantics-workdir:2");
    assert_eq!(std::fs::read_to_string(root.join("tmp/f")).unwrap(), "x");
}

#[test]
fn copy_heredoc_bodies_are_expanded_unless_the_delimiter_is_quoted() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch\nARG NAME=world\nENV GREETING=hello\nCOPY <<EOF /plain.txt\n$GREETING ${NAME} '$NAME' \\$NAME\nEOF\nCOPY <<\"EOF\" /quoted.txt\n$GREETING ${NAME}\nEOF\nADD <<'EOF' /single.txt\n$NAME\nEOF\n",
    );
    b.build(&[
        "--build-arg",
        "NAME=kiln",
        "-t",
        "kiln-test/semantics-heredoc:1",
    ]);
    let root = b.unpack("docker.io/kiln-test/semantics-heredoc:1");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("plain.txt"), "hello kiln 'kiln' $NAME\n");
    assert_eq!(read("quoted.txt"), "$GREETING ${NAME}\n");
    assert_eq!(read("single.txt"), "$NAME\n");
}

#[test]
fn expansion_that_grows_without_bound_fails_fast_at_its_line() {
    let b = Build::new();
    let mut dockerfile = format!("FROM scratch\nARG A0={}\n", "a".repeat(64));
    for i in 1..=10 {
        dockerfile.push_str(&format!(
            "ARG A{i}={}\n",
            format!("${{A{}}}", i - 1).repeat(10)
        ));
    }
    dockerfile.push_str("RUN echo $A10\n");
    b.write("Dockerfile", &dockerfile);
    for extra in [&[][..], &["--check"][..]] {
        let started = std::time::Instant::now();
        let err = b.build_fails(extra);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{extra:?} took {:?}",
            started.elapsed()
        );
        assert!(err.contains("Dockerfile:7:1"), "{extra:?}: {err}");
        assert!(err.contains("too large"), "{extra:?}: {err}");
        assert!(err.len() < 4000, "the error does not print the value");
    }
}

#[test]
fn expose_is_validated_and_expanded_as_buildkit_does() {
    let b = Build::new();
    b.write(
        "Dockerfile",
        "FROM scratch\nARG PORTS=\"8000-8002/UDP 9090\"\nEXPOSE 80 $PORTS 132/sctp\n",
    );
    b.build(&["-t", "kiln-test/semantics-expose:1"]);
    let config = b.raw_config("docker.io/kiln-test/semantics-expose:1");
    let keys: Vec<&String> = config["config"]["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        keys,
        ["132/sctp", "80/tcp", "8000/udp", "8001/udp", "8002/udp", "9090/tcp"]
    );

    b.write("Dockerfile", "FROM scratch\n\nEXPOSE 80 99999999/tcpx\n");
    for extra in [&[][..], &["--check"][..]] {
        let err = b.build_fails(extra);
        assert!(err.contains("Dockerfile:3:1"), "{extra:?}: {err}");
        assert!(err.contains("99999999/tcpx"), "{extra:?}: {err}");
    }
    b.write("Dockerfile", "FROM scratch\nEXPOSE 65536\n");
    let err = b.build_fails(&[]);
    assert!(
        err.contains("Dockerfile:2:1") && err.contains("out of range"),
        "{err}"
    );
}

#[test]
fn build_checks_are_listed_after_the_build_as_buildx_does() {
    let b = Build::new();
    let dockerfile = "FROM scratch AS unused\nCMD echo not-built\n\nFROM scratch AS Final\nCOPY f /f\nCMD echo hi\n";
    b.write("Dockerfile", dockerfile);
    b.write("f", "x");
    let ctx = b.ctx();
    let build = |extra: &[&str]| {
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        b.kiln(&args)
    };
    let out = build(&["-t", "kiln-test/semantics-checks:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("warnings found"))
        .collect();
    assert_eq!(
        summary,
        [
            " 2 warnings found (use kiln build --check to expand):",
            " - StageNameCasing: Stage name 'Final' should be lowercase (line 4)",
            " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 6)",
        ],
        "the unused stage's CMD is not reported:\n{stderr}"
    );

    // rawjson carries them as SolveStatus warnings (short is base64, as Go's []byte).
    let out = build(&["--progress", "rawjson"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["warnings"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert_eq!(
        warnings[1]["short"],
        "SlNPTkFyZ3NSZWNvbW1lbmRlZDogSlNPTiBhcmd1bWVudHMgcmVjb21tZW5kZWQgZm9yIENNRCB0byBwcmV2ZW50IHVuaW50ZW5kZWQgYmVoYXZpb3IgcmVsYXRlZCB0byBPUyBzaWduYWxzIChsaW5lIDYp"
    );
    assert!(
        !stderr.contains("warnings found"),
        "no text summary in rawjson"
    );

    // `# check=skip=` silences rules; `error=true` fails the build before it runs.
    b.write(
        "Dockerfile",
        &format!("# check=skip=StageNameCasing,JSONArgsRecommended\n{dockerfile}"),
    );
    let out = build(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );
    b.write(
        "Dockerfile",
        &format!("# check=skip=StageNameCasing;error=true\n{dockerfile}"),
    );
    let out = build(&["-t", "kiln-test/semantics-checks:2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(" - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 7)")
            && stderr.contains("lint violation found for rules: JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(!stderr.contains("COPY f /f"), "nothing ran: {stderr}");
}

#[test]
fn a_scratch_stage_works_in_the_root_directory() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY f rel\n");
    b.write("f", "x");
    b.build(&["-t", "kiln-test/semantics-scratch-workdir:1"]);
    let config = b.raw_config("docker.io/kiln-test/semantics-scratch-workdir:1");
    assert_eq!(
        config["config"]["WorkingDir"], "/",
        "as BuildKit's empty image"
    );
    let root = b.unpack("docker.io/kiln-test/semantics-scratch-workdir:1");
    assert_eq!(std::fs::read_to_string(root.join("rel")).unwrap(), "x");
}

#[test]
fn a_stage_built_on_another_sees_its_args() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest AS base\nARG GREETING=hi\nFROM base\nRUN echo \"$GREETING\" > /g\n",
            env.registry()
        ),
    );
    b.build(&[
        "--build-arg",
        "GREETING=hello",
        "-t",
        "kiln-test/semantics-args:1",
    ]);
    let root = b.unpack("docker.io/kiln-test/semantics-args:1");
    assert_eq!(std::fs::read_to_string(root.join("g")).unwrap(), "hello\n");
    let config = b.raw_config("docker.io/kiln-test/semantics-args:1");
    let last = config["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["created_by"],
        "RUN |1 GREETING=hello /bin/sh -c echo \"$GREETING\" > /g # buildkit"
    );
    assert!(
        !config["config"]["Env"].to_string().contains("GREETING"),
        "ARGs stay out of the image config"
    );
}
