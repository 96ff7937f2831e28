//! BuildKit's lexer tables (testdata/corpus/buildkit-shell) run against our lexer.

use kiln_frontend::shell::vars::env_from_pairs;
use kiln_frontend::shell::Lexer;
use std::path::PathBuf;

fn corpus(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus/buildkit-shell")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn env_var_test_table() {
    let env = env_from_pairs(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lex = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in corpus("envVarTest").lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "line {}: {line:?}", n + 1);
        let (platform, src, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        checked += 1;
        let got = lex.process_word(src, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(w), e) => e != "error" && w == e,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {src:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(checked > 200, "only {checked} cases read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn words_test_table() {
    let lex = Lexer::new('\\');
    let mut envs: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in corpus("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            envs.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}: {line:?}", n + 1);
        let src = parts[0].trim();
        let expected: Vec<String> = parts[1]
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_string)
            .collect();
        checked += 1;
        let got = lex
            .process_words(src, &env_from_pairs(&envs))
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "line {}: {src:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(checked > 20, "only {checked} cases read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
