//! End-to-end tests of `kiln dockerfile parse`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("kiln output")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/buildkit-parser")
}

#[test]
fn dump_format_equals_buildkit_result_for_every_case() {
    let mut checked = 0;
    for entry in std::fs::read_dir(corpus().join("testfiles")).expect("corpus") {
        let dir = entry.expect("entry").path();
        let file = dir.join("Dockerfile");
        let out = kiln(
            &[
                "dockerfile",
                "parse",
                "--format",
                "dump",
                file.to_str().expect("utf8"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read_to_string(dir.join("result")).expect("result");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{}",
            dir.display()
        );
        checked += 1;
    }
    assert!(checked >= 33);
}

#[test]
fn json_from_stdin_has_instructions_flags_heredocs_and_lines() {
    let src = "# syntax=docker/dockerfile:1\nFROM busybox AS base\nRun --mount=type=cache,target=/c <<EOF\necho hi\nEOF\nCMD [\"sh\"]\n";
    let out = kiln(&["dockerfile", "parse", "-"], Some(src));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(json["directives"]["syntax"]["value"], "docker/dockerfile:1");
    let run = &json["children"][1];
    assert_eq!(run["instruction"], "run");
    assert_eq!(run["keyword"], "Run");
    assert_eq!(run["flags"][0], "--mount=type=cache,target=/c");
    assert_eq!(run["heredocs"][0]["name"], "EOF");
    assert_eq!(run["heredocs"][0]["content"], "echo hi\n");
    assert_eq!(run["span"]["start_line"], 3);
    assert_eq!(run["span"]["end_line"], 5);
    assert_eq!(json["children"][2]["json"], true);
}

#[test]
fn parse_error_names_location_shows_line_and_hint_and_fails() {
    let out = kiln(&["dockerfile", "parse", "-"], Some("FROM a\nENV PATH\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:2:1"), "{err}");
    assert!(err.contains("ENV must have two arguments"), "{err}");
    assert!(err.contains("ENV PATH"), "{err}");
    assert!(err.contains("NAME=value"), "{err}");
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let out = kiln(&["dockerfile", "parse", "/nonexistent/Dockerfile"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/Dockerfile"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_closed_stdout_ends_kiln_quietly_not_with_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    // A big document so kiln is still writing when the reader goes away.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    let mut text = String::from("FROM scratch\n");
    for i in 0..20_000 {
        text.push_str(&format!("LABEL k{i}=v{i}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["dockerfile", "parse"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
