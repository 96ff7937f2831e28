//! Keeps the crate dependency direction of DEVELOPERS.md honest:
//! builder -> frontend, solver, registry-client; frontend -> solver;
//! registry-client and solver depend on no other kiln crate but kiln-oci, the vocabulary at
//! the bottom, which every crate uses and which depends on none.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn kiln_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null()) // normal dependencies, not dev/build
                .filter_map(|d| d["name"].as_str())
                .filter(|d| members.contains(*d))
                .map(String::from)
                .collect();
            (name, deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_in_the_allowed_direction() {
    let deps = kiln_dependencies();
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "kiln",
            &["kiln-frontend", "kiln-solver", "kiln-registry", "kiln-oci"][..],
        ),
        ("kiln-frontend", &["kiln-solver", "kiln-oci"][..]),
        ("kiln-solver", &["kiln-oci"][..]),
        ("kiln-registry", &["kiln-oci"][..]),
        ("kiln-oci", &[][..]),
    ]);
    assert_eq!(
        deps.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        allowed.keys().copied().collect::<BTreeSet<_>>(),
        "workspace members changed: update this test and DEVELOPERS.md together"
    );
    for (krate, uses) in &deps {
        let ok = allowed[krate.as_str()];
        if krate != "kiln-oci" {
            assert!(
                uses.contains("kiln-oci"),
                "{krate} does not use kiln-oci: the vocabulary is one for the whole workspace"
            );
        }
        for dep in uses {
            assert!(
                ok.contains(&dep.as_str()),
                "{krate} must not depend on {dep}"
            );
        }
    }
}
