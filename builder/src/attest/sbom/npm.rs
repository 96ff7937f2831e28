//! npm packages: `package-lock.json` files and installed `node_modules/*/package.json`.

use std::path::Path;

use serde_json::Value;

use super::root::read_host_file;
use super::{license, purl, Found, Package, PackageKind};

/// Lockfiles of large applications reach a few MiB.
const MAX_LOCK: u64 = 64 * 1024 * 1024;
/// A package manifest is a few KiB.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// Nesting of lockfile v1 `dependencies` followed at most.
const MAX_V1_DEPTH: usize = 64;

/// The packages of a package-lock.json file (lockfile versions 1 to 3).
pub fn parse_lock_file(host: &Path, shown: &str) -> Found {
    let bytes = read_host_file(host, shown, MAX_LOCK).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    Ok(parse_lock(&doc, shown))
}

/// The packages of a parsed package-lock.json.
pub fn parse_lock(doc: &Value, location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        // v2/v3: keys are install paths; "" is the project itself.
        for (path, entry) in packages {
            let Some(idx) = path.rfind("node_modules/") else {
                continue;
            };
            if entry.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = &path[idx + "node_modules/".len()..];
            if let Some(p) = package(name, entry, location) {
                out.push(p);
            }
        }
    } else if let Some(deps) = doc.get("dependencies") {
        v1_dependencies(deps, location, 0, &mut out);
    }
    out
}

fn v1_dependencies(deps: &Value, location: &str, depth: usize, out: &mut Vec<Package>) {
    let Some(deps) = deps.as_object() else {
        return;
    };
    if depth > MAX_V1_DEPTH {
        return;
    }
    for (name, entry) in deps {
        if let Some(p) = package(name, entry, location) {
            out.push(p);
        }
        if let Some(nested) = entry.get("dependencies") {
            v1_dependencies(nested, location, depth + 1, out);
        }
    }
}

/// The package of an installed package.json.
pub fn parse_manifest_file(host: &Path, shown: &str) -> Found {
    let bytes = read_host_file(host, shown, MAX_MANIFEST).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{shown}: {e}"))?;
    let Some(name) = doc.get("name").and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    Ok(package(name, &doc, shown).into_iter().collect())
}

fn package(name: &str, entry: &Value, location: &str) -> Option<Package> {
    let version = entry.get("version").and_then(Value::as_str)?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let (namespace, bare) = match name.split_once('/') {
        Some((scope, bare)) if scope.starts_with('@') => (Some(scope), bare),
        _ => (None, name),
    };
    let author = entry.get("author").and_then(person);
    Some(Package {
        kind: PackageKind::Npm,
        name: name.to_string(),
        version: version.to_string(),
        purl: purl("npm", namespace, bare, version, &[]),
        license: declared_license(entry),
        supplier: author.clone(),
        originator: author,
        locations: vec![location.to_string()],
    })
}

/// `license: "MIT"`, the old `license: {type}` and `licenses: [{type}]` forms.
fn declared_license(entry: &Value) -> Option<String> {
    match entry.get("license") {
        Some(Value::String(s)) => return license::normalize(s),
        Some(Value::Object(o)) => {
            return o
                .get("type")
                .and_then(Value::as_str)
                .and_then(license::normalize)
        }
        _ => {}
    }
    let list = entry.get("licenses")?.as_array()?;
    license::all_of(list.iter().filter_map(|l| match l {
        Value::String(s) => Some(s.as_str()),
        v => v.get("type").and_then(Value::as_str),
    }))
}

/// `"Name <email> (url)"` or `{name, email}` as an SPDX person.
fn person(author: &Value) -> Option<String> {
    match author {
        Value::String(s) if !s.trim().is_empty() => {
            let s = s.split(" (").next().unwrap_or(s);
            Some(super::dpkg::person(s))
        }
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str)?;
            Some(match o.get("email").and_then(Value::as_str) {
                Some(email) => format!("Person: {name} ({email})"),
                None => format!("Person: {name}"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfile_v3() {
        let doc: Value = serde_json::from_str(
            r#"{"name":"app","version":"1.0.0","lockfileVersion":3,"requires":true,
            "packages":{"":{"name":"app","version":"1.0.0","dependencies":{"@babel/code-frame":"^7.0.0","ms":"2.1.3"}},
            "node_modules/@babel/code-frame":{"version":"7.23.5","resolved":"https://registry.npmjs.org/@babel/code-frame/-/code-frame-7.23.5.tgz","license":"MIT"},
            "node_modules/ms":{"version":"2.1.3","license":"MIT"},
            "node_modules/debug/node_modules/ms":{"version":"2.0.0","license":"MIT"},
            "node_modules/local":{"resolved":"../local","link":true}}}"#,
        )
        .unwrap();
        let pkgs = parse_lock(&doc, "/app/package-lock.json");
        let purls: Vec<&str> = pkgs.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:npm/%40babel/code-frame@7.23.5",
                "pkg:npm/ms@2.0.0",
                "pkg:npm/ms@2.1.3"
            ]
        );
        assert_eq!(pkgs[0].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn lockfile_v1_nested() {
        let doc: Value = serde_json::from_str(
            r#"{"lockfileVersion":1,"dependencies":{"debug":{"version":"2.6.9","dependencies":{"ms":{"version":"2.0.0"}}}}}"#,
        )
        .unwrap();
        let names: Vec<String> = parse_lock(&doc, "/l").into_iter().map(|p| p.purl).collect();
        assert_eq!(names, ["pkg:npm/debug@2.6.9", "pkg:npm/ms@2.0.0"]);
    }

    #[test]
    fn manifest_forms() {
        let doc: Value = serde_json::from_str(
            r#"{"name":"left-pad","version":"1.3.0","licenses":[{"type":"WTFPL"}],"author":"azer <azer@kodfabrik.com> (http://azer.bike)"}"#,
        )
        .unwrap();
        let p = package("left-pad", &doc, "/n").unwrap();
        assert_eq!(p.license.as_deref(), Some("WTFPL"));
        assert_eq!(
            p.supplier.as_deref(),
            Some("Person: azer (azer@kodfabrik.com)")
        );
    }
}
