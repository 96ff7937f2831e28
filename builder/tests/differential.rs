//! The differential suite: every case of `testdata/differential/cases/` built
//! with kiln and summarized by `testdata/differential/difftool.py`, the same
//! tool that summarized docker 20.10 BuildKit's result of the case into its
//! `expected.txt` (`testdata/differential/regen.sh`). A case's `meta` file
//! holds `key: value` lines:
//! - `expect: error`: BuildKit fails the build (its message is in
//!   `expected-error.txt`); kiln must fail too.
//! - `expected-fail: REASON`: a known kiln difference being fixed elsewhere;
//!   the case must still differ, so the marker is removed once it is fixed.
//! - `build-arg: K=V` (repeatable), `target: STAGE`: build flags.
//! - `notes: ...`: why the reference looks the way it does.
//!
//! `KILN_DIFF_CASES=a,b` runs only the named cases.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Build, TestEnv};

/// The suite's directory in the source tree.
fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/differential")
}

/// A case's `meta` values for one key, in file order.
fn meta(case: &Path, key: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(case.join("meta")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// Runs `difftool.py ARGS`; its stdout, or the failure as an error.
fn difftool(args: &[&Path]) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(suite_dir().join("difftool.py"))
        .args(args)
        .output()
        .map_err(|e| format!("run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "difftool.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `diff -u` of the reference and kiln's summary.
fn unified_diff(expected: &Path, actual_text: &str, work: &Path) -> String {
    let actual = work.join("kiln.txt");
    std::fs::write(&actual, actual_text).expect("write kiln summary");
    let out = Command::new("diff")
        .args([
            "-u",
            "--label",
            "buildkit (expected.txt)",
            "--label",
            "kiln",
        ])
        .arg(expected)
        .arg(&actual)
        .output()
        .expect("run diff");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How one case came out.
enum Outcome {
    Same,
    /// What differs, readable.
    Differs(String),
}

/// Builds one case with kiln and compares it with its reference.
fn run_case(case: &Path) -> Outcome {
    let b = Build::new();
    let ctx = b.ctx();
    if let Err(e) = difftool(&[Path::new("prepare"), case, &ctx]) {
        return Outcome::Differs(e);
    }
    let archive = b.path("image.tar");
    let output = format!("type=docker,dest={}", archive.display());
    let dockerfile = case.join("Dockerfile");
    let mut args: Vec<String> = vec![
        "build".into(),
        "-f".into(),
        dockerfile.display().to_string(),
        "-o".into(),
        output,
    ];
    for kv in meta(case, "build-arg") {
        args.extend(["--build-arg".into(), kv]);
    }
    for t in meta(case, "target") {
        args.extend(["--target".into(), t]);
    }
    args.push(ctx.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = b.kiln(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    if meta(case, "expect").iter().any(|v| v == "error") {
        if out.status.success() {
            let buildkit =
                std::fs::read_to_string(case.join("expected-error.txt")).unwrap_or_default();
            return Outcome::Differs(format!("kiln built it, BuildKit fails with:\n{buildkit}"));
        }
        return Outcome::Same;
    }
    if !out.status.success() {
        return Outcome::Differs(format!("kiln build failed:\n{}", tail(&stderr)));
    }
    let summary = match difftool(&[Path::new("summarize"), &archive]) {
        Ok(s) => s,
        Err(e) => return Outcome::Differs(e),
    };
    let expected = case.join("expected.txt");
    let want = std::fs::read_to_string(&expected).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run testdata/differential/regen.sh)",
            expected.display()
        )
    });
    if want == summary {
        Outcome::Same
    } else {
        Outcome::Differs(unified_diff(&expected, &summary, b.work.path()))
    }
}

/// The index digest every case pins must be the test env's busybox.
fn check_pinned_base(cases: &[PathBuf]) {
    let env = TestEnv::load();
    let layout = Path::new(env.get("KILN_TEST_OCI_LAYOUT"));
    let index = support::read_json(&layout.join("index.json"));
    let latest = index["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .expect("busybox:latest in the env's layout");
    let digest = latest["digest"].as_str().expect("digest");
    for case in cases {
        let df = std::fs::read_to_string(case.join("Dockerfile")).expect("case Dockerfile");
        for line in df.lines().filter(|l| l.contains("library/busybox")) {
            assert!(
                line.contains(digest),
                "{}: `{line}` does not pin the env's busybox {digest}; re-pin the cases and rerun regen.sh",
                case.display()
            );
        }
    }
}

#[test]
fn kiln_matches_buildkit_on_every_case() {
    let only: Option<Vec<String>> = std::env::var("KILN_DIFF_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mut cases: Vec<PathBuf> = std::fs::read_dir(suite_dir().join("cases"))
        .expect("testdata/differential/cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            only.as_ref().is_none_or(|o| o.contains(&name))
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no differential cases selected");
    check_pinned_base(&cases);

    // Two workers: the builds are small and wait on I/O as much as on the CPU.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let outcome = run_case(case);
                results.lock().unwrap().push((case.clone(), outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut failures = Vec::new();
    let mut known = 0;
    for (case, outcome) in results {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected_fail = meta(&case, "expected-fail");
        match (outcome, expected_fail.first()) {
            (Outcome::Same, None) => eprintln!("{name}: same as BuildKit"),
            (Outcome::Differs(d), Some(reason)) => {
                known += 1;
                eprintln!("{name}: differs as expected ({reason})\n{d}");
            }
            (Outcome::Same, Some(reason)) => failures.push(format!(
                "{name}: now passes: remove expected-fail ({reason}) from its meta"
            )),
            (Outcome::Differs(d), None) => {
                failures.push(format!("{name}: differs from BuildKit\n{d}"))
            }
        }
    }
    eprintln!(
        "{} cases: {} same, {known} known differences, {} failures",
        cases.len(),
        cases.len() - known - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
