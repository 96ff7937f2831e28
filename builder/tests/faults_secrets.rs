//! The secrets sweep: after builds using `--secret` (finished, failed, and with every
//! progress mode), the secret's value is nowhere in the state dir, the outputs, the
//! progress logs or the metadata file. Killed builds are swept in state_safety.rs.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{files_holding, kiln_bin, run_bounded, Build, Tally, TestEnv};

#[test]
fn a_secret_leaves_no_trace_in_state_outputs_logs_or_metadata() {
    // The four builds are a case each, and so is the sweep after them.
    let mut t = Tally::new("secrets", 5);
    let env = TestEnv::load();
    let b = Build::new();
    let value = format!("faults-secret-{}-value", std::process::id());
    let secret = b.path("secret");
    std::fs::write(&secret, &value).unwrap();
    let secret_arg = format!("id=s,src={}", secret.display());
    let image = format!("{}/library/busybox:latest", env.registry());
    let ctx = b.ctx();
    let ctx = ctx.to_str().unwrap();
    let mut logs = Vec::new();
    for (i, (progress, step)) in [
        ("plain", "cat /run/secrets/s | wc -c > /len"),
        ("rawjson", "cat /run/secrets/s | wc -c > /len2"),
        // A failing step that read the secret: its error names the step, not the value.
        ("plain", "cat /run/secrets/s > /dev/null && exit 3"),
        ("rawjson", "test \"$(cat /run/secrets/s)\" = nope"),
    ]
    .into_iter()
    .enumerate()
    {
        t.case(&format!("build {i}"), || {
            b.write(
                "Dockerfile",
                &format!("FROM {image}\nRUN --mount=type=secret,id=s {step}\n"),
            );
            let meta = b.path(&format!("meta-{i}.json"));
            let dest = b.path(&format!("out-{i}"));
            let out = run_bounded(
                Command::new(kiln_bin())
                    .arg("--root")
                    .arg(b.root.path())
                    .args(["build", "--progress", progress, "--secret", &secret_arg])
                    .arg("--metadata-file")
                    .arg(&meta)
                    .arg("--output")
                    .arg(format!("type=local,dest={}", dest.display()))
                    .args(["--tag", &format!("faults-secret:{i}"), ctx]),
                Duration::from_secs(120),
            );
            // Kept first: the sweep reads them even when this case fails.
            logs.push(out.stdout.clone());
            logs.push(out.stderr.clone());
            assert_eq!(
                out.status.success(),
                i < 2,
                "build {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if i < 2 {
                // The step did read it (its length is in the output).
                let len = std::fs::read_to_string(dest.join(if i == 0 { "len" } else { "len2" }))
                    .unwrap();
                assert_eq!(len.trim(), value.len().to_string());
                assert!(meta.is_file(), "build {i} wrote its metadata file");
            }
        });
    }
    t.case("sweep", || {
        for (i, log) in logs.iter().enumerate() {
            assert!(
                !log.windows(value.len()).any(|w| w == value.as_bytes()),
                "log {i} holds the secret"
            );
        }
        assert!(!logs[5].is_empty(), "the failed build said why");
        let none = Path::new("/nonexistent");
        assert_eq!(
            files_holding(b.root.path(), value.as_bytes(), none),
            Vec::<std::path::PathBuf>::new()
        );
        // Outputs and metadata files live in the work dir, beside the secret's source.
        assert_eq!(
            files_holding(b.work.path(), value.as_bytes(), none),
            vec![secret]
        );
    });
    t.finish();
}

/// Many steps that read a secret and exit at once, under an OCI runtime: each has a
/// poststart hook dropping the host's view of its secrets, and crun used to lose that
/// hook's exit to the step's when the step ended first on a loaded machine, failing the
/// step with "timeout expired for `/usr/bin/nsenter`" after 10 s (the faults_secrets
/// flake of the long run; 3 of 3 such builds failed at load 9 before the fix).
#[test]
fn short_secret_steps_under_an_oci_runtime_all_pass() {
    let steps = 24;
    let mut t = Tally::new("secrets", 1);
    let env = TestEnv::load();
    let b = Build::new();
    let secret = b.path("secret");
    std::fs::write(&secret, "short").unwrap();
    let mut df = format!("FROM {}/library/busybox:latest\n", env.registry());
    for i in 0..steps {
        df.push_str(&format!(
            "RUN --mount=type=secret,id=s cat /run/secrets/s > /s{i}\n"
        ));
    }
    b.write("Dockerfile", &df);
    t.case(&format!("{steps} short secret steps"), || {
        let out = run_bounded(
            Command::new(kiln_bin())
                .arg("--root")
                .arg(b.root.path())
                .args(["build", "--executor", "oci", "--progress", "plain"])
                .arg("--secret")
                .arg(format!("id=s,src={}", secret.display()))
                .arg(b.ctx()),
            Duration::from_secs(600),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    t.finish();
}
