//! Parser conformance against BuildKit's own parser test cases (testdata/corpus, see SOURCES.md).

use kiln_frontend::parser::{parse_named, Ast};
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus")
}

fn case_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(corpus().join(sub))
        .unwrap_or_else(|e| panic!("reading corpus {sub}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn parse_file(path: &Path) -> Result<Ast, kiln_frontend::SourceError> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_named(&path.display().to_string(), &bytes)
}

#[test]
fn dump_matches_every_buildkit_result_file() {
    let dirs = case_dirs("buildkit-parser/testfiles");
    assert!(
        dirs.len() >= 33,
        "expected the 33 BuildKit cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let expected = fs::read_to_string(dir.join("result"))
            .expect("result file")
            .replace("\r\n", "\n");
        match parse_file(&dir.join("Dockerfile")) {
            Ok(ast) => {
                let got = ast.dump() + "\n";
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse failed: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_negative_case_fails_with_a_location() {
    let dirs = case_dirs("buildkit-parser/testfiles-negative");
    assert_eq!(dirs.len(), 4);
    for dir in &dirs {
        match parse_file(&dir.join("Dockerfile")) {
            Ok(ast) => panic!("{} parsed but must fail:\n{}", dir.display(), ast.dump()),
            Err(e) => {
                assert!(e.location.line >= 1, "{}: {e}", dir.display());
                assert!(e.hint.is_some(), "{}: no hint: {e}", dir.display());
            }
        }
    }
}

#[test]
fn line_numbers_match_buildkit() {
    let ast =
        parse_file(&corpus().join("buildkit-parser/testfile-line/Dockerfile")).expect("parses");
    assert_eq!((ast.start_line, ast.end_line), (5, 31));
    let spans: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|n| (n.span.start_line, n.span.end_line))
        .collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn heredocs_match_buildkit_expectations() {
    let dir = corpus().join("buildkit-parser/heredoc");
    let ast = parse_file(&dir.join("Dockerfile")).expect("parses");
    let expected: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).expect("json"))
            .expect("valid json");
    let cases = expected["expected"].as_array().expect("array");
    assert!(cases.len() > 20);
    for case in cases {
        let index = case["ast_child_index"].as_u64().expect("index") as usize;
        let node = ast
            .children
            .get(index)
            .unwrap_or_else(|| panic!("no child {index}"));
        let got = serde_json::to_value(&node.heredocs).expect("serialize");
        let want = match &case["heredocs"] {
            serde_json::Value::Null => serde_json::json!([]),
            v => v.clone(),
        };
        assert_eq!(got, want, "child {index} ({})", case["comment"]);
    }
}

#[test]
fn every_real_world_dockerfile_parses() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus().join("real-world"))
        .expect("real-world dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "found only {} files", files.len());
    for file in &files {
        let ast = parse_file(file).unwrap_or_else(|e| panic!("{}: {}", file.display(), e.render()));
        assert!(
            ast.children.iter().any(|n| n.is("from")),
            "{}: no FROM found",
            file.display()
        );
    }
}
