//! Golden tests of the build checks: for every rule, `tests/checks/<Rule>.fire.Dockerfile` must
//! produce exactly `<Rule>.fire.expected` (`<line> <Rule> <message>` per warning) and
//! `<Rule>.clean.Dockerfile` must produce no warning at all. A `<case>.dockerignore` beside a case
//! is the context's ignore file.

use kiln_frontend::lint::{check, render, rules, CheckOptions, CheckReport};
use kiln_frontend::stages::ResolveOptions;
use kiln_oci::Platform;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/checks")
}

fn run_case(path: &Path) -> CheckReport {
    let src = std::fs::read_to_string(path).unwrap();
    let ast =
        kiln_frontend::parse(&src).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.render()));
    let ignore_path = path.with_extension("dockerignore");
    let matcher = std::fs::read_to_string(&ignore_path)
        .ok()
        .map(|t| kiln_solver::pattern::parse_dockerignore(&t).expect("dockerignore"));
    let is_ignored = |p: &str| matcher.as_ref().is_some_and(|m| m.excludes(p));
    let opts = CheckOptions {
        resolve: ResolveOptions {
            target_platform: Platform::parse("linux/amd64").unwrap(),
            build_platform: Platform::parse("linux/amd64").unwrap(),
            ..ResolveOptions::default()
        },
        ignored: Some(&is_ignored),
    };
    check(&ast, &opts).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.render()))
}

fn lines(r: &CheckReport) -> String {
    r.warnings
        .iter()
        .map(|w| format!("{} {} {}\n", w.location.line, w.rule_name, w.detail))
        .collect()
}

#[test]
fn every_rule_fires_and_stays_quiet() {
    let mut failures = Vec::new();
    for rule in rules::ALL {
        let fire = dir().join(format!("{}.fire.Dockerfile", rule.name));
        let expected = std::fs::read_to_string(dir().join(format!("{}.fire.expected", rule.name)))
            .unwrap_or_else(|e| panic!("{}: {e}", rule.name));
        assert!(
            expected.contains(rule.name),
            "{}: expected file must show the rule firing",
            rule.name
        );
        let got = lines(&run_case(&fire));
        if got != expected {
            failures.push(format!(
                "{} fire:\n--- expected\n{expected}--- got\n{got}",
                rule.name
            ));
        }
        let clean = run_case(&dir().join(format!("{}.clean.Dockerfile", rule.name)));
        if !clean.warnings.is_empty() {
            failures.push(format!(
                "{} clean: unexpected\n{}",
                rule.name,
                lines(&clean)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_directive_skips_and_errors() {
    let src = "# check=skip=StageNameCasing;error=true\nFROM alpine AS Build\nMAINTAINER me\n";
    let ast = kiln_frontend::parse(src).unwrap();
    let r = check(
        &ast,
        &CheckOptions {
            resolve: ResolveOptions::default(),
            ignored: None,
        },
    )
    .unwrap();
    assert_eq!(
        lines(&r),
        "3 MaintainerDeprecated Maintainer instruction is deprecated in favor of using label\n"
    );
    assert!(r.failed);
    assert_eq!(
        r.failure_message().unwrap(),
        "lint violation found for rules: MaintainerDeprecated"
    );

    let ast =
        kiln_frontend::parse("# check=skip=all\nFROM alpine AS Build\nMAINTAINER me\n").unwrap();
    let r = check(
        &ast,
        &CheckOptions {
            resolve: ResolveOptions::default(),
            ignored: None,
        },
    )
    .unwrap();
    assert!(r.warnings.is_empty() && !r.failed);

    // Per-instruction skip comment and the BUILDKIT_DOCKERFILE_CHECK build arg.
    let src = "FROM alpine\n# check=skip=MaintainerDeprecated\nMAINTAINER me\nMAINTAINER you\n";
    let ast = kiln_frontend::parse(src).unwrap();
    let r = check(
        &ast,
        &CheckOptions {
            resolve: ResolveOptions::default(),
            ignored: None,
        },
    )
    .unwrap();
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].location.line, 4);
    let mut resolve = ResolveOptions::default();
    resolve
        .build_args
        .insert("BUILDKIT_DOCKERFILE_CHECK".into(), "error=true".into());
    let r = check(
        &ast,
        &CheckOptions {
            resolve,
            ignored: None,
        },
    )
    .unwrap();
    assert!(r.failed);
}

#[test]
fn buildx_style_text() {
    let src = "FROM alpine\nCMD echo \"Hello, world!\"\n";
    let ast = kiln_frontend::parse(src).unwrap();
    let r = check(
        &ast,
        &CheckOptions {
            resolve: ResolveOptions::default(),
            ignored: None,
        },
    )
    .unwrap();
    assert_eq!(
        render::report_text(&r, src),
        "Check complete, 1 warning has been found!\n\n\
         WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
         JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
         Dockerfile:2\n\
         --------------------\n   1 |     FROM alpine\n   2 | >>> CMD echo \"Hello, world!\"\n   3 |     \n\
         --------------------\n"
    );
}

#[test]
fn real_world_dockerfiles_check_without_crash() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/real-world");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let ast = kiln_frontend::parse_named(&name, &std::fs::read(&p).unwrap()).unwrap();
        let r = check(
            &ast,
            &CheckOptions {
                resolve: ResolveOptions::default(),
                ignored: None,
            },
        );
        let r = r.unwrap_or_else(|e| panic!("{name}: {}", e.render()));
        let _ = render::report_text(&r, ast.source());
        n += 1;
    }
    assert!(n >= 60);
}
