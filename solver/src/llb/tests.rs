use super::*;
use kiln_oci::Platform;

fn busybox() -> Op {
    Op::Source(SourceOp::image("docker.io/library/busybox:latest"))
}

fn run(args: &[&str]) -> Op {
    Op::Exec(ExecOp {
        meta: ExecMeta {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
            user: "root".into(),
            ..Default::default()
        },
        mounts: vec![Mount::root()],
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        secret_env: vec![],
    })
}

fn amd64() -> Option<Platform> {
    Platform::parse("linux/amd64").ok()
}

fn loc(line: u32) -> VertexMetadata {
    VertexMetadata {
        description: format!("RUN at line {line}"),
        locations: vec![SourceLocation {
            file: "Dockerfile".into(),
            start_line: line,
            end_line: line,
        }],
        ..Default::default()
    }
}

#[test]
fn equal_work_in_two_stages_is_one_vertex() {
    let mut d = Definition::new();
    let base1 = d
        .add(
            busybox(),
            amd64(),
            &[],
            VertexMetadata::described("FROM busybox (stage a)"),
        )
        .unwrap();
    let base2 = d
        .add(
            busybox(),
            amd64(),
            &[],
            VertexMetadata::described("FROM busybox (stage b)"),
        )
        .unwrap();
    assert_eq!(base1, base2);
    let r1 = d
        .add(run(&["sh", "-c", "make"]), amd64(), &[base1], loc(3))
        .unwrap();
    let r2 = d
        .add(run(&["sh", "-c", "make"]), amd64(), &[base2], loc(9))
        .unwrap();
    assert_eq!(r1, r2);
    assert_eq!(d.len(), 2);
    let v = d.vertex(r1).unwrap();
    assert_eq!(
        v.metadata().description,
        "RUN at line 3",
        "first description kept"
    );
    let lines: Vec<u32> = v
        .metadata()
        .locations
        .iter()
        .map(|l| l.start_line)
        .collect();
    assert_eq!(lines, vec![3, 9], "both locations remembered");
}

#[test]
fn digest_covers_op_platform_and_inputs_but_not_metadata() {
    let mut d = Definition::new();
    let b = d
        .add(busybox(), amd64(), &[], VertexMetadata::default())
        .unwrap();
    let arm = d
        .add(
            busybox(),
            Platform::parse("linux/arm64").ok(),
            &[],
            VertexMetadata::default(),
        )
        .unwrap();
    assert_ne!(b, arm, "platform is identity");
    let x = d.add(run(&["true"]), amd64(), &[b], loc(1)).unwrap();
    let y = d.add(run(&["true"]), amd64(), &[arm], loc(1)).unwrap();
    assert_ne!(
        d.vertex(x).unwrap().digest(),
        d.vertex(y).unwrap().digest(),
        "inputs are identity"
    );
    let z = d.add(run(&["false"]), amd64(), &[b], loc(1)).unwrap();
    assert_ne!(x, z);
    // Metadata differs, identity does not.
    let mut other = Definition::new();
    let b2 = other
        .add(busybox(), amd64(), &[], VertexMetadata::described("else"))
        .unwrap();
    let x2 = other.add(run(&["true"]), amd64(), &[b2], loc(42)).unwrap();
    assert_eq!(
        d.vertex(x).unwrap().digest(),
        other.vertex(x2).unwrap().digest()
    );
}

#[test]
fn attribute_order_does_not_matter() {
    let a = SourceOp::git("github.com/x/y.git#main")
        .attr("git.keepgitdir", "true")
        .attr("git.fullurl", "u");
    let b = SourceOp::git("github.com/x/y.git#main")
        .attr("git.fullurl", "u")
        .attr("git.keepgitdir", "true");
    assert_eq!(
        vertex_digest(&Op::Source(a), &None, &[]),
        vertex_digest(&Op::Source(b), &None, &[])
    );
}

#[test]
fn canonical_encoding_is_pinned() {
    // Changing this encoding changes every vertex digest and cache key: do it on purpose only.
    let op = Op::Source(SourceOp::local("context").attr("local.sharedkeyhint", "context"));
    let bytes = canonical_encoding(&op, &amd64(), &[]);
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"op":{"source":{"identifier":"local://context","attrs":{"local.sharedkeyhint":"context"}}},"platform":{"os":"linux","architecture":"amd64","variant":null},"inputs":[]}"#
    );
    assert_eq!(
        vertex_digest(&op, &amd64(), &[]).to_string(),
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical_encoding(
                &op,
                &amd64(),
                &[]
            )))
        )
    );
}

#[test]
fn bad_input_references_are_errors() {
    let mut d = Definition::new();
    let b = d
        .add(busybox(), None, &[], VertexMetadata::default())
        .unwrap();
    let mut exec = run(&["x"]);
    if let Op::Exec(e) = &mut exec {
        e.mounts.push(Mount {
            input: Some(1),
            selector: Some("/src".into()),
            dest: "/mnt".into(),
            output: false,
            readonly: true,
            kind: MountKind::Bind,
        });
    }
    assert_eq!(
        d.add(exec, None, &[b], VertexMetadata::default()),
        Err(GraphError::InputOutOfRange {
            op: "exec",
            index: 1,
            count: 1
        })
    );
    let copy = Op::File(FileOp {
        base: Some(0),
        users: None,
        actions: vec![FileAction::Copy(CopyAction {
            src_input: 2,
            src: "/a".into(),
            dest: "/b".into(),
            ..Default::default()
        })],
    });
    assert!(matches!(
        d.add(copy, None, &[b], VertexMetadata::default()),
        Err(GraphError::InputOutOfRange { index: 2, .. })
    ));
    assert!(
        d.add(busybox(), None, &[b], VertexMetadata::default())
            .is_err(),
        "sources take no inputs"
    );
    let mut other = Definition::new();
    for _ in 0..5 {
        other
            .add(
                Op::Source(SourceOp::local(&format!("c{}", other.len()))),
                None,
                &[],
                VertexMetadata::default(),
            )
            .unwrap();
    }
    let foreign = other.vertices().last().unwrap().0;
    assert_eq!(
        d.add(run(&["x"]), None, &[foreign], VertexMetadata::default()),
        Err(GraphError::UnknownInput(4))
    );
    assert_eq!(d.len(), 1);
}

#[test]
fn closure_is_the_needed_subgraph_in_topological_order() {
    let mut d = Definition::new();
    let base = d
        .add(busybox(), None, &[], VertexMetadata::default())
        .unwrap();
    let ctx = d
        .add(
            Op::Source(SourceOp::local("context")),
            None,
            &[],
            VertexMetadata::default(),
        )
        .unwrap();
    let unused = d
        .add(run(&["unused"]), None, &[base], VertexMetadata::default())
        .unwrap();
    let build = d
        .add(run(&["make"]), None, &[base], VertexMetadata::default())
        .unwrap();
    let copy = d
        .add(
            Op::File(FileOp {
                base: Some(0),
                users: None,
                actions: vec![FileAction::Copy(CopyAction {
                    src_input: 1,
                    src: "/".into(),
                    dest: "/app/".into(),
                    ..Default::default()
                })],
            }),
            None,
            &[build, ctx],
            VertexMetadata::default(),
        )
        .unwrap();
    let need = d.closure(&[copy]);
    assert_eq!(need, vec![base, ctx, build, copy]);
    assert!(!need.contains(&unused));
    assert_eq!(d.dependents(base), vec![unused, build]);
}

#[test]
fn dot_and_json_dumps() {
    let mut d = Definition::new();
    let base = d
        .add(
            busybox(),
            amd64(),
            &[],
            VertexMetadata::described("[1/2] FROM busybox"),
        )
        .unwrap();
    let r = d
        .add(
            run(&["sh", "-c", "echo \"hi\""]),
            amd64(),
            &[base],
            VertexMetadata::default(),
        )
        .unwrap();
    let dot = d.to_dot(&[r]);
    assert!(dot.starts_with("digraph kiln {"));
    let bd = d.vertex(base).unwrap().digest();
    let rd = d.vertex(r).unwrap().digest();
    assert!(dot.contains(&format!("\"{bd}\" -> \"{rd}\"")), "{dot}");
    assert!(dot.contains("[1/2] FROM busybox"));
    assert!(dot.contains("echo \\\"hi\\\""), "quotes escaped: {dot}");
    let json = d.to_json(&[r]);
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[1]["inputs"][0], bd.to_string());
    let op: Op = serde_json::from_value(arr[1]["op"].clone()).unwrap();
    assert_eq!(&op, d.vertex(r).unwrap().op());
}

#[test]
fn vertex_digest_parses_back() {
    let d = vertex_digest(&busybox(), &None, &[]);
    assert_eq!(VertexDigest::parse(&d.to_string()), Some(d));
    assert_eq!(VertexDigest::parse("sha256:zz"), None);
}
