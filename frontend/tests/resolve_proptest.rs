//! Resolution and the build checks never panic, whatever Dockerfile-like text they get.

use kiln_frontend::lint::{check, CheckOptions};
use kiln_frontend::stages::{resolve, ResolveOptions};
use proptest::prelude::*;

fn line() -> impl Strategy<Value = String> {
    let kw = prop::sample::select(vec![
        "FROM",
        "from",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "LABEL",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "VOLUME",
        "HEALTHCHECK",
        "ONBUILD",
        "STOPSIGNAL",
        "MAINTAINER",
        "BOGUS",
    ]);
    let flag = prop::sample::select(vec![
        "",
        "--from=a ",
        "--from=$X ",
        "--from=0 ",
        "--mount=type=cache,target=/c ",
        "--mount=type=secret,id=$S ",
        "--mount=type=bind,from=b,target=/x ",
        "--mount=ro ",
        "--mount=type=ssh ",
        "--chmod=755 ",
        "--chmod=u+x ",
        "--chown=$U ",
        "--platform=$BUILDPLATFORM ",
        "--platform=linux/amd64 ",
        "--network=none ",
        "--link ",
        "--interval=5s ",
        "--retries=-1 ",
        "--checksum=sha256:00 ",
        "--bogus ",
    ]);
    let word = "[-a-zA-Z0-9_$/{}:.=#%?+\"' ]{0,24}";
    (
        kw,
        flag,
        word,
        prop::sample::select(vec!["", " AS a", " as B", " AS b"]),
    )
        .prop_map(|(k, f, w, tail)| format!("{k} {f}{w}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn resolve_and_check_never_panic(lines in prop::collection::vec(line(), 1..12), target in prop::option::of("[ab0]")) {
        let src = lines.join("\n");
        if let Ok(ast) = kiln_frontend::parse(&src) {
            let mut opts = ResolveOptions { target, ..ResolveOptions::default() };
            opts.build_args.insert("X".into(), "1".into());
            let _ = resolve(&ast, &opts);
            let _ = resolve(&ast, &ResolveOptions { all_stages: true, ..opts.clone() });
            let ignored = |p: &str| p.starts_with('a');
            let _ = check(&ast, &CheckOptions { resolve: opts, ignored: Some(&ignored) });
        }
    }
}
