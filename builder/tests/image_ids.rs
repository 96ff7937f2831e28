//! One image ID everywhere: what `kiln build -q` / `--iidfile` print (the config
//! digest of a single-platform image, the index digest of a multi-platform one, as
//! buildx prints them) is what `kiln images` lists and what inspect, tag, push, save
//! and rmi accept, in full or as a unique prefix. An untagged build is kept as
//! `<none>` and survives `kiln prune -a`. skopeo reads what kiln pushed and saved.

mod support;

use std::process::Command;
use support::{read_json, stdout_ok, unique, Build, TestEnv};

fn ok(b: &Build, args: &[&str]) -> String {
    stdout_ok(&b.kiln(args), &format!("kiln {args:?}"))
}

fn skopeo_raw(target: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", target])
        .output()
        .expect("run skopeo");
    serde_json::from_slice(stdout_ok(&out, &format!("skopeo inspect {target}")).as_bytes()).unwrap()
}

fn sha256_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    format!(
        "sha256:{}",
        stdout_ok(&out, "sha256sum")
            .split_whitespace()
            .next()
            .unwrap()
    )
}

/// `kiln build -q --iidfile` of the context; returns the ID printed (checked equal to the file's).
fn build_quiet(b: &Build, extra: &[&str]) -> String {
    let iid = b.path("iid");
    let ctx = b.ctx();
    let mut args = vec!["build", "-q", "--iidfile", iid.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let id = stdout_ok(&b.kiln(&args), "kiln build -q")
        .trim()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap(),
        id,
        "-q and --iidfile agree"
    );
    id
}

fn inspect_id(b: &Build, what: &str) -> String {
    ok(b, &["inspect", "--format", "{{.Id}}", what])
        .trim()
        .to_string()
}

/// The `kiln images` rows as (repository, tag, id) triples.
fn listing(b: &Build) -> Vec<(String, String, String)> {
    ok(
        b,
        &[
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}} {{.Tag}} {{.ID}}",
        ],
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f[0].to_string(), f[1].to_string(), f[2].to_string())
    })
    .collect()
}

#[test]
fn untagged_build_id_is_accepted_everywhere_and_survives_prune() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("f", "the image id\n");
    b.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    let id = build_quiet(&b, &[]);
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    // It is the config digest: the root entry of the store's index names the manifest.
    let index = read_json(&b.root.path().join("content/index.json"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one unnamed entry: {index}");
    assert!(entries[0]["annotations"]["org.opencontainers.image.ref.name"].is_null());
    let manifest = read_json(&b.blob(entries[0]["digest"].as_str().unwrap()));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(
        sha256_file(&b.blob(config_digest)),
        id,
        "the ID is the config's digest"
    );

    assert_eq!(
        listing(&b),
        [("<none>".to_string(), "<none>".to_string(), id.clone())]
    );
    let hex = id.trim_start_matches("sha256:");
    for what in [id.as_str(), &hex[..12], &format!("sha256:{}", &hex[..8])] {
        assert_eq!(inspect_id(&b, what), id, "inspect {what}");
    }

    // Pruning the build cache keeps it.
    ok(&b, &["prune", "-a", "--force"]);
    assert_eq!(inspect_id(&b, &hex[..12]), id);
    let tar = b.path("saved.tar");
    ok(&b, &["save", "-o", tar.to_str().unwrap(), &hex[..12]]);
    let saved = skopeo_raw(&format!("docker-archive:{}", tar.display()));
    assert_eq!(saved["config"]["digest"], id.as_str());
    // The unnamed image, after the prune, in the store and in the archive.
    assert_eq!(b.validate()[0].images, 1);
    support::validate_archive(&tar);

    let pushed = format!("{}/{}:1", env.registry(), unique("platform-ids-push"));
    ok(&b, &["push", &hex[..12], &pushed]);
    let remote = skopeo_raw(&format!("docker://{pushed}"));
    assert_eq!(remote["config"]["digest"], id.as_str());
    support::validate_remote(&pushed);
    // Without a destination an ID names no repository.
    let out = b.kiln(&["push", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names no repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tagging replaces the <none> row; removing the tag deletes the image.
    ok(&b, &["tag", &hex[..12], "platform-ids:1"]);
    assert_eq!(
        listing(&b),
        [("platform-ids".to_string(), "1".to_string(), id.clone())]
    );
    assert_eq!(inspect_id(&b, "platform-ids:1"), id);
    ok(&b, &["rmi", "platform-ids:1"]);
    assert!(listing(&b).is_empty());

    // An untagged image goes with `rmi ID`.
    // (The cache was pruned: the rebuild's history times, and so its ID, are new.)
    let id = build_quiet(&b, &[]);
    assert_eq!(listing(&b).len(), 1);
    let out = ok(&b, &["rmi", &id.trim_start_matches("sha256:")[..12]]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(listing(&b).is_empty());
    let out = b.kiln(&["inspect", &id]);
    assert!(!out.status.success(), "the image is gone");
}

#[test]
fn multi_platform_build_id_is_the_index_digest() {
    let b = Build::new();
    b.write("f", "two platforms\n");
    b.write(
        "Dockerfile",
        "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n",
    );
    let id = build_quiet(&b, &["--platform", "linux/amd64,linux/arm64"]);
    let index = read_json(&b.root.path().join("content/index.json"));
    let root = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(root, id, "the ID is the index's digest");
    assert_eq!(sha256_file(&b.blob(root)), id);
    let stored = read_json(&b.blob(root));
    assert_eq!(stored["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        listing(&b),
        [("<none>".to_string(), "<none>".to_string(), id.clone())]
    );
    let hex = id.trim_start_matches("sha256:");
    let arch = ok(
        &b,
        &[
            "inspect",
            "--platform",
            "linux/arm64",
            "--format",
            "{{.Architecture}}",
            &hex[..12],
        ],
    );
    assert_eq!(arch.trim(), "arm64");
    assert_eq!(inspect_id(&b, &hex[..12]), id);
    let reports = support::validate_store(b.root.path(), kiln_oci::walk::Partial::Refuse);
    assert_eq!((reports[0].indexes, reports[0].images), (1, 2));
}
