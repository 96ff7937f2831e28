//! Rust crates: `Cargo.lock` files and `cargo auditable` data embedded in binaries.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use super::root::read_host_file;
use super::{purl, Found, Package, PackageKind};

/// Large workspaces' lockfiles are a few hundred KiB.
const MAX_LOCK: u64 = 16 * 1024 * 1024;
/// The decompressed JSON of `cargo auditable` (a few KiB in practice).
const MAX_AUDITABLE_JSON: u64 = 8 * 1024 * 1024;

/// The crates of a Cargo.lock file.
pub fn parse_lock_file(host: &Path, shown: &str) -> Found {
    let bytes = read_host_file(host, shown, MAX_LOCK).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    parse_lock(&text, shown)
}

/// The crates of a Cargo.lock document.
pub fn parse_lock(text: &str, location: &str) -> Found {
    let lock = cargo_lock::Lockfile::from_str(text).map_err(|e| format!("{location}: {e}"))?;
    Ok(lock
        .packages
        .iter()
        .map(|p| crate_package(p.name.as_str(), &p.version.to_string(), location))
        .collect())
}

fn crate_package(name: &str, version: &str, location: &str) -> Package {
    Package {
        kind: PackageKind::Cargo,
        name: name.to_string(),
        version: version.to_string(),
        purl: purl("cargo", None, name, version, &[]),
        license: None,
        supplier: None,
        originator: None,
        locations: vec![location.to_string()],
    }
}

#[derive(serde::Deserialize)]
struct AuditableInfo {
    packages: Vec<AuditablePackage>,
}

#[derive(serde::Deserialize)]
struct AuditablePackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The crates of a binary's `.dep-v0` section (zlib-compressed JSON written by
/// `cargo auditable`); build-only dependencies are not in the binary and are left out.
pub fn parse_auditable(section: &[u8], location: &str) -> Found {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_AUDITABLE_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("{location}: cargo auditable data: {e}"))?;
    if json.len() as u64 > MAX_AUDITABLE_JSON {
        return Err(format!(
            "{location}: cargo auditable data is larger than {MAX_AUDITABLE_JSON} bytes"
        ));
    }
    let info: AuditableInfo = serde_json::from_slice(&json)
        .map_err(|e| format!("{location}: cargo auditable data: {e}"))?;
    Ok(info
        .packages
        .iter()
        .filter(|p| p.kind.as_deref() != Some("build"))
        .map(|p| crate_package(&p.name, &p.version, location))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn this_repositorys_lockfile() {
        let text = include_str!("../../../../Cargo.lock");
        let pkgs = parse_lock(text, "/src/Cargo.lock").unwrap();
        let serde = pkgs
            .iter()
            .find(|p| p.name == "serde")
            .expect("serde is locked");
        assert_eq!(serde.purl, format!("pkg:cargo/serde@{}", serde.version));
        assert!(pkgs.iter().any(|p| p.name == "kiln"));
        assert!(parse_lock("[[package]]\nname = 3\n", "/x").is_err());
    }

    #[test]
    fn auditable_section() {
        let json =
            br#"{"packages":[{"name":"hello","version":"0.1.0","source":"local","root":true},
            {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"},
            {"name":"libc","version":"0.2.150","source":"crates.io"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let pkgs = parse_auditable(&z.finish().unwrap(), "/bin/hello").unwrap();
        let purls: Vec<&str> = pkgs.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:cargo/hello@0.1.0", "pkg:cargo/libc@0.2.150"]);
        assert!(parse_auditable(b"not zlib", "/bin/x").is_err());
    }
}
