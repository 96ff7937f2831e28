//! Property tests: random and garbled Dockerfiles never panic the parser, and successful parses
//! keep their structural invariants (ordered spans inside the file, dump renders).

use kiln_frontend::parse_named;
use proptest::prelude::*;

/// Fragments that exercise every parser path when glued together at random.
const FRAGMENTS: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "CMD ",
    "ENTRYPOINT ",
    "HEALTHCHECK ",
    "ONBUILD ",
    "SHELL ",
    "USER ",
    "EXPOSE ",
    "VOLUME ",
    "WORKDIR ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "run ",
    "NONE",
    "CMD",
    "--mount=type=cache,target=/x ",
    "--",
    "-",
    "--flag=\"a b\" ",
    "'",
    "\"",
    "\\",
    "`",
    "\\\n",
    "`\n",
    "\n",
    "\r\n",
    "\t",
    " ",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=x\n",
    "# check=skip=all\n",
    "#!/bin/sh\n",
    "\u{feff}",
    "<<",
    "<<-",
    "<<EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "3<<EOF",
    "EOF\n",
    "\tEOF\n",
    "EOF",
    "=",
    "a=b ",
    "a",
    "[",
    "]",
    "[\"a\", \"b\"]",
    "[1]",
    "[[",
    "{",
    "}",
    ",",
    "$x",
    "${x:-y}",
    "é",
    "\u{0}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "//",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat())
}

fn check(name: &str, bytes: &[u8]) {
    let line_count = bytes.split(|&b| b == b'\n').count();
    match parse_named(name, bytes) {
        Ok(ast) => {
            let _ = ast.dump();
            let _ = serde_json::to_string(&ast).expect("AST serializes");
            let mut last = 0;
            for node in &ast.children {
                assert!(node.span.start_line > last, "spans out of order");
                assert!(node.span.start_line <= node.span.end_line);
                assert!(node.span.end_line <= line_count);
                last = node.span.end_line;
            }
            assert_eq!(ast.start_line, ast.children[0].span.start_line);
        }
        Err(e) => {
            assert!(e.location.line >= 1, "error without a line: {e}");
            assert!(
                e.location.line <= line_count.max(1),
                "error line past the end: {e}"
            );
            assert!(e.hint.is_some(), "error without a hint: {e}");
            let _ = e.render();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(src in fragments()) {
        check("soup", src.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check("bytes", &bytes);
    }

    #[test]
    fn arbitrary_unicode_never_panics(src in "\\PC{0,200}") {
        check("unicode", src.as_bytes());
    }
}
