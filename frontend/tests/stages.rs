//! ARG/ENV scoping, stage references and target pruning.

use kiln_frontend::instructions::mount::MountType;
use kiln_frontend::instructions::{CommandLine, Instruction};
use kiln_frontend::stages::{resolve, Base, Build, ResolveOptions};
use kiln_frontend::{parse, SourceError};
use kiln_oci::Platform;

fn opts(args: &[(&str, &str)]) -> ResolveOptions {
    ResolveOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target_platform: Platform::parse("linux/arm/v6").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..ResolveOptions::default()
    }
}

fn build(src: &str, o: &ResolveOptions) -> Result<Build, SourceError> {
    resolve(&parse(src).expect("parse"), o)
}

fn ok(src: &str, o: &ResolveOptions) -> Build {
    build(src, o).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn err(src: &str, o: &ResolveOptions) -> SourceError {
    build(src, o).expect_err("expected an error")
}

/// The instructions of stage `i` of the build.
fn ins(b: &Build, i: usize) -> Vec<&Instruction> {
    b.stages[i]
        .instructions
        .iter()
        .map(|r| &r.instruction)
        .collect()
}

fn workdirs(b: &Build, i: usize) -> Vec<String> {
    ins(b, i)
        .into_iter()
        .filter_map(|x| match x {
            Instruction::Workdir(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn global_args_only_in_from_unless_redeclared() {
    let src = "ARG VERSION=3.19\nARG DIR=/opt\nFROM alpine:${VERSION}\nWORKDIR /a$DIR\nARG DIR\nWORKDIR /b$DIR\n";
    let b = ok(src, &opts(&[]));
    assert_eq!(b.stages[0].from.image, "alpine:3.19");
    assert_eq!(workdirs(&b, 0), vec!["/a", "/b/opt"]);
    let names: Vec<&str> = b.undefined_vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["DIR"], "DIR used before its redeclaration");
}

#[test]
fn build_arg_overrides_default_and_skips_default_expansion() {
    let src = "ARG V=1\nFROM alpine:$V\nARG X=${MISSING:?required}\nWORKDIR /$X\n";
    let b = ok(src, &opts(&[("V", "2"), ("X", "given")]));
    assert_eq!(b.stages[0].from.image, "alpine:2");
    assert_eq!(workdirs(&b, 0), vec!["/given"]);
    // Without the override the default is expanded and fails.
    let e = err(src, &opts(&[]));
    assert!(e.message.contains("MISSING: required"), "{}", e.message);
    assert_eq!(e.location.line, 3);
}

#[test]
fn env_wins_over_arg() {
    let src = "FROM alpine\nENV A=env\nARG A=arg\nWORKDIR /$A\nARG B=arg\nENV B=env\nWORKDIR /$B\n";
    let b = ok(src, &opts(&[("A", "override")]));
    assert_eq!(workdirs(&b, 0), vec!["/env", "/env"]);
}

#[test]
fn env_values_use_the_scope_before_the_instruction() {
    let src = "FROM alpine\nENV A=1\nENV A=2 B=$A\nWORKDIR /$B\n";
    assert_eq!(workdirs(&ok(src, &opts(&[])), 0), vec!["/1"]);
}

#[test]
fn automatic_platform_args() {
    let src = "FROM --platform=$BUILDPLATFORM golang AS build\nWORKDIR /x$TARGETARCH\nARG TARGETARCH\nARG TARGETVARIANT\nWORKDIR /$TARGETARCH-$TARGETVARIANT\n";
    let b = ok(src, &opts(&[]));
    assert_eq!(b.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(workdirs(&b, 0), vec!["/x", "/arm-v6"]);
}

#[test]
fn run_env_has_args_env_and_marked_proxy_args() {
    let src = "FROM alpine\nARG A=1\nARG no_proxy\nENV E=2\nRUN env\n";
    let b = ok(
        src,
        &opts(&[("HTTP_PROXY", "http://p:3128"), ("no_proxy", "localhost")]),
    );
    let run = &b.stages[0].instructions[3];
    assert!(run.env.contains(&("A".into(), "1".into())));
    assert!(run.env.contains(&("E".into(), "2".into())));
    assert!(
        run.env.contains(&("no_proxy".into(), "localhost".into())),
        "declared proxy arg is a normal arg"
    );
    assert_eq!(
        run.proxy_env,
        vec![("HTTP_PROXY".to_string(), "http://p:3128".to_string())]
    );
    assert!(b.unused_build_args.is_empty());
}

#[test]
fn unused_build_args_are_reported() {
    let b = ok("FROM alpine\n", &opts(&[("NOPE", "1")]));
    assert_eq!(b.unused_build_args, vec!["NOPE"]);
}

const MULTI: &str = "\
FROM alpine AS base
RUN echo base
FROM base AS Build
RUN --mount=type=cache,target=/c,from=base echo
FROM busybox AS unrelated
RUN echo x
FROM scratch AS final
COPY --from=BUILD /out /out
COPY --from=0 /etc /etc
";

#[test]
fn target_pruning_and_references() {
    let b = ok(MULTI, &opts(&[]));
    assert_eq!(b.target, 3);
    assert_eq!(b.needed, vec![0, 1, 3]);
    assert_eq!(b.stages[1].base, Base::Stage(0));
    assert_eq!(b.stages[3].base, Base::Scratch);
    assert!(!b.stages[2].expanded);
    let o = ResolveOptions {
        target: Some("build".into()),
        ..opts(&[])
    };
    let b = ok(MULTI, &o);
    assert_eq!((b.target, b.needed.clone()), (1, vec![0, 1]));
    let o = ResolveOptions {
        target: Some("unrelated".into()),
        ..opts(&[])
    };
    assert_eq!(ok(MULTI, &o).needed, vec![2]);
}

#[test]
fn unknown_target_suggests() {
    let o = ResolveOptions {
        target: Some("buid".into()),
        ..opts(&[])
    };
    let e = err(MULTI, &o);
    assert!(
        e.message
            .contains("target stage \"buid\" could not be found (did you mean Build?)"),
        "{}",
        e.message
    );
}

#[test]
fn copy_from_variable_is_an_error_with_hint() {
    let e = err(
        "ARG X=a\nFROM alpine\nARG X\nCOPY --from=$X /a /b\n",
        &opts(&[]),
    );
    assert!(
        e.message
            .starts_with("variable expansion is not supported for --from"),
        "{}",
        e.message
    );
    assert_eq!((e.location.line, e.location.column), (4, 13));
    assert!(e.hint.is_some());
}

#[test]
fn circular_stage_dependency() {
    let e = err(
        "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n",
        &opts(&[]),
    );
    assert!(e.message.contains("circular dependency"), "{}", e.message);
}

#[test]
fn mounts_expand_values_but_not_from() {
    let src = "FROM alpine\nARG CACHE=/root/.cache\nRUN --mount=type=cache,target=$CACHE,id=c-$CACHE --mount=type=secret,id=tok,env=TOKEN make\n";
    let b = ok(src, &opts(&[]));
    let Instruction::Run(r) = &b.stages[0].instructions[1].instruction else {
        panic!()
    };
    assert_eq!(r.mounts[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(r.mounts[0].id.as_deref(), Some("c-/root/.cache"));
    assert_eq!(r.mounts[1].kind, MountType::Secret);
    assert_eq!(r.mounts[1].env.as_deref(), Some("TOKEN"));
    assert_eq!(r.command, CommandLine::Shell("make".into()));
}

#[test]
fn flag_errors_point_at_the_flag() {
    let e = err(
        "FROM alpine\nRUN --mout=type=cache,target=/x true\n",
        &opts(&[]),
    );
    assert_eq!(e.message, "unknown flag: --mout (did you mean mount?)");
    assert_eq!((e.location.line, e.location.column), (2, 5));
    let e = err(
        "FROM alpine\nRUN --mount=type=cache,target=/x,sharng=locked true\n",
        &opts(&[]),
    );
    assert!(
        e.message.contains("unexpected key 'sharng'")
            && e.message.contains("did you mean sharing?")
    );
    let e = err("FROM alpine\nCOPY --chmod=u+q a b\n", &opts(&[]));
    assert!(e.message.contains("invalid chmod"), "{}", e.message);
    let e = err(
        "FROM alpine\nHEALTHCHECK --retries=-1 CMD true\n",
        &opts(&[]),
    );
    assert_eq!(e.message, "--retries cannot be negative (-1)");
    let e = err(
        "FROM alpine\nHEALTHCHECK --interval=5 CMD true\n",
        &opts(&[]),
    );
    assert!(e.message.contains("missing unit"), "{}", e.message);
    let e = err("FROM alpine\nRUN --network=hots true\n", &opts(&[]));
    assert!(e.message.contains("did you mean host?"), "{}", e.message);
    let e = err("FROM alpine\nRUNN true\n", &opts(&[]));
    assert_eq!(e.hint.as_deref(), Some("did you mean RUN?"));
}

#[test]
fn instruction_before_from_and_no_stage() {
    let e = err("RUN true\nFROM alpine\n", &opts(&[]));
    assert!(e.message.contains("before the first FROM"), "{}", e.message);
    let e = err("ARG A=1\n", &opts(&[]));
    assert!(e.message.contains("no build stage"), "{}", e.message);
}

#[test]
fn copy_and_add_flags() {
    let src = "FROM alpine\nARG M=0755\nCOPY --chown=1000:1000 --chmod=$M --link --parents --exclude=*.md a b /dst/\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --keep-git-dir --unpack=false https://x/y.tar /y\n";
    let b = ok(src, &opts(&[]));
    let Instruction::Copy(c) = &b.stages[0].instructions[1].instruction else {
        panic!()
    };
    assert_eq!(c.sources, vec!["a", "b"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.chmod, Some(kiln_solver::llb::ChmodOpt::Octal(0o755)));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec!["*.md"]);
    let Instruction::Add(a) = &b.stages[0].instructions[2].instruction else {
        panic!()
    };
    assert_eq!((a.keep_git_dir, a.unpack), (Some(true), Some(false)));
    let e = err(
        "FROM alpine\nADD --checksum=md5:abc http://x /y\n",
        &opts(&[]),
    );
    assert!(e.message.contains("invalid checksum"), "{}", e.message);
    let e = err("FROM alpine\nCOPY --keep-git-dir a b\n", &opts(&[]));
    assert!(
        e.message.contains("unknown flag: --keep-git-dir"),
        "{}",
        e.message
    );
}

#[test]
fn outline_and_targets() {
    let src = "\
# VERSION the alpine version
ARG VERSION=3.19
ARG UNUSED=1
# base builds the base
FROM alpine:$VERSION AS base
# GOFLAGS flags for go
ARG GOFLAGS=-v
RUN --mount=type=secret,id=npmrc,required --mount=type=ssh echo
FROM base AS release
";
    let b = ok(src, &opts(&[]));
    let o = b.outline();
    assert_eq!(o.name, "release");
    let args: Vec<(&str, Option<&str>, Option<&str>)> = o
        .args
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.value.as_deref(),
                a.description.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        args,
        vec![
            ("VERSION", Some("3.19"), Some("the alpine version")),
            ("GOFLAGS", Some("-v"), Some("flags for go"))
        ]
    );
    assert_eq!(o.secrets[0].name, "npmrc");
    assert!(o.secrets[0].required);
    assert_eq!(o.ssh[0].name, "default");
    let t = b.targets();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].description.as_deref(), Some("builds the base"));
    assert!(t[1].default && !t[0].default);
}

#[test]
fn base_image_env_when_known() {
    let mut o = opts(&[]);
    o.base_env
        .insert("golang".into(), vec![("GOPATH".into(), "/go".into())]);
    let b = ok(
        "FROM golang\nWORKDIR $GOPATH/src\nFROM scratch\nWORKDIR /$GOPATH\n",
        &ResolveOptions {
            all_stages: true,
            ..o
        },
    );
    assert_eq!(workdirs(&b, 0), vec!["/go/src"]);
    assert_eq!(workdirs(&b, 1), vec!["/"]);
    assert_eq!(b.undefined_vars.len(), 1, "GOPATH is unknown on scratch");
    assert_eq!(b.undefined_vars[0].node, 3);
}

#[test]
fn expansion_errors_have_location_and_hint() {
    let e = err("FROM alpine\nWORKDIR ${DIR:?needs DIR}\n", &opts(&[]));
    assert_eq!(e.location.line, 2);
    assert!(e.message.contains("DIR: needs DIR"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap_or("").contains("--build-arg"));
    let e = err("FROM alpine\nWORKDIR ${DIR\n", &opts(&[]));
    assert!(e.message.contains("missing '}'"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap_or("").contains("syntax"));
}

#[test]
fn targetstage_is_available_when_declared() {
    let b = ok(
        "FROM alpine AS one\nARG TARGETSTAGE\nWORKDIR /$TARGETSTAGE\n",
        &opts(&[]),
    );
    assert_eq!(workdirs(&b, 0), vec!["/one"]);
}

#[test]
fn from_uses_stage_names_not_indexes() {
    let b = ok("FROM alpine AS a\nFROM 0\nFROM A\n", &opts(&[]));
    assert_eq!(b.stages[1].base, Base::Image("0".into()));
    assert_eq!(b.stages[2].base, Base::Stage(0));
}

#[test]
fn invalid_from_platform_is_an_error() {
    let e = err("FROM --platform=linux/ alpine\n", &opts(&[]));
    assert!(
        e.message.contains("failed to parse platform"),
        "{}",
        e.message
    );
    assert_eq!((e.location.line, e.location.column), (1, 17));
    assert!(e.hint.is_some());
}

/// `ARG A1=${A0}${A0}...` ten copies per line, `depth` lines deep.
fn exponential_args(depth: usize) -> String {
    let mut s = format!("ARG A0={}\n", "a".repeat(64));
    for i in 1..=depth {
        s.push_str(&format!(
            "ARG A{i}={}\n",
            format!("${{A{}}}", i - 1).repeat(10)
        ));
    }
    s
}

#[test]
fn expansion_that_grows_without_bound_fails_at_its_line() {
    let started = std::time::Instant::now();
    // Global ARGs, then the same in a stage.
    let global = format!("{}FROM scratch\n", exponential_args(10));
    let e = err(&global, &opts(&[]));
    assert_eq!(
        (e.location.line, e.location.column),
        (6, 1),
        "{}",
        e.render()
    );
    assert!(e.message.contains("too large"), "{}", e.message);
    let staged = format!("FROM scratch\n{}RUN true\n", exponential_args(10));
    let e = err(&staged, &opts(&[]));
    assert_eq!(e.location.line, 7, "{}", e.render());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn the_expansion_budget_covers_many_large_values() {
    // A failure without printing the (huge) build.
    let fails = |src: &str| match build(src, &opts(&[])) {
        Ok(_) => panic!("expected the budget to run out"),
        Err(e) => e,
    };
    // Each value (640 kB) stays under the word limit; together they pass the budget.
    let mut src = format!("FROM scratch\n{}", exponential_args(4));
    for i in 0..200 {
        src.push_str(&format!("ENV E{i}=$A4\n"));
    }
    let e = fails(&src);
    assert!(e.message.contains("64 MiB"), "{}", e.message);
    assert!(
        e.location.line > 60 && e.location.line < 206,
        "{}",
        e.location
    );
    // So do RUNs, each of which gets a copy of the environment.
    let mut src = format!("FROM scratch\n{}ENV BIG=$A4\n", exponential_args(4));
    src.push_str(&"RUN true\n".repeat(200));
    let e = fails(&src);
    assert!(e.message.contains("64 MiB"), "{}", e.message);
    // A few large values are fine.
    let small = format!(
        "FROM scratch\n{}ENV BIG=$A4\nRUN true\n",
        exponential_args(4)
    );
    assert!(build(&small, &opts(&[])).is_ok());
}

#[test]
fn a_stage_inherits_the_args_of_its_base_stage() {
    let b = ok(
        "FROM scratch AS base\nARG V=1\nARG U\nFROM base AS child\nENV W=$V\nRUN echo $V\nFROM scratch\nRUN echo $V\n",
        &ResolveOptions {
            all_stages: true,
            ..opts(&[("U", "cli")])
        },
    );
    let run_env = |i: usize| {
        b.stages[i]
            .instructions
            .iter()
            .find(|r| matches!(r.instruction, Instruction::Run(_)))
            .map(|r| r.env.to_vec())
            .unwrap()
    };
    let child = run_env(1);
    assert!(child.contains(&("V".into(), "1".into())), "{child:?}");
    assert!(child.contains(&("U".into(), "cli".into())), "{child:?}");
    assert!(child.contains(&("W".into(), "1".into())), "{child:?}");
    assert!(
        !run_env(2).iter().any(|(k, _)| k == "V"),
        "a stage not built on base does not see its ARGs"
    );
    assert!(
        b.undefined_vars.iter().all(|v| v.node != 4),
        "the inherited ARG is declared: {:?}",
        b.undefined_vars
    );
}
