//! `kiln build --progress plain|rawjson|quiet|tty` end to end: a real RUN in the test
//! registry's busybox, and what each display prints on stderr.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use support::{kiln_bin, TestEnv};

struct Project {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
}

impl Project {
    fn new(dockerfile: &str) -> Project {
        let p = Project {
            root: tempfile::tempdir().expect("state dir"),
            ctx: tempfile::tempdir().expect("context dir"),
        };
        std::fs::write(p.ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
        p
    }

    fn kiln_command(&self, progress: &str) -> Command {
        let mut c = Command::new(kiln_bin());
        c.arg("--root")
            .arg(self.root.path())
            .args(["build", "--progress", progress])
            .arg(self.ctx.path())
            .env("NO_COLOR", "1")
            .env_remove("BUILDKIT_PROGRESS");
        c
    }

    fn build(&self, progress: &str) -> Output {
        self.kiln_command(progress).output().expect("run kiln")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A RUN that prints 300 numbered lines (some on stderr) and fails.
fn failing_dockerfile(env: &TestEnv) -> String {
    format!(
        "FROM {}/library/busybox:latest\n\
         RUN i=1; while [ $i -le 300 ]; do echo \"out line $i\"; echo \"err line $i\" >&2; i=$((i+1)); done; exit 3\n",
        env.registry()
    )
}

#[test]
fn plain_shows_the_whole_log_of_a_failing_run() {
    let env = TestEnv::load();
    let p = Project::new(&failing_dockerfile(&env));
    let o = p.build("plain");
    let err = text(&o.stderr);
    assert!(!o.status.success(), "the build must fail: {err}");
    // The RUN vertex's number, from its `#N ... RUN ...` header.
    let run_header = err
        .lines()
        .find(|l| l.starts_with('#') && l.contains("RUN i=1"))
        .unwrap_or_else(|| panic!("no RUN vertex header in:\n{err}"));
    let n = run_header
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    for i in 1..=300 {
        for stream in ["out", "err"] {
            let wanted = format!(" {stream} line {i}");
            assert!(
                err.lines()
                    .any(|l| l.starts_with(&format!("{n} ")) && l.ends_with(&wanted)),
                "missing `{wanted}` under {n} in:\n{err}"
            );
        }
    }
    let error_line = err
        .lines()
        .find(|l| l.starts_with(&format!("{n} ERROR: ")))
        .unwrap_or_else(|| panic!("no {n} ERROR line in:\n{err}"));
    assert!(error_line.contains("exit code: 3"), "{error_line}");
    // The header already names the vertex; the error line does not repeat it.
    assert!(!error_line.contains("RUN i=1"), "{error_line}");
    // The FROM vertex finished before the RUN.
    assert!(
        err.lines()
            .any(|l| l.starts_with('#') && l.contains(" DONE ")),
        "{err}"
    );
}

#[test]
fn plain_rebuild_reports_cached_vertices() {
    let env = TestEnv::load();
    let p = Project::new(&format!(
        "FROM {}/library/busybox:latest\nRUN echo built > /built\n",
        env.registry()
    ));
    let first = p.build("plain");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first_err = text(&first.stderr);
    assert!(first_err.contains("RUN echo built"), "{first_err}");
    let second = p.build("plain");
    let err = text(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with('#') && l.ends_with(" CACHED")),
        "{err}"
    );
}

#[test]
fn rawjson_prints_one_solve_status_per_line() {
    let env = TestEnv::load();
    let p = Project::new(&failing_dockerfile(&env));
    let o = p.build("rawjson");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    let mut logged = Vec::new();
    let mut errored = false;
    let mut json_lines = 0;
    for line in err.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line}: {e}"));
        json_lines += 1;
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            assert!(
                vx["digest"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sha256:")),
                "{line}"
            );
            if vx["error"]
                .as_str()
                .is_some_and(|e| e.contains("exit code: 3"))
            {
                errored = true;
                assert!(vx["completed"].is_string(), "{line}");
            }
        }
        for l in v["logs"].as_array().into_iter().flatten() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("log data is not base64 in {line}: {e}"));
            logged.extend_from_slice(&data);
            assert!(matches!(l["stream"].as_u64(), Some(1 | 2)), "{line}");
        }
    }
    assert!(json_lines > 3, "{err}");
    assert!(errored, "no errored vertex in:\n{err}");
    let logged = text(&logged);
    assert!(logged.contains("out line 300\n"), "{logged}");
    assert!(logged.contains("err line 300\n"), "{logged}");
}

#[test]
fn quiet_prints_no_progress_but_still_the_error() {
    let env = TestEnv::load();
    let p = Project::new(&failing_dockerfile(&env));
    let o = p.build("quiet");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(!err.lines().any(|l| l.starts_with("#1 ")), "{err}");
    assert!(!err.contains("[+] Building"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
}

#[test]
fn tty_without_a_terminal_falls_back_to_plain() {
    let env = TestEnv::load();
    let p = Project::new(&format!(
        "FROM {}/library/busybox:latest\nRUN true\n",
        env.registry()
    ));
    let o = p.build("tty");
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.lines().any(|l| l.starts_with("#1 ")), "{err}");
    assert!(!err.contains("[+] Building"), "{err}");
}

/// Runs `kiln build --progress auto` under `script`, so stderr is a real terminal.
#[test]
fn auto_on_a_terminal_draws_the_tty_frame() {
    let env = TestEnv::load();
    let p = Project::new(&format!(
        "FROM {}/library/busybox:latest\nRUN echo from-the-terminal-run\n",
        env.registry()
    ));
    let cmd = format!(
        "{} --root {} build --progress auto {}",
        shell_quote(&kiln_bin()),
        shell_quote(p.root.path()),
        shell_quote(p.ctx.path())
    );
    let typescript = p.root.path().join("typescript");
    let o = Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&typescript)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        .env("TERM", "xterm")
        .env_remove("BUILDKIT_PROGRESS")
        .output()
        .expect("run script(1) from util-linux");
    let screen = text(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(screen.contains("[+] Building"), "{screen}");
    assert!(screen.contains("FINISHED"), "{screen}");
    assert!(
        screen.contains("=> [") && screen.contains("RUN echo from-the-terminal-run"),
        "{screen}"
    );
    // The plain format is not used on a terminal.
    assert!(!screen.lines().any(|l| l.starts_with("#1 ")), "{screen}");

    // A dumb terminal cannot redraw: plain output there.
    let o = Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&typescript)
        .env("TERM", "dumb")
        .env_remove("BUILDKIT_PROGRESS")
        .output()
        .expect("run script(1) from util-linux");
    let screen = text(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(!screen.contains("[+] Building"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("#1 ")), "{screen}");
}

fn shell_quote(p: &Path) -> String {
    let s: PathBuf = p.to_path_buf();
    format!("'{}'", s.display().to_string().replace('\'', "'\\''"))
}
