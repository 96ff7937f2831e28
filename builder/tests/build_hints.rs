//! The hints a failed build step gets: chosen by the kind of error the solver reports,
//! naming the flag or command that fixes it, given once, under the step's Dockerfile line.

mod support;

use support::{busybox, Build, TestEnv};

/// Builds `dockerfile` with `extra` flags; the failure's stderr.
fn fails(dockerfile: &str, extra: &[&str]) -> String {
    let b = Build::new();
    b.write("Dockerfile", dockerfile);
    b.write("present.txt", "here\n");
    b.build_fails(extra)
}

/// Asserts `err` points at `line` and carries `help` once, as the hint (miette may
/// wrap it over lines).
fn assert_hint(err: &str, line: usize, help: &str) {
    assert!(err.contains(&format!("Dockerfile:{line}")), "{err}");
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(&format!("help: {help}")), "{err}");
    assert_eq!(
        flat.matches(help).count(),
        1,
        "the hint is given once: {err}"
    );
}

#[test]
fn each_kind_of_step_failure_gets_the_flag_that_fixes_it() {
    let env = TestEnv::load();
    let from = format!("FROM {}\n", busybox(&env));

    let err = fails(
        &format!("{from}RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n"),
        &[],
    );
    assert!(err.contains("secret tok not found"), "{err}");
    assert_hint(
        &err,
        2,
        "pass it with --secret id=tok,src=<file> or --secret id=tok,env=<VAR>",
    );

    let err = fails(
        &format!("{from}RUN --mount=type=ssh,id=agent,required=true true\n"),
        &[],
    );
    assert!(err.contains("ssh agent agent not found"), "{err}");
    assert_hint(&err, 2, "pass it with --ssh agent=<socket or key>");

    let err = fails(&format!("{from}RUN --network=host true\n"), &[]);
    assert!(
        err.contains("RUN --network=host needs the network.host entitlement"),
        "{err}"
    );
    assert_hint(&err, 2, "pass --allow network.host");

    let err = fails(&format!("{from}RUN --security=insecure true\n"), &[]);
    assert_hint(&err, 2, "pass --allow security.insecure");

    let err = fails(&format!("{from}COPY missing.txt /\n"), &[]);
    assert!(err.contains("missing.txt"), "{err}");
    assert_hint(
        &err,
        2,
        "check the path against the build context and .dockerignore",
    );

    let err = fails(
        &format!("{from}RUN --mount=type=bind,source=nowhere,target=/m true\n"),
        &[],
    );
    assert!(err.contains("source \"nowhere\" not found"), "{err}");
    assert_hint(
        &err,
        2,
        "check the path against the build context and .dockerignore",
    );

    let err = fails(&format!("{from}COPY present.txt /\nRUN exit 3\n"), &[]);
    assert!(err.contains("exit code: 3"), "{err}");
    assert_hint(
        &err,
        3,
        "the command failed inside the build container; `--progress plain` shows its whole output",
    );
}
