//! Lowering tests: Dockerfiles in, graph shape and config out.

use super::*;
use crate::stages::{resolve, ResolveOptions};
use kiln_solver::llb::{FileAction, MountKind, Vertex};

struct FakeRegistry;

impl ImageResolver for FakeRegistry {
    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
        if reference.contains("missing") {
            return Err("manifest unknown".into());
        }
        let mut config = ImageConfig::scratch(&platform.os, &platform.architecture, None);
        config.config.set_env("PATH", "/usr/bin:/bin");
        config.config.cmd = Some(vec!["sh".to_string()]);
        if reference.contains("onbuild") {
            config.config.on_build = vec![
                "RUN echo trigger $PATH".to_string(),
                "ENV FROM_TRIGGER=1".to_string(),
            ];
        }
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}@sha256:{}", "a".repeat(64)),
            config,
        })
    }
}

fn opts() -> LowerOptions {
    LowerOptions {
        platform: Platform::parse("linux/amd64").unwrap(),
        context: "context".to_string(),
        no_cache: NoCache::None,
        source_date_epoch: Some(0),
        named_contexts: BTreeMap::new(),
        platform_in_descriptions: false,
        sandbox_hostname: None,
        cache_mount_ns: None,
        default_network: kiln_solver::llb::NetworkMode::Default,
    }
}

/// The `created_by` of each history entry, in order.
fn created_by(l: &Lowered) -> Vec<&str> {
    l.config
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect()
}

fn lower_text(text: &str, target: Option<&str>) -> Result<Lowered, SourceError> {
    let ast = crate::parse_named("Dockerfile", text.as_bytes()).expect("parse");
    let build = resolve(
        &ast,
        &ResolveOptions {
            target: target.map(String::from),
            ..Default::default()
        },
    )?;
    lower(&ast, &build, &mut FakeRegistry, &opts())
}

#[test]
fn metadata_instructions_change_the_config_not_the_graph() {
    let l = lower_text(
        "FROM busybox\nENV A=1 B=2\nLABEL x=y\nEXPOSE 80 53/udp\nUSER app\nWORKDIR /srv\nCMD [\"run\"]\nENTRYPOINT [\"/bin/app\"]\nSTOPSIGNAL SIGTERM\nVOLUME /data\nHEALTHCHECK --interval=5s CMD true\n",
        None,
    )
    .unwrap();
    let c = &l.config.config;
    assert_eq!(c.env_var("A"), Some("1"));
    assert_eq!(
        c.env_var("PATH"),
        Some("/usr/bin:/bin"),
        "the base image's env is kept"
    );
    assert_eq!(c.labels["x"], "y");
    assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
    assert_eq!(c.user, "app");
    assert_eq!(c.working_dir, "/srv");
    assert_eq!(c.entrypoint.as_deref(), Some(&["/bin/app".to_string()][..]));
    assert_eq!(
        c.cmd,
        Some(vec!["run".to_string()]),
        "ENTRYPOINT keeps a CMD the stage set itself"
    );
    assert_eq!(c.healthcheck.as_ref().unwrap().interval, 5_000_000_000);
    assert!(
        c.on_build.is_empty(),
        "base ONBUILD triggers are not inherited"
    );
    // FROM + WORKDIR's mkdir: two vertices.
    assert_eq!(l.definition.len(), 2);
    assert_eq!(l.config.history.len(), 10);
    assert!(l.config.history[0].empty_layer);
    assert!(!l.config.history[4].empty_layer, "WORKDIR makes a layer");
    assert_eq!(l.config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
}

#[test]
fn run_gets_shell_env_workdir_user_and_mounts() {
    let l = lower_text(
        "FROM busybox\nARG V=3\nENV A=1\nWORKDIR /w\nUSER 1000\nRUN --mount=type=cache,target=/c,sharing=locked --mount=type=secret,id=tok --mount=type=bind,target=/src echo $V\n",
        None,
    )
    .unwrap();
    let v = l.definition.vertex(l.target.unwrap()).unwrap();
    let Op::Exec(e) = v.op() else {
        panic!("not an exec: {:?}", v.op())
    };
    assert_eq!(e.meta.args, ["/bin/sh", "-c", "echo $V"]);
    assert!(e.meta.env.contains(&"V=3".to_string()) && e.meta.env.contains(&"A=1".to_string()));
    assert!(e.meta.env.iter().any(|x| x.starts_with("PATH=")));
    assert_eq!((e.meta.cwd.as_str(), e.meta.user.as_str()), ("/w", "1000"));
    let kinds: Vec<_> = e
        .mounts
        .iter()
        .map(|m| (m.dest.as_str(), std::mem::discriminant(&m.kind)))
        .collect();
    assert_eq!(kinds.len(), 4);
    assert!(matches!(&e.mounts[1].kind, MountKind::Cache(c) if c.id == "/c"));
    assert!(matches!(&e.mounts[2].kind, MountKind::Secret(s) if s.id == "tok"));
    assert_eq!(e.mounts[2].dest, "/run/secrets/tok");
    assert_eq!(
        e.mounts[3].input,
        Some(1),
        "the bind mount reads the context"
    );
    assert!(
        v.metadata().description.starts_with("[3/3] RUN"),
        "{}",
        v.metadata().description
    );
}

#[test]
fn ssh_mounts_set_ssh_auth_sock_unless_the_env_does() {
    let exec_env = |text: &str| {
        let l = lower_text(text, None).unwrap();
        let v = l.definition.vertex(l.target.unwrap()).unwrap();
        let Op::Exec(e) = v.op() else {
            panic!("not an exec: {:?}", v.op())
        };
        e.meta.env.clone()
    };
    let env = exec_env(
        "FROM busybox\nRUN --mount=type=ssh,id=a --mount=type=ssh,id=b,target=/b ssh-add -l\n",
    );
    assert!(
        env.contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string()),
        "{env:?}"
    );
    let env = exec_env("FROM busybox\nRUN --mount=type=ssh,target=/agent ssh-add -l\n");
    assert!(env.contains(&"SSH_AUTH_SOCK=/agent".to_string()), "{env:?}");
    let env = exec_env("FROM busybox\nENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh ssh-add -l\n");
    assert_eq!(
        env.iter()
            .filter(|e| e.starts_with("SSH_AUTH_SOCK="))
            .count(),
        1
    );
    assert!(env.contains(&"SSH_AUTH_SOCK=/mine".to_string()), "{env:?}");
    let env = exec_env("FROM busybox\nRUN true\n");
    assert!(
        !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")),
        "{env:?}"
    );
}

#[test]
fn copy_from_context_and_stages_and_only_needed_stages() {
    let text = "FROM busybox AS build\nRUN make\nFROM busybox AS unused\nRUN exit 1\nFROM scratch\nCOPY --from=build /out /bin/\nCOPY --chown=1:2 --chmod=0755 a b /dst/\n";
    let l = lower_text(text, None).unwrap();
    let target = l.definition.vertex(l.target.unwrap()).unwrap();
    let Op::File(f) = target.op() else {
        panic!("not a file op")
    };
    assert_eq!(f.actions.len(), 2);
    let FileAction::Copy(c) = &f.actions[0] else {
        panic!()
    };
    assert_eq!((c.src.as_str(), c.dest.as_str()), ("a", "/dst/"));
    assert!(c.owner.is_some() && c.mode.is_some());
    assert!(
        !l.stage_vertices.contains_key(&1),
        "the unused stage is not lowered"
    );
    let all: Vec<String> = l.definition.vertices().map(|(_, v)| v.summary()).collect();
    assert!(!all.iter().any(|d| d.contains("exit 1")), "{all:?}");
}

#[test]
fn copy_link_merges_and_heredoc_makes_files() {
    let l = lower_text(
        "FROM busybox\nCOPY --link a /a\nCOPY <<EOF /etc/greeting\nhello\nEOF\n",
        None,
    )
    .unwrap();
    let v = l.definition.vertex(l.target.unwrap()).unwrap();
    let Op::File(f) = v.op() else { panic!() };
    // The destination's directory first (COPY creates it when missing), then the file.
    let FileAction::Mkdir(d) = &f.actions[0] else {
        panic!("{:?}", f.actions)
    };
    assert_eq!((d.path.as_str(), d.make_parents), ("/etc", true));
    let FileAction::Mkfile(m) = &f.actions[1] else {
        panic!("{:?}", f.actions)
    };
    assert_eq!(
        (m.path.as_str(), m.data.as_slice(), m.mode),
        ("/etc/greeting", &b"hello\n"[..], 0o644)
    );
    let below = l.definition.vertex(v.inputs()[0]).unwrap();
    assert!(
        matches!(below.op(), Op::Merge(_)),
        "COPY --link is a merge over the base"
    );
}

#[test]
fn copy_link_chown_by_name_reads_users_from_the_stage_below() {
    let l = lower_text(
        "FROM busybox\nCOPY --link --chown=app:app a /a\nCOPY --link --chown=1:2 b /b\n",
        None,
    )
    .unwrap();
    let top = l.definition.vertex(l.target.unwrap()).unwrap();
    assert!(matches!(top.op(), Op::Merge(_)));
    let numeric = l.definition.vertex(top.inputs()[1]).unwrap();
    let Op::File(f) = numeric.op() else { panic!() };
    assert_eq!(
        (f.base, f.users),
        (None, None),
        "numeric ids need no lookup"
    );
    assert_eq!(numeric.inputs().len(), 1);
    let merge = l.definition.vertex(top.inputs()[0]).unwrap();
    let below = merge.inputs()[0];
    let named = l.definition.vertex(merge.inputs()[1]).unwrap();
    let Op::File(f) = named.op() else { panic!() };
    assert_eq!(f.base, None, "the linked layer starts empty");
    let users = f.users.expect("names are looked up");
    assert_eq!(named.inputs()[users], below);
}

#[test]
fn equal_work_is_one_vertex_and_errors_have_locations() {
    let l = lower_text("FROM busybox AS a\nRUN make\nFROM busybox AS b\nRUN make\nFROM scratch\nCOPY --from=a / /a\nCOPY --from=b / /b\n", None).unwrap();
    let runs = l
        .definition
        .vertices()
        .filter(|(_, v)| matches!(v.op(), Op::Exec(_)))
        .count();
    assert_eq!(runs, 1);
    let e = lower_text("FROM busybox\nRUN true\nFROM missing:1\n", None).unwrap_err();
    assert_eq!(e.location.line, 3);
    assert!(e.to_string().contains("manifest unknown"), "{e}");
    // Several sources into a path without / are copied in turn (BuildKit).
    assert!(lower_text("FROM busybox\nCOPY a b /notdir\n", None).is_ok());
}

#[test]
fn platforms_lowered_into_one_graph_share_buildplatform_stages() {
    let text = "FROM --platform=$BUILDPLATFORM busybox AS build\nRUN make all\nFROM busybox\nARG TARGETARCH\nCOPY --from=build /out/$TARGETARCH /app\n";
    let ast = crate::parse_named("Dockerfile", text.as_bytes()).expect("parse");
    let build_platform = kiln_oci::Platform::parse("linux/amd64").unwrap();
    let mut def = Definition::new();
    let mut targets = Vec::new();
    for target in ["linux/amd64", "linux/arm64"] {
        let target_platform = kiln_oci::Platform::parse(target).unwrap();
        let build = resolve(
            &ast,
            &ResolveOptions {
                target_platform: target_platform.clone(),
                build_platform: build_platform.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let l = lower_into(
            def,
            &ast,
            &build,
            &mut FakeRegistry,
            &LowerOptions {
                platform: target_platform.clone(),
                platform_in_descriptions: true,
                ..opts()
            },
        )
        .unwrap();
        def = l.definition;
        assert_eq!(l.config.architecture, target_platform.architecture);
        targets.push(l.target.unwrap());
    }
    // FROM busybox for amd64 (the build stage's and the amd64 target's: one
    // vertex), RUN once, FROM busybox for arm64, one COPY per target.
    assert_eq!(def.len(), 5);
    let copies: Vec<&Vertex> = targets.iter().map(|t| def.vertex(*t).unwrap()).collect();
    assert_ne!(copies[0].digest(), copies[1].digest());
    let shared = def
        .vertices()
        .filter(|(_, v)| matches!(v.op(), Op::Exec(_)))
        .collect::<Vec<_>>();
    assert_eq!(shared.len(), 1, "the build stage's RUN is one vertex");
    assert_eq!(
        shared[0].1.platform().map(|p| p.architecture.as_str()),
        Some("amd64")
    );
    assert!(
        copies[1]
            .metadata()
            .description
            .starts_with("[linux/arm64 stage-1"),
        "{}",
        copies[1].metadata().description
    );
    if let Op::File(f) = copies[1].op() {
        let FileAction::Copy(c) = &f.actions[0] else {
            panic!("not a copy")
        };
        assert_eq!(c.src, "/out/arm64");
    } else {
        panic!("not a file op");
    }
}

#[test]
fn base_onbuild_triggers_run_once_in_the_child() {
    let l = lower_text("FROM onbuild-base\nRUN echo mine\n", None).unwrap();
    let execs: Vec<Vec<String>> = l
        .definition
        .vertices()
        .filter_map(|(_, v)| match v.op() {
            Op::Exec(e) => Some(e.meta.args.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(execs.len(), 2, "{execs:?}");
    assert!(
        execs
            .iter()
            .any(|a| a.last().map(String::as_str) == Some("echo trigger $PATH")),
        "the trigger runs (RUN is left to the shell, as in BuildKit): {execs:?}"
    );
    assert_eq!(l.config.config.env_var("FROM_TRIGGER"), Some("1"));
    assert!(
        l.config.config.on_build.is_empty(),
        "triggers are not inherited further"
    );
}

#[test]
fn onbuild_instructions_are_recorded_for_children() {
    let l = lower_text("FROM busybox\nONBUILD RUN echo hi\n", None).unwrap();
    assert_eq!(l.config.config.on_build, ["RUN echo hi"]);
}

#[test]
fn a_heredoc_run_with_a_shebang_executes_the_script_as_a_file() {
    let l = lower_text(
        "FROM busybox\nRUN <<EOF\n#!/usr/bin/awk -f\nBEGIN { print 1 }\nEOF\n",
        None,
    )
    .unwrap();
    let v = l.definition.vertex(l.target.unwrap()).unwrap();
    let Op::Exec(e) = v.op() else { panic!() };
    assert_eq!(e.meta.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    let m = e
        .mounts
        .iter()
        .find(|m| m.dest == "/dev/pipes/")
        .expect("the script's mount");
    assert!(m.readonly);
    let script = l.definition.vertex(v.inputs()[m.input.unwrap()]).unwrap();
    let Op::File(f) = script.op() else { panic!() };
    let FileAction::Mkfile(mk) = &f.actions[0] else {
        panic!()
    };
    assert_eq!((mk.path.as_str(), mk.mode), ("/EOF", 0o755));
    assert_eq!(mk.data, b"#!/usr/bin/awk -f\nBEGIN { print 1 }\n");
}

#[test]
fn a_parent_stages_onbuild_triggers_run_in_the_child_and_stop_there() {
    let l = lower_text(
        "FROM busybox AS parent\nARG V=from-arg\nONBUILD RUN echo trigger $V\nONBUILD ENV T=$V\nONBUILD LABEL l=x\nFROM parent AS child\nRUN echo mine\nFROM child\n",
        None,
    )
    .unwrap();
    let execs: Vec<Vec<String>> = l
        .definition
        .vertices()
        .filter_map(|(_, v)| match v.op() {
            Op::Exec(e) => Some(e.meta.args.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        execs
            .iter()
            .filter(|a| a.last().map(String::as_str) == Some("echo trigger $V"))
            .count(),
        1,
        "the trigger runs once, in the child only: {execs:?}"
    );
    let c = &l.config.config;
    assert_eq!(
        c.env_var("T"),
        Some("from-arg"),
        "the parent's ARG is in scope"
    );
    assert_eq!(c.labels["l"], "x");
    assert!(c.on_build.is_empty(), "triggers are not carried on");
    let created_by = created_by(&l);
    assert!(
        created_by.contains(&"ENV T=from-arg") && created_by.contains(&"LABEL l=x"),
        "history names the trigger, not the FROM line: {created_by:?}"
    );
}

#[test]
fn a_parent_stages_config_keeps_its_own_triggers() {
    let l = lower_text(
        "FROM busybox AS parent\nONBUILD ENV T=1\nFROM parent AS child\nONBUILD ENV U=2\n",
        Some("parent"),
    )
    .unwrap();
    assert_eq!(l.config.config.on_build, ["ENV T=1"]);
    let l = lower_text(
        "FROM busybox AS parent\nONBUILD ENV T=1\nFROM parent AS child\nONBUILD ENV U=2\n",
        None,
    )
    .unwrap();
    assert_eq!(l.config.config.on_build, ["ENV U=2"]);
    assert_eq!(l.config.config.env_var("T"), Some("1"));
}

#[test]
fn entrypoint_resets_only_an_inherited_cmd() {
    let own = lower_text("FROM busybox\nCMD [\"x\"]\nENTRYPOINT [\"/e\"]\n", None).unwrap();
    assert_eq!(own.config.config.cmd, Some(vec!["x".to_string()]));
    let inherited = lower_text("FROM busybox\nENTRYPOINT [\"/e\"]\n", None).unwrap();
    assert_eq!(
        inherited.config.config.cmd, None,
        "the image's CMD is reset"
    );
    let from_stage = lower_text(
        "FROM busybox AS p\nCMD [\"x\"]\nFROM p\nENTRYPOINT [\"/e\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(
        from_stage.config.config.cmd, None,
        "a CMD of the parent stage is inherited, so reset"
    );
    let after = lower_text("FROM busybox\nENTRYPOINT [\"/e\"]\nCMD [\"y\"]\n", None).unwrap();
    assert_eq!(after.config.config.cmd, Some(vec!["y".to_string()]));
}

#[test]
fn workdir_is_recorded_as_buildkit_does() {
    let l = lower_text(
        "FROM busybox\nENV D=sub\nWORKDIR /tmp/\nWORKDIR $D/\nWORKDIR /\n",
        None,
    )
    .unwrap();
    assert_eq!(l.config.config.working_dir, "/");
    let created_by = created_by(&l);
    assert_eq!(
        created_by[1..],
        ["WORKDIR /tmp/", "WORKDIR /tmp/sub", "WORKDIR /"]
    );
    assert!(
        l.config.history[3].empty_layer,
        "WORKDIR / makes no directory"
    );
    let l = lower_text("FROM busybox\nWORKDIR /tmp/\n", None).unwrap();
    assert_eq!(l.config.config.working_dir, "/tmp/", "kept as written");
}

#[test]
fn history_is_worded_as_buildkit_words_it() {
    let l = lower_text(
        "ARG G=global\nFROM busybox AS b\nFROM busybox\nARG G\nARG A=1\nENV E=$A X=\"a b\"\n\
         LABEL l=$E\nEXPOSE 80 53/udp 90-91\nVOLUME /v /w\nSHELL [\"/bin/sh\", \"-e\", \"-c\"]\n\
         CMD echo \"$HOME\"\nENTRYPOINT [\"/e\"]\nONBUILD RUN x\nSTOPSIGNAL 9\nUSER app\n\
         HEALTHCHECK --interval=90s --retries=2 CMD [\"/bin/true\"]\nRUN echo\n\
         COPY --from=b --link --chown=1:2 --chmod=600 /x /y /d/\n",
        None,
    )
    .unwrap();
    let created_by = created_by(&l);
    assert_eq!(
        created_by,
        [
            "ARG G=global",
            "ARG A=1",
            "ENV E=1 X=a b",
            "LABEL l=1",
            "EXPOSE [53/udp 80/tcp 90/tcp 91/tcp]",
            "VOLUME [/v /w]",
            "SHELL [/bin/sh -e -c]",
            r#"CMD ["/bin/sh" "-e" "-c" "echo \"$HOME\""]"#,
            r#"ENTRYPOINT ["/e"]"#,
            "STOPSIGNAL 9",
            "USER app",
            "HEALTHCHECK {Test:[CMD /bin/true] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:2}",
            "RUN |2 G=global A=1 /bin/sh -e -c echo # buildkit",
            "COPY --chown=1:2 --chmod=600 /x /y /d/ # buildkit",
        ],
        "no entry for ONBUILD"
    );
}

/// The data of every mkfile action in the graph, by path.
fn mkfiles(l: &Lowered) -> BTreeMap<String, String> {
    l.definition
        .vertices()
        .filter_map(|(_, v)| match v.op() {
            Op::File(f) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a {
            FileAction::Mkfile(m) => Some((m.path, String::from_utf8(m.data).unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn copy_heredocs_expand_unless_the_delimiter_is_quoted() {
    let l = lower_text(
        "FROM busybox\nARG NAME=world\nENV GREETING=hello\nCOPY <<EOF /plain\n$GREETING ${NAME} \"$NAME\" '$NAME' \\$NAME\nEOF\nCOPY <<\"EOF\" /quoted\n$GREETING ${NAME}\nEOF\nADD <<'EOF' /single\n$NAME\nEOF\nCOPY <<-EOF /chomped\n\t${NAME:-x}\nEOF\nRUN <<EOF\necho $NAME > /run.txt\nEOF\n",
        None,
    )
    .unwrap();
    let files = mkfiles(&l);
    assert_eq!(
        files["/plain"], "hello world \"world\" 'world' $NAME\n",
        "quotes are literal, a backslash escapes"
    );
    assert_eq!(files["/quoted"], "$GREETING ${NAME}\n");
    assert_eq!(files["/single"], "$NAME\n");
    assert_eq!(files["/chomped"], "world\n");
    let run = l.definition.vertex(l.target.unwrap()).unwrap();
    let Op::Exec(e) = run.op() else { panic!() };
    assert!(
        e.meta.args.last().unwrap().contains("echo $NAME"),
        "RUN heredocs are left to the shell: {:?}",
        e.meta.args
    );
}

#[test]
fn metadata_history_is_written_as_buildkit_writes_it() {
    let l = lower_text(
        "FROM busybox\nARG A=1 B\nENV X=\"two words\" Y=$A\nLABEL \"k l\"=v\nEXPOSE 80 443/udp 8000-8001\nUSER app\nVOLUME /a /b\nSTOPSIGNAL SIGTERM\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo \"hi\"\nENTRYPOINT [\"/e\", \"-x\"]\nONBUILD RUN true\n",
        None,
    )
    .unwrap();
    let created_by = created_by(&l);
    assert_eq!(
        created_by,
        [
            "ARG A=1 B",
            "ENV X=two words Y=1",
            "LABEL k l=v",
            "EXPOSE [443/udp 80/tcp 8000/tcp 8001/tcp]",
            "USER app",
            "VOLUME [/a /b]",
            "STOPSIGNAL SIGTERM",
            "SHELL [/bin/bash -c]",
            r#"CMD ["/bin/bash" "-c" "echo \"hi\""]"#,
            r#"ENTRYPOINT ["/e" "-x"]"#,
        ]
    );
    assert_eq!(
        l.config.config.extra.get("ArgsEscaped"),
        Some(&serde_json::json!(true)),
        "CMD sets ArgsEscaped as BuildKit does"
    );
}

#[test]
fn copy_history_keeps_the_flags_buildkit_keeps() {
    let l = lower_text(
        "FROM busybox AS a\nFROM busybox\nARG U=1000\nCOPY --from=a --link --chown=$U:$U --chmod=0755 --exclude=*.log x y/ /d/\nADD --chmod=644 <<-EOF <<\"B\" /h/\nbody\nEOF\nb\nB\nCOPY --parents a/b ./\n",
        None,
    )
    .unwrap();
    let created_by: Vec<&str> = l
        .config
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .filter(|c| c.starts_with("COPY") || c.starts_with("ADD"))
        .collect();
    assert_eq!(
        created_by,
        [
            "COPY --chown=1000:1000 --chmod=0755 x y/ /d/ # buildkit",
            "ADD --chmod=644 <<EOF <<B /h/ # buildkit",
            "COPY --parents a/b ./ # buildkit",
        ]
    );
}

#[test]
fn run_history_names_the_build_args_in_scope() {
    let l = lower_text(
        "FROM busybox AS base\nARG P=parent\nFROM base\nRUN early\nARG A=1\nENV A=env\nARG B\nARG A\nRUN true\n",
        None,
    )
    .unwrap();
    let runs: Vec<&str> = created_by(&l)
        .into_iter()
        .filter(|c| c.starts_with("RUN"))
        .collect();
    assert_eq!(
        runs,
        [
            "RUN |1 P=parent /bin/sh -c early # buildkit",
            "RUN |3 P=parent A=env B= /bin/sh -c true # buildkit",
        ]
    );
}

#[test]
fn a_trigger_copying_from_a_stage_makes_it_needed() {
    let src = "FROM busybox AS builder\nRUN echo built > /out\nFROM busybox AS parent\nONBUILD COPY --from=builder /out /got\nFROM parent\nRUN cat /got\n";
    let ast = crate::parse_named("Dockerfile", src.as_bytes()).unwrap();
    let build = resolve(&ast, &ResolveOptions::default()).unwrap();
    assert_eq!(build.needed, [0, 1, 2], "builder is needed by the trigger");
    let l = lower(&ast, &build, &mut FakeRegistry, &opts()).unwrap();
    let copies = l
        .definition
        .vertices()
        .filter(|(_, v)| {
            v.metadata()
                .description
                .contains("ONBUILD COPY --from=builder")
        })
        .count();
    assert_eq!(copies, 1);
}

#[test]
fn triggers_see_the_args_the_parent_inherited() {
    let l = lower_text(
        "FROM busybox AS grand\nARG G=from-grand\nFROM grand AS parent\nONBUILD ENV T=$G\nFROM parent\n",
        None,
    )
    .unwrap();
    assert_eq!(l.config.config.env_var("T"), Some("from-grand"));
}
