//! Fuzz target: any bytes must parse or fail with a located error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match kiln_frontend::parse_named("fuzz", data) {
        Ok(ast) => {
            let _ = ast.dump();
            for node in &ast.children {
                assert!(node.span.start_line <= node.span.end_line);
            }
        }
        Err(err) => {
            assert!(err.location.line >= 1);
            let _ = err.render();
        }
    }
});
