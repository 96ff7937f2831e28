//! End-to-end tests of `kiln build --check` and `--call outline|targets` (no image is built).

use std::path::Path;
use std::process::{Command, Output};

fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln")
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn check_prints_buildx_style_warnings_and_exits_zero() {
    let d = context(&[("Dockerfile", "FROM alpine AS Build\nCMD echo hi\n")]);
    let o = kiln(d.path(), &["build", "--check", "."]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        out.starts_with("Check complete, 2 warnings have been found!\n"),
        "{out}"
    );
    assert!(out.contains("WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\nStage name 'Build' should be lowercase\n"), "{out}");
    assert!(out.contains("   2 | >>> CMD echo hi\n"), "{out}");
}

#[test]
fn check_error_true_fails_and_call_check_is_an_alias() {
    let d = context(&[
        (
            "Dockerfile",
            "# check=error=true\nFROM alpine\nCOPY secret.env /\n",
        ),
        (".dockerignore", "*.env\n"),
    ]);
    let o = kiln(d.path(), &["build", "--call", "check", "."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("CopyIgnoredFile"),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stderr).contains("lint violation found for rules: CopyIgnoredFile"));
    // Clean file: no warnings, success.
    let d = context(&[(
        "Dockerfile",
        "# check=error=true\nFROM alpine\nCMD [\"true\"]\n",
    )]);
    let o = kiln(d.path(), &["build", "--check", "."]);
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "Check complete, no warnings found.\n");
}

#[test]
fn check_json_format() {
    let d = context(&[("Dockerfile", "FROM alpine\nMAINTAINER me\n")]);
    let o = kiln(d.path(), &["build", "--call", "check,format=json", "."]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"][0]["ruleName"], "MaintainerDeprecated");
    assert_eq!(v["warnings"][0]["location"]["line"], 2);
}

#[test]
fn bad_flag_is_an_error_with_location() {
    let d = context(&[(
        "Dockerfile",
        "FROM alpine\nRUN --mout=type=cache,target=/x true\n",
    )]);
    let o = kiln(d.path(), &["build", "--check", "-f", "Dockerfile", "."]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("Dockerfile:2:5: unknown flag: --mout (did you mean mount?)"),
        "{err}"
    );
    assert!(err.contains("RUN --mout=type=cache"), "{err}");
}

const MULTI: &str = "\
# GO_VERSION the Go version
ARG GO_VERSION=1.22
# build compiles the binary
FROM golang:${GO_VERSION} AS build
ARG LDFLAGS=-s
RUN --mount=type=secret,id=token,required --mount=type=ssh make
FROM scratch AS release
COPY --from=build /out /
";

#[test]
fn outline_and_targets() {
    let d = context(&[("Dockerfile", MULTI)]);
    let o = kiln(
        d.path(),
        &[
            "build",
            "--call",
            "outline",
            "--build-arg",
            "LDFLAGS=-w",
            ".",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "TARGET: release\n\nBUILD ARG    VALUE   DESCRIPTION\nGO_VERSION   1.22    the Go version\nLDFLAGS      -w\n\nSECRET   REQUIRED\ntoken    true\n\nSSH       REQUIRED\ndefault\n\n"
    );
    let o = kiln(d.path(), &["build", "--call", "targets", "."]);
    assert_eq!(text(&o.stdout), "TARGET              DESCRIPTION\nbuild               compiles the binary\nrelease (default)\n");
    let o = kiln(
        d.path(),
        &[
            "build", "--call", "outline", "--target", "build", "--format", "json", ".",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "build");
    assert_eq!(v["description"], "compiles the binary");
}

#[test]
fn every_real_world_dockerfile_passes_check_without_crash() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/real-world");
    let empty = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(&corpus).unwrap() {
        let p = e.unwrap().path();
        let o = kiln(
            empty.path(),
            &["build", "--check", "-f", p.to_str().unwrap(), "."],
        );
        // Exit 0, or 1 only for a `# check=error=true` file with findings; never a crash.
        let code = o.status.code();
        assert!(
            code == Some(0) || code == Some(1),
            "{}: {:?}\n{}",
            p.display(),
            code,
            text(&o.stderr)
        );
        assert!(
            text(&o.stdout).starts_with("Check complete"),
            "{}: {}",
            p.display(),
            text(&o.stderr)
        );
        assert!(!text(&o.stderr).contains("panicked"), "{}", p.display());
        n += 1;
    }
    assert!(n >= 60);
}
