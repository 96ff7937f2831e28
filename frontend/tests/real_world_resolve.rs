//! Every real-world Dockerfile in testdata/corpus/real-world resolves (all stages expanded)
//! without an error and without a panic.

use kiln_frontend::stages::{resolve, ResolveOptions};
use std::path::PathBuf;

#[test]
fn real_world_dockerfiles_resolve() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/real-world");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "only {} files", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(f).unwrap();
        let ast = match kiln_frontend::parse_named(&name, &bytes) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: parse: {}", e.render()));
                continue;
            }
        };
        let opts = ResolveOptions {
            all_stages: true,
            ..ResolveOptions::default()
        };
        match resolve(&ast, &opts) {
            Ok(b) => assert!(!b.stages.is_empty(), "{name}"),
            Err(e) => failures.push(format!("{name}: {}", e.render())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
