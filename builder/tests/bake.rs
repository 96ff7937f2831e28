//! `kiln bake` end to end: `--print` of one bake file per feature compared with the JSON
//! buildx prints for it (written from buildx's documented semantics, under
//! `testdata/bake/*/expected.json`), errors with their positions, and real builds of
//! several targets pushed to the test registry and checked with skopeo and the validator.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{kiln_bin, skopeo, unique, validate_remote, Build, TestEnv};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/bake")
        .join(name)
}

/// `kiln bake ARGS` in `dir`, with only the given variables set among those the fixtures use.
fn bake_in(dir: &Path, root: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(kiln_bin());
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    for v in [
        "WEB_TAG",
        "TAG",
        "PUSH",
        "JOBS",
        "PLATFORMS",
        "CHANNEL",
        "REGISTRY",
        "REPO",
        "IMAGE",
    ] {
        cmd.env_remove(v);
    }
    cmd.arg("bake")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("BUILDKIT_PROGRESS", "plain")
        .envs(env.iter().copied())
        .output()
        .expect("run kiln bake")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `--print` in the fixture `name` equals its `expected` file (as JSON values: key order
/// of objects aside, which buildx sorts as serde does here).
fn assert_print(name: &str, args: &[&str], env: &[(&str, &str)], expected: &str) {
    let dir = fixture(name);
    let mut all = vec!["--print"];
    all.extend_from_slice(args);
    let out = bake_in(&dir, None, &all, env);
    assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: --print is not JSON ({e}): {}", text(&out.stdout)));
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(expected)).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "{name}: --print differs from {expected}:\n{}",
        text(&out.stdout)
    );
    // Arrays keep their order; and the text is the two-space indented form buildx prints.
    assert!(text(&out.stdout).starts_with("{\n  \"group\": {"), "{name}");
}

#[test]
fn print_matrix_of_three_by_two_named_by_template() {
    assert_print("matrix", &[], &[], "expected.json");
}

#[test]
fn print_inherits_chain_in_order() {
    assert_print("inherits", &["app"], &[], "expected.json");
}

#[test]
fn print_variables_defaults_and_from_the_environment() {
    assert_print("variables", &[], &[], "expected.json");
    assert_print(
        "variables",
        &[],
        &[
            ("TAG", "v2"),
            ("PUSH", "true"),
            ("JOBS", "8"),
            ("PLATFORMS", "linux/amd64,linux/arm64"),
            ("CHANNEL", "beta"),
            ("REGISTRY", "reg.local"),
        ],
        "expected-env.json",
    );
}

#[test]
fn variables_validation_and_type_errors_name_the_position() {
    let dir = fixture("variables");
    let out = bake_in(&dir, None, &["--print"], &[("CHANNEL", "nightly")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("docker-bake.hcl:32:5") && err.contains("CHANNEL must be stable or beta."),
        "{err}"
    );
    let out = bake_in(&dir, None, &["--print"], &[("PUSH", "maybe")]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("docker-bake.hcl:15:1") && err.contains("\"maybe\" is not a boolean"),
        "{err}"
    );
}

#[test]
fn print_functions_user_defined_and_standard() {
    assert_print("function", &[], &[], "expected.json");
}

#[test]
fn print_target_context_adds_the_linked_target() {
    assert_print("contexts", &["app"], &[], "expected.json");
}

#[test]
fn print_compose_file_with_two_services() {
    assert_print("compose", &["web", "worker"], &[], "expected.json");
    // Without names: the services with a build section are the default group.
    assert_print("compose", &[], &[], "expected.json");
}

#[test]
fn print_set_with_patterns_and_append() {
    assert_print(
        "set",
        &[
            "--set",
            "*.platform=linux/arm64",
            "--set",
            "a*.args.MODE=fast",
            "--set",
            "web.tags+=registry.example/web:latest",
            "--set",
            "docs.output=type=local,dest=out",
        ],
        &[],
        "expected.json",
    );
}

#[test]
fn print_default_files_merged_override_last() {
    assert_print("files", &[], &[], "expected.json");
}

#[test]
fn print_attributes_of_other_targets() {
    assert_print("references", &["bar", "app"], &[], "expected.json");
}

#[test]
fn print_json_bake_file_with_interpolation() {
    assert_print("json", &[], &[], "expected.json");
}

#[test]
fn list_targets_and_variables() {
    let out = bake_in(&fixture("variables"), None, &["--list=variables"], &[]);
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let channel = list
        .lines()
        .find(|l| l.starts_with("CHANNEL "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        channel.contains("stable") && channel.ends_with("release channel"),
        "{list}"
    );
    let out = bake_in(
        &fixture("inherits"),
        None,
        &["--list=targets,format=json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Targets starting with `_` are private and not listed.
    assert_eq!(v, serde_json::json!([{ "name": "app" }]));
}

/// A bake file in a fresh directory; returns the directory.
fn bake_file(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), text).unwrap();
    dir
}

fn fails_with(dir: &Path, args: &[&str], needle: &str) {
    let out = bake_in(dir, None, args, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should fail: {args:?}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn errors_name_file_line_and_column_or_the_definition() {
    let d = bake_file("docker-bake.hcl", "target \"a\" {\n  tags = [\"x\"\n}\n");
    fails_with(d.path(), &["--print", "a"], "docker-bake.hcl:3:");
    let d = bake_file("docker-bake.hcl", "target \"a\" {\n  tags = [NOPE]\n}\n");
    fails_with(
        d.path(),
        &["--print", "a"],
        "docker-bake.hcl:2:3: target \"a\" attribute \"tags\"",
    );
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  inherits = [\"b\"]\n}\ntarget \"b\" {\n  inherits = [\"a\"]\n}\n",
    );
    fails_with(d.path(), &["--print", "a"], "inherits cycle: a -> b -> a");
    let d = bake_file(
        "docker-bake.hcl",
        "group \"g\" {\n  targets = [\"h\"]\n}\ngroup \"h\" {\n  targets = [\"g\"]\n}\ntarget \"t\" {}\n",
    );
    fails_with(d.path(), &["--print", "g"], "group cycle: g -> h -> g");
    let d = bake_file(
        "docker-bake.hcl",
        "target \"a\" {\n  contexts = { x = \"target:b\" }\n}\ntarget \"b\" {\n  contexts = { y = \"target:a\" }\n}\n",
    );
    fails_with(d.path(), &["--print", "a"], "infinite loop");
    let d = bake_file(
        "docker-bake.hcl",
        "target \"b\" {\n  platforms = [\"linux/amd64\", \"linux/arm64\"]\n}\ntarget \"a\" {\n  contexts = { b = \"target:b\" }\n  platforms = [\"linux/amd64\", \"linux/s390x\"]\n}\n",
    );
    fails_with(d.path(), &["--print", "a"], "are not a subset of");
    let d = bake_file("docker-bake.hcl", "target \"a\" {}\n");
    fails_with(
        d.path(),
        &["--print", "zzz"],
        "failed to find target or group \"zzz\"",
    );
    fails_with(
        d.path(),
        &["--print", "--set", "a.bogus=1"],
        "unknown key \"bogus\"",
    );
    let d = bake_file("docker-bake.hcl", "target \"a\" {\n  name = \"b\"\n}\n");
    fails_with(d.path(), &["--print"], "name requires matrix");
    let d = bake_file("compose.yaml", "services:\n  web:\n    build: [\n");
    fails_with(d.path(), &["--print"], "compose.yaml:");
    let empty = tempfile::tempdir().unwrap();
    fails_with(
        empty.path(),
        &["--print"],
        "couldn't find a bake definition",
    );
}

/// A bake file of three targets: `base` (only used by `app` through `target:base`),
/// `app` and `tool`, pushed to a fresh repository of the test registry (`app` by its
/// output, `tool` by `--push`).
fn release_bake(reg: &str, repo: &str) -> String {
    format!(
        r#"
variable "REPO" {{
  default = "{reg}/{repo}"
}}
group "default" {{
  targets = ["app", "tool"]
}}
target "base" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN echo from-base > /base.txt\n"
}}
target "app" {{
  contexts = {{ base = "target:base" }}
  dockerfile-inline = "FROM base\nARG MSG\nRUN cat /base.txt > /app.txt && echo $MSG >> /app.txt\n"
  args = {{ MSG = "hello" }}
  tags = ["${{REPO}}/app:1"]
  output = ["type=registry"]
}}
target "tool" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN echo tool > /tool.txt\n"
  tags = ["${{REPO}}/tool:1"]
}}
"#
    )
}

#[test]
fn builds_targets_in_dependency_order_and_pushes_them() {
    let env = TestEnv::load();
    let reg = env.registry();
    let repo = unique("h5-bake");
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &release_bake(reg, &repo));
    let meta = dir.path().join("meta.json");
    let out = bake_in(
        dir.path(),
        Some(b.root.path()),
        &[
            "--metadata-file",
            meta.to_str().unwrap(),
            "--insecure-registry",
            reg,
            "--push",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "kiln bake failed:\n{}",
        text(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    for t in ["app", "tool"] {
        let reference = format!("{reg}/{repo}/{t}:1");
        // skopeo, an independent client, finds the digest the metadata names.
        let inspected: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]))
        .unwrap();
        assert_eq!(
            meta[t]["containerimage.digest"], inspected["Digest"],
            "{t}: metadata {meta}"
        );
        validate_remote(&reference);
    }
    // app was built FROM base's result: its RUN read /base.txt (else the build fails), and
    // it has base's layer and its own on top of busybox's.
    let app: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reg}/{repo}/app:1"),
    ]))
    .unwrap();
    let tool: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reg}/{repo}/tool:1"),
    ]))
    .unwrap();
    assert_eq!(app["Layers"].as_array().unwrap().len(), 3, "{app}");
    assert_eq!(tool["Layers"].as_array().unwrap().len(), 2, "{tool}");
    assert_eq!(app["Layers"][0], tool["Layers"][0], "both on busybox");
    // base, only linked, is not pushed anywhere under the repository.
    assert!(meta.get("app").is_some() && meta.get("tool").is_some());
}

#[test]
fn set_overrides_the_output_of_matching_targets() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    let dir = bake_file(
        "docker-bake.hcl",
        &format!(
            "target \"default\" {{\n  dockerfile-inline = \"FROM {reg}/library/busybox:latest\\nRUN echo set > /set.txt\\n\"\n  output = [\"type=registry\"]\n  tags = [\"{reg}/never/pushed:1\"]\n}}\n"
        ),
    );
    let dest = dir.path().join("out");
    let set = format!("*.output=type=local,dest={}", dest.display());
    let out = bake_in(dir.path(), Some(b.root.path()), &["--set", &set], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dest.join("set.txt")).unwrap(),
        "set\n"
    );
}

#[test]
fn a_failing_target_stops_the_others_and_is_named() {
    let env = TestEnv::load();
    let reg = env.registry();
    let bake = format!(
        r#"
group "default" {{
  targets = ["bad", "slow"]
}}
target "bad" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN exit 3\n"
}}
target "slow" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN sleep 60\n"
}}
"#
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let start = Instant::now();
    let out = bake_in(dir.path(), Some(b.root.path()), &[], &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ERROR: target bad failed"), "{err}");
    assert!(err.contains("not built: slow"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(45),
        "slow was not stopped: {:?}",
        start.elapsed()
    );
}

#[test]
fn keep_going_builds_what_it_can() {
    let env = TestEnv::load();
    let reg = env.registry();
    let bake = format!(
        r#"
group "default" {{
  targets = ["bad", "good"]
}}
target "bad" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN sleep 1 && exit 3\n"
}}
target "good" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN sleep 3 && echo good > /good.txt\n"
  output = ["type=local,dest=out"]
}}
"#
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let out = bake_in(dir.path(), Some(b.root.path()), &["--keep-going"], &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ERROR: target bad failed"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/good.txt")).unwrap(),
        "good\n",
        "{err}"
    );
}

#[test]
fn sigterm_stops_the_running_builds_and_exits_143() {
    let env = TestEnv::load();
    let reg = env.registry();
    // A sleep length no other test uses, to find the step's process.
    let secs = 7919;
    let bake = format!(
        "target \"default\" {{\n  dockerfile-inline = \"FROM {reg}/library/busybox:latest\\nRUN sleep {secs}\\n\"\n}}\n"
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(["bake", "--progress", "plain"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        let out = Command::new("pgrep")
            .args(["-f", &format!("sleep {secs}")])
            .output()
            .unwrap();
        out.status.success()
    };
    let start = Instant::now();
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the RUN step never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kiln bake did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(143));
    assert!(!running(), "the build's RUN step outlived kiln bake");
}

#[test]
fn call_check_runs_the_checks_of_every_target_and_names_the_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    // `clean` passes; `sloppy` breaks a check that its Dockerfile makes an error.
    std::fs::write(
        dir.path().join("clean.Dockerfile"),
        "FROM scratch AS base\nCOPY a /a\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sloppy.Dockerfile"),
        "# check=error=true\nfrom scratch as base\nCOPY a /a\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("a"), "a").unwrap();
    std::fs::write(
        dir.path().join("docker-bake.hcl"),
        "group \"default\" {\n  targets = [\"clean\", \"sloppy\"]\n}\ntarget \"clean\" {\n  dockerfile = \"clean.Dockerfile\"\n}\ntarget \"sloppy\" {\n  dockerfile = \"sloppy.Dockerfile\"\n}\n",
    )
    .unwrap();
    let b = Build::new();
    let out = bake_in(dir.path(), Some(b.root.path()), &["--call", "check"], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("ERROR: target sloppy failed"), "{stderr}");
    assert!(stdout.contains("ConsistentInstructionCasing"), "{stdout}");
    // Only the clean one: success.
    let out = bake_in(dir.path(), Some(b.root.path()), &["--check", "clean"], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn files_given_with_f_merge_in_order_and_stdin_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.json"),
        r#"{"target": {"app": {"tags": ["a:1"], "args": {"X": "json"}}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ci.hcl"),
        "target \"app\" {\n  tags = [\"a:ci\"]\n}\n",
    )
    .unwrap();
    let out = bake_in(
        dir.path(),
        None,
        &["-f", "base.json", "-f", "ci.hcl", "--print", "app"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["target"]["app"]["tags"], serde_json::json!(["a:ci"]));
    assert_eq!(v["target"]["app"]["args"]["X"], "json");
    // The default files are not read when -f is given.
    std::fs::write(dir.path().join("docker-bake.hcl"), "target \"other\" {}\n").unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["bake", "-f", "-", "--list=targets,format=json"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"target \"piped\" {}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([{ "name": "piped" }]));
}

#[test]
fn cache_to_and_cache_from_reach_the_build() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    let dir = bake_file(
        "docker-bake.hcl",
        &format!(
            "target \"default\" {{\n  dockerfile-inline = \"FROM {reg}/library/busybox:latest\\nRUN echo cached > /c.txt\\n\"\n  cache-to = [\"type=local,dest=cache\"]\n}}\n"
        ),
    );
    let out = bake_in(dir.path(), Some(b.root.path()), &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );
    // The cache is an OCI layout; a fresh state dir importing it runs no step.
    let cache = dir.path().join("cache");
    assert!(cache.join("index.json").is_file());
    let fresh = Build::new();
    let meta = dir.path().join("meta.json");
    let out = bake_in(
        dir.path(),
        Some(fresh.root.path()),
        &[
            "--set",
            "*.cache-from=type=local,src=cache",
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(
        support::executed(&meta["default"]),
        0,
        "the RUN step came from the imported cache: {meta}"
    );
}

#[test]
fn print_escapes_templates_so_the_output_reads_back_the_same() {
    // `$${` is a literal `${` in HCL; --print writes it escaped again, as buildx does.
    let d = bake_file(
        "docker-bake.hcl",
        "target \"default\" {\n  args = { A = \"$${HOME}\" }\n  labels = { L = \"x$${y}\" }\n  dockerfile-inline = \"FROM scratch\\nENV X=$${Y}\\n\"\n}\n",
    );
    let out = bake_in(d.path(), None, &["--print"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["target"]["default"];
    assert_eq!(t["args"]["A"], "$${HOME}");
    assert_eq!(t["labels"]["L"], "x$${y}");
    assert_eq!(t["dockerfile-inline"], "FROM scratch\nENV X=$${Y}\n");
    // Read back as a JSON bake file, the printed definition means the same.
    std::fs::write(
        d.path().join("printed.json"),
        serde_json::to_string(&v["target"])
            .map(|t| format!("{{\"target\": {t}}}"))
            .unwrap(),
    )
    .unwrap();
    let again = bake_in(d.path(), None, &["-f", "printed.json", "--print"], &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), text(&out.stdout));
}

#[test]
fn attest_reaches_the_build() {
    let env = TestEnv::load();
    let reg = env.registry();
    let b = Build::new();
    let dir = bake_file(
        "docker-bake.hcl",
        &format!(
            "target \"default\" {{\n  dockerfile-inline = \"FROM {reg}/library/busybox:latest\\nRUN echo hi > /hi.txt\\n\"\n  attest = [\"type=provenance,mode=max\"]\n  output = [\"type=local,dest=out\"]\n}}\n"
        ),
    );
    let out = bake_in(dir.path(), Some(b.root.path()), &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("attest"),
        "no warning about attest: {}",
        text(&out.stderr)
    );
    let provenance = dir.path().join("out/provenance.json");
    let statement: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&provenance).unwrap()).unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
}

/// Two targets whose Dockerfile shares a stage, built with `--no-cache` so that nothing
/// comes from the cache: each target's RUN counts, in a cache mount, how often the shared
/// stage's RUN ran. In one build graph it ran once (two separate builds would run it twice).
#[test]
fn a_stage_two_targets_share_runs_once() {
    let env = TestEnv::load();
    let reg = env.registry();
    let id = unique("h6-bakegraph-count");
    let dockerfile = format!(
        "FROM {reg}/library/busybox:latest AS common\\nRUN --mount=type=cache,target=/c,id={id} echo ran >> /c/count\\nFROM common AS one\\nRUN --mount=type=cache,target=/c,id={id} wc -l < /c/count > /runs-one\\nFROM common AS two\\nRUN --mount=type=cache,target=/c,id={id} wc -l < /c/count > /runs-two\\n"
    );
    let bake = format!(
        r#"
group "default" {{
  targets = ["one", "two"]
}}
target "_common" {{
  dockerfile-inline = "{dockerfile}"
}}
target "one" {{
  inherits = ["_common"]
  target = "one"
  output = ["type=local,dest=out-one"]
}}
target "two" {{
  inherits = ["_common"]
  target = "two"
  output = ["type=local,dest=out-two"]
}}
"#
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let meta = dir.path().join("meta.json");
    let out = bake_in(
        dir.path(),
        Some(b.root.path()),
        &["--no-cache", "--metadata-file", meta.to_str().unwrap()],
        &[],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    for t in ["one", "two"] {
        let runs = std::fs::read_to_string(dir.path().join(format!("out-{t}/runs-{t}"))).unwrap();
        assert_eq!(
            runs.trim(),
            "1",
            "{t}: the shared RUN ran {runs} times\n{err}"
        );
    }
    // The display names the targets of each step as buildx prefixes them; the shared step
    // is one step of both.
    assert!(err.contains("[one one 1/1] RUN"), "{err}");
    assert!(err.contains("[two two 1/1] RUN"), "{err}");
    assert!(err.contains("[one,two common 2/2] RUN"), "{err}");
    // Each target's export is a step of its own.
    assert!(err.contains("[one] exporting to client directory"), "{err}");
    assert!(err.contains("[two] exporting to client directory"), "{err}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    for t in ["one", "two"] {
        // FROM, the shared RUN and the target's own RUN (the context is not needed).
        assert_eq!(support::executed(&meta[t]), 3, "{t}: {meta}");
    }
}

/// A `target:` context feeds the dependent from the one graph: no OCI layout is written,
/// the linked target (not asked for) exports nothing and is not in the metadata.
#[test]
fn target_context_feeds_the_dependent_without_a_layout() {
    let env = TestEnv::load();
    let reg = env.registry();
    let bake = format!(
        r#"
target "base" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nENV FROM_BASE=yes\nRUN echo from-base > /base.txt\n"
}}
target "default" {{
  contexts = {{ base = "target:base", files = "target:base" }}
  dockerfile-inline = "FROM base\nCOPY --from=files /base.txt /copied.txt\nRUN echo $FROM_BASE > /env.txt\n"
  output = ["type=local,dest=out"]
}}
"#
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let meta = dir.path().join("meta.json");
    let out = bake_in(
        dir.path(),
        Some(b.root.path()),
        &["--metadata-file", meta.to_str().unwrap()],
        &[],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let read = |f: &str| std::fs::read_to_string(dir.path().join("out").join(f)).unwrap();
    assert_eq!(read("base.txt"), "from-base\n");
    assert_eq!(read("copied.txt"), "from-base\n");
    // FROM base starts from base's config: its ENV reached the RUN.
    assert_eq!(read("env.txt"), "yes\n");
    assert!(
        !err.contains("oci-layout") && !err.contains("exporting to oci"),
        "{err}"
    );
    assert!(
        !err.contains("[base"),
        "base alone is one target: no prefix\n{err}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert!(
        meta.get("base").is_none() && meta.get("default").is_some(),
        "{meta}"
    );
}

/// With `--keep-going`, a failed step fails every target whose graph holds it (the linked
/// target and the one using it through `target:`), and the others are built and exported.
#[test]
fn keep_going_fails_the_targets_needing_the_failed_step_and_builds_the_rest() {
    let env = TestEnv::load();
    let reg = env.registry();
    let bake = format!(
        r#"
group "default" {{
  targets = ["uses-bad", "good"]
}}
target "bad" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN exit 3\n"
}}
target "uses-bad" {{
  contexts = {{ base = "target:bad" }}
  dockerfile-inline = "FROM base\nRUN echo never > /never.txt\n"
  output = ["type=local,dest=out-uses-bad"]
}}
target "good" {{
  dockerfile-inline = "FROM {reg}/library/busybox:latest\nRUN sleep 2 && echo good > /good.txt\n"
  output = ["type=local,dest=out-good"]
}}
"#
    );
    let b = Build::new();
    let dir = bake_file("docker-bake.hcl", &bake);
    let meta = dir.path().join("meta.json");
    let out = bake_in(
        dir.path(),
        Some(b.root.path()),
        &["--keep-going", "--metadata-file", meta.to_str().unwrap()],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ERROR: target bad, uses-bad failed"), "{err}");
    // The failed step is pointed at in the Dockerfile of the target it belongs to.
    assert!(err.contains("RUN exit 3"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out-good/good.txt")).unwrap(),
        "good\n"
    );
    assert!(!dir.path().join("out-uses-bad").exists());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert!(
        meta.get("good").is_some() && meta.get("uses-bad").is_none(),
        "{meta}"
    );
}
