//! Parser behaviour beyond the BuildKit corpus: directives, spans, continuations, heredocs, errors.

use kiln_frontend::{parse, parse_named, ErrorKind};

fn dump(src: &str) -> String {
    parse(src)
        .unwrap_or_else(|e| panic!("{}", e.render()))
        .dump()
}

#[test]
fn directives_are_exposed() {
    let ast = parse("# syntax=docker/dockerfile:1.7\n# check=skip=StageNameCasing;error=true\n# escape=`\n\nFROM a\n").unwrap();
    let d = &ast.directives;
    assert_eq!(
        d.syntax.as_ref().map(|d| d.value.as_str()),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(d.escape.as_ref().map(|d| d.line), Some(3));
    assert_eq!(ast.escape, '`');
    let check = d.check_config().expect("check present").expect("valid");
    assert!(check.error && check.is_skipped("StageNameCasing"));
}

#[test]
fn duplicate_directive_is_an_error_at_its_line() {
    let e = parse("# syntax=a\n# syntax=b\nFROM x\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Directive);
    assert_eq!(e.location.line, 2);
    assert!(
        e.message.contains("only one syntax parser directive"),
        "{}",
        e.message
    );
    assert_eq!(e.source_line.as_deref(), Some("# syntax=b"));
    assert!(e.hint.is_some());
}

#[test]
fn invalid_escape_directive_is_an_error() {
    let e = parse("# escape=x\nFROM a\n").unwrap_err();
    assert_eq!((e.kind, e.location.line), (ErrorKind::Directive, 1));
}

#[test]
fn unknown_directive_or_blank_line_ends_directives() {
    let ast = parse("# foo=bar\n# escape=`\nFROM a\n").unwrap();
    assert!(ast.directives.escape.is_none());
    assert_eq!(ast.escape, '\\');
    let ast = parse("\n# escape=`\nFROM a\n").unwrap();
    assert!(ast.directives.escape.is_none());
    let ast = parse("FROM a\n# syntax=late\n").unwrap();
    assert!(ast.directives.syntax.is_none());
    // A repeated directive after the block has ended is only a comment.
    assert!(parse("# syntax=a\nFROM x\n# syntax=b\n").is_ok());
}

#[test]
fn bom_and_shebang_are_skipped() {
    let ast = parse("\u{feff}#!/usr/bin/env kiln\n# escape=`\nFROM a `\n  b\n").unwrap();
    assert_eq!(ast.escape, '`');
    assert_eq!(ast.dump(), "(from \"a\" \"b\")");
    assert_eq!(ast.children[0].span.start_line, 3);
}

#[test]
fn keywords_case_insensitive_original_kept() {
    let ast = parse("from a\nRun echo\n  cOpY x y\n").unwrap();
    let kw: Vec<(&str, &str)> = ast
        .children
        .iter()
        .map(|n| (n.value.as_str(), n.keyword.as_str()))
        .collect();
    assert_eq!(kw, vec![("from", "from"), ("run", "Run"), ("copy", "cOpY")]);
    assert_eq!(ast.children[2].span.column, 3);
}

#[test]
fn hash_mid_line_is_not_a_comment() {
    assert_eq!(
        dump("FROM a\nRUN echo a # b\n"),
        "(from \"a\")\n(run \"echo a # b\")"
    );
}

#[test]
fn comments_inside_continuation_dropped_empty_lines_warned() {
    let ast = parse("FROM a\nRUN echo a \\\n# comment\n\n  b\n").unwrap();
    assert_eq!(ast.children[1].args, vec!["echo a   b"]);
    assert_eq!(ast.children[1].span.end_line, 5);
    assert_eq!(ast.warnings.len(), 1);
    assert_eq!(ast.warnings[0].rule, "NoEmptyContinuation");
    assert_eq!(ast.warnings[0].line, 5);
    let ast = parse("FROM a\nRUN echo a \\\n# comment\n  b\n").unwrap();
    assert!(ast.warnings.is_empty());
}

#[test]
fn crlf_line_endings() {
    assert_eq!(
        dump("FROM a\r\nRUN x \\\r\n  y\r\n"),
        "(from \"a\")\n(run \"x   y\")"
    );
}

#[test]
fn onbuild_wraps_and_carries_heredocs() {
    let ast = parse("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nONBUILD\n").unwrap();
    let onbuild = &ast.children[1];
    assert_eq!(onbuild.sub.as_ref().map(|s| s.value.as_str()), Some("run"));
    assert_eq!(onbuild.heredocs.len(), 1);
    assert_eq!(onbuild.heredocs[0].content, "echo hi\n");
    assert_eq!(onbuild.span.end_line, 4);
    assert_eq!(ast.children[2].dump(), "onbuild");
    assert_eq!(onbuild.dump(), "onbuild (run \"<<EOF\")");
}

#[test]
fn heredoc_chomp_and_json_form() {
    let ast = parse(
        "FROM a\nRUN <<-EOT\n\t\techo\n\tEOT\nRUN [\"<<EOF\"]\nCOPY <<A <<'B' /d\na\nA\nb $x\nB\n",
    )
    .unwrap();
    let h = &ast.children[1].heredocs[0];
    assert!(h.chomp);
    assert_eq!(h.content, "\t\techo\n");
    assert_eq!(h.chomped_content(), "echo\n");
    assert!(ast.children[2].heredocs.is_empty());
    let copy = &ast.children[3];
    assert_eq!(copy.heredocs.len(), 2);
    assert!(copy.heredocs[0].expand && !copy.heredocs[1].expand);
    assert_eq!(copy.heredocs[1].content, "b $x\n");
    assert_eq!((copy.span.start_line, copy.span.end_line), (6, 10));
}

#[test]
fn heredoc_not_on_other_instructions() {
    let ast = parse("FROM a\nUSER <<X\nX\n").unwrap();
    assert_eq!(ast.children.len(), 3);
    assert!(ast.children[1].heredocs.is_empty());
}

#[test]
fn unterminated_heredoc_points_at_delimiter() {
    let e = parse_named("df", b"FROM a\nRUN cat <<-EOF\nhello\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Heredoc);
    assert_eq!(
        (e.location.line, e.location.column, e.location.end_line),
        (2, 9, 3)
    );
    assert_eq!(e.location.file, "df");
    assert!(e.render().contains("RUN cat <<-EOF"));
    assert!(e.hint.as_deref().unwrap_or("").contains("EOF"));
}

#[test]
fn env_label_errors_have_locations() {
    let e = parse("FROM a\n  LABEL a=b c\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!((e.location.line, e.location.column), (2, 13));
    assert!(e.message.contains("can't find = in \"c\""), "{}", e.message);
    let e = parse("FROM a\nENV a=1 \\\n    b=2 \\\n    oops\n").unwrap_err();
    assert_eq!(
        (e.location.line, e.location.column, e.location.len),
        (4, 5, 4)
    );
    assert_eq!(e.source_line.as_deref(), Some("    oops"));
    let e = parse("FROM a\nLABEL onlykey\n").unwrap_err();
    assert_eq!(e.message, "LABEL must have two arguments");
}

#[test]
fn empty_and_comment_only_files_fail() {
    for src in ["", "\n\n", "# just a comment\n", "\u{feff}"] {
        let e = parse(src).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Empty, "{src:?}");
        assert_eq!(e.message, "file with no instructions");
    }
    let e = parse("FROM a\n  \\\n").unwrap_err();
    assert_eq!(
        (e.kind, e.location.line, e.location.column),
        (ErrorKind::Syntax, 2, 3)
    );
}

#[test]
fn flags_and_accessors() {
    let ast = parse("FROM --platform=$BUILDPLATFORM a AS b\nRUN --network=none --mount=type=cache,target=/x --mount=type=tmpfs,target=/t ls\n").unwrap();
    assert_eq!(ast.children[0].flag("platform"), Some("$BUILDPLATFORM"));
    let run = &ast.children[1];
    assert_eq!(run.flag("mount"), Some("type=tmpfs,target=/t"));
    assert_eq!(
        run.flag_names().collect::<Vec<_>>(),
        vec!["network", "mount", "mount"]
    );
    assert_eq!(run.args, vec!["ls"]);
    let env = parse("FROM a\nENV a=1 b=\"2 3\"\n").unwrap();
    let kv: Vec<_> = env.children[1].key_values().collect();
    assert_eq!(kv, vec![("a", "1", "="), ("b", "\"2 3\"", "=")]);
}

#[test]
fn line_text_and_error_helpers() {
    let ast = parse("FROM a\n  RUN b\n").unwrap();
    assert_eq!(ast.line_text(2), Some("  RUN b"));
    assert_eq!(ast.line_text(3), None);
    let e = ast.error_at(&ast.children[1], ErrorKind::Instruction, "nope");
    assert_eq!(
        (e.location.line, e.location.column, e.location.len),
        (2, 3, 3)
    );
    assert_eq!(e.source_line.as_deref(), Some("  RUN b"));
}

#[test]
fn invalid_utf8_does_not_fail() {
    let ast = parse_named("x", b"FROM a\nRUN echo \xff\xfe\n").unwrap();
    assert_eq!(ast.children[1].args, vec!["echo \u{fffd}\u{fffd}"]);
}

#[test]
fn locate_points_at_flags_and_arguments() {
    let ast = parse("FROM a\nRUN --mount=type=cache \\\n    --network=bogus run\n").unwrap();
    let run = &ast.children[1];
    let loc = ast.locate(run, "--network=bogus");
    assert_eq!((loc.line, loc.column, loc.len), (3, 5, 15));
    let loc = ast.locate(run, "run");
    assert_eq!((loc.line, loc.column), (3, 21));
    let loc = ast.locate(run, "not there");
    assert_eq!((loc.line, loc.column), (2, 1));
    let e = ast.error_at_text(run, "--mount", ErrorKind::Flag, "bad mount");
    assert_eq!(e.source_line.as_deref(), Some("RUN --mount=type=cache \\"));
    assert_eq!(e.location.column, 5);
}
