//! Scans a directory (an unpacked image root) with kiln's built-in SBOM
//! scanner and prints the SPDX 2.3 JSON; `--time` prints only the package
//! count and the scan time (for bench/sbom.sh).

#[allow(dead_code)] // only the scanner of the module is used here
#[path = "../src/attest/mod.rs"]
mod attest;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let timing = args.iter().any(|a| a == "--time");
    let Some(dir) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: sbom_scan [--time] DIR");
        return ExitCode::from(2);
    };
    let start = std::time::Instant::now();
    let opts = attest::sbom::ScanOptions::new(dir.clone());
    let doc = match attest::sbom::scan(Path::new(dir), &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = doc.to_spdx_json();
    let elapsed = start.elapsed();
    if timing {
        println!(
            "{} {:.1}",
            doc.packages.len(),
            elapsed.as_secs_f64() * 1000.0
        );
    } else {
        println!("{}", serde_json::to_string_pretty(&json).expect("JSON"));
        for w in &doc.warnings {
            eprintln!("warning: {w}");
        }
    }
    ExitCode::SUCCESS
}
