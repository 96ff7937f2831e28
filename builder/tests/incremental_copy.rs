//! Incremental COPY: a copy step re-run because some of its sources changed takes the
//! unchanged files over from its previous result. The image must be byte for byte the
//! image a cold build of the same input makes (layer blobs, diffIDs, config), whatever
//! the edit: content, a new file, a deleted one, a mode, a file turned into a directory
//! and back, an edit keeping size and mtime. Its layer blob is resumed from the previous
//! blob's shared prefix (only what follows the first change is tarred and compressed) and
//! still equals the cold build's.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::{busybox, read_json, Build, TestEnv};

const TAG: &str = "kiln-test/copyinc:latest";

/// The context: a few directories of files of varied sizes, a symlink, an executable.
fn fill(b: &Build) {
    for d in 0..4 {
        for f in 0..12 {
            let body = format!("dir {d} file {f}\n").repeat(1 + (d * 12 + f) % 7);
            b.write(&format!("a/d{d}/f{f:02}.txt"), &body);
        }
    }
    b.write("a/tool.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(b.ctx().join("a/tool.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("d0/f00.txt", b.ctx().join("a/link")).unwrap();
    b.write("big.bin", &"0123456789abcdef".repeat(64 * 1024));
    // Sorted first, over three 1 MiB chunks: the edits below come after it in the tar.
    let first: String = (0..360_000u32)
        .map(|i| format!("{:08x}\n", i.wrapping_mul(2_654_435_761)))
        .collect();
    b.write("0big.txt", &first);
}

thread_local! {
    /// How many layer blobs this thread's last build resumed from an earlier blob (from
    /// the debug log).
    static RESUMED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Builds the context; returns the metadata file's JSON and how many files the copy steps
/// took over from their previous results (from the debug log).
fn build(b: &Build, epoch: Option<&str>) -> (serde_json::Value, usize) {
    let meta = b.path("meta.json");
    let _ = std::fs::remove_file(&meta);
    let mut cmd = Command::new(support::kiln_bin());
    cmd.arg("--debug")
        .arg("--root")
        .arg(b.root.path())
        .args(["build", "--progress", "plain", "-t", TAG, "--metadata-file"])
        .arg(&meta)
        .arg(b.ctx())
        // The last copy would stream its layer from its sources (no directory to take
        // files over from; streamed_copy.rs covers that): here both copies keep theirs.
        .env("KILN_STREAMED_COPY", "0");
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e);
    }
    let out = cmd.output().expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln build failed:\n{stderr}");
    RESUMED.set(stderr.matches("layer blob resumed").count());
    let taken = stderr
        .lines()
        .filter_map(|l| l.split("taken_over=").nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    (read_json(&meta), taken)
}

/// The image as comparable bytes (see `Build::image_without_times`).
fn image(b: &Build) -> (serde_json::Value, serde_json::Value) {
    b.image_without_times(&format!("docker.io/{TAG}"))
}

/// Builds a copy of `b`'s context (times kept) in a fresh state directory.
fn cold(b: &Build, epoch: Option<&str>) -> Build {
    let c = Build::new();
    let st = Command::new("cp")
        .arg("-a")
        .arg(b.ctx())
        .arg(c.ctx())
        .status()
        .unwrap();
    assert!(st.success());
    let (_, taken) = build(&c, epoch);
    assert_eq!(taken, 0, "a cold build has nothing to take over");
    c
}

#[test]
fn incremental_copies_give_the_image_a_cold_build_gives() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY . /app/\nCOPY --chmod=640 a/ /b/\n",
            busybox(&env)
        ),
    );
    fill(&b);
    let (first, taken) = build(&b, None);
    assert_eq!(taken, 0);
    let ctx = b.ctx();
    let keep = ctx.join("a/d3/f11.txt");
    let keep_mode = std::fs::metadata(&keep).unwrap().mode();

    type Edit = (&'static str, fn(&Path));
    let edits: [Edit; 7] = [
        ("edit one file", |c| {
            std::fs::write(c.join("a/d0/f01.txt"), "changed\n").unwrap()
        }),
        ("add one file", |c| {
            std::fs::write(c.join("a/d1/new.txt"), "new\n").unwrap()
        }),
        ("delete one file", |c| {
            std::fs::remove_file(c.join("a/d2/f05.txt")).unwrap()
        }),
        ("chmod one file", |c| {
            std::fs::set_permissions(c.join("a/d2/f06.txt"), PermissionsExt::from_mode(0o600))
                .unwrap()
        }),
        ("a file becomes a directory", |c| {
            std::fs::remove_file(c.join("a/d1/f03.txt")).unwrap();
            std::fs::create_dir(c.join("a/d1/f03.txt")).unwrap();
            std::fs::write(c.join("a/d1/f03.txt/inner"), "inner\n").unwrap();
        }),
        ("a directory becomes a file", |c| {
            std::fs::remove_dir_all(c.join("a/d2")).unwrap();
            std::fs::write(c.join("a/d2"), "now a file\n").unwrap();
        }),
        ("same size and mtime, new bytes", |c| {
            let p = c.join("a/d0/f02.txt");
            let before = std::fs::metadata(&p).unwrap();
            let mut body = std::fs::read(&p).unwrap();
            body[0] = b'X';
            std::fs::write(&p, body).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(before.modified().unwrap())
                .unwrap();
        }),
    ];
    let mut last = first["containerimage.digest"].clone();
    for (what, edit) in edits {
        edit(&ctx);
        let (meta, taken) = build(&b, None);
        assert_ne!(meta["containerimage.digest"], last, "{what}: a new image");
        last = meta["containerimage.digest"].clone();
        // Both copies take most of their files over (/app: ~50, /b: ~49, fewer once a
        // directory of 12 is gone).
        assert!(taken >= 70, "{what}: only {taken} files taken over");
        // /app's blob starts with the unchanged 0big.txt: resumed after it.
        assert_eq!(RESUMED.get(), 1, "{what}: /app's layer blob resumed");
        let c = cold(&b, None);
        assert_eq!(image(&b), image(&c), "{what}: incremental vs cold image");
    }
    // With SOURCE_DATE_EPOCH the whole image is reproducible: the manifests are equal.
    std::fs::write(ctx.join("a/d0/f00.txt"), "last edit\n").unwrap();
    let (meta, taken) = build(&b, Some("1700000000"));
    assert!(taken >= 70, "only {taken} files taken over");
    let c = cold(&b, Some("1700000000"));
    let (cold_meta, _) = build(&c, Some("1700000000"));
    assert_eq!(
        meta["containerimage.digest"],
        cold_meta["containerimage.digest"]
    );
    assert_eq!(
        std::fs::read(b.blob(meta["containerimage.digest"].as_str().unwrap())).unwrap(),
        std::fs::read(c.blob(cold_meta["containerimage.digest"].as_str().unwrap())).unwrap()
    );

    // `--no-cache`: nothing comes from earlier results, not even files.
    let st = b.kiln(&[
        "build",
        "--no-cache",
        "--debug",
        "-t",
        TAG,
        b.ctx().to_str().unwrap(),
    ]);
    assert!(st.status.success());
    assert!(
        !String::from_utf8_lossy(&st.stderr).contains("taken_over="),
        "--no-cache copies afresh"
    );

    // The layers sharing a taken-over file still hold it as first copied: a later RUN
    // changing it (through overlayfs) changes none of them.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY . /app/\nCOPY --chmod=640 a/ /b/\nRUN chmod 000 /app/a/d3/f11.txt && echo more >> /app/a/d3/f11.txt\n",
            busybox(&env)
        ),
    );
    build(&b, None);
    let body = std::fs::read(&keep).unwrap();
    let mut shared = 0;
    for layer in std::fs::read_dir(b.root.path().join("layers")).unwrap() {
        let p = layer.unwrap().path().join("app/a/d3/f11.txt");
        if let Ok(md) = std::fs::symlink_metadata(&p) {
            if md.nlink() > 1 {
                shared += 1;
                assert_eq!(md.mode(), keep_mode, "{}", p.display());
                assert_eq!(std::fs::read(&p).unwrap(), body, "{}", p.display());
            }
        }
    }
    assert!(shared >= 2, "the file is shared by the copies' layers");
}

/// A one-layer stage is read straight from its layer directory, whose files other layers
/// may share: a writable bind of it must not reach them.
#[test]
fn a_writable_bind_mount_of_a_one_layer_stage_leaves_the_layer_alone() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("f", "original\n");
    b.write(
        "Dockerfile",
        &format!(
            "FROM scratch AS one\nCOPY f /f\n\
             FROM {}\n\
             RUN --mount=type=bind,from=one,target=/m,rw echo changed > /m/f\n\
             COPY --from=one /f /copied\n",
            busybox(&env)
        ),
    );
    let (_, _) = build(&b, None);
    let root = b.unpack(&format!("docker.io/{TAG}"));
    assert_eq!(support::read(&root.join("copied")), "original\n");
}

/// A layer blob's resume index lives and dies with the blob: `kiln prune` removes both, and
/// the pointer to it.
#[test]
fn prune_removes_a_blob_with_its_resume_index() {
    let b = Build::new();
    b.write("Dockerfile", "FROM scratch\nCOPY big.txt /big.txt\n");
    // Over one 1 MiB chunk: the blob gets an index.
    b.write("big.txt", &"index me\n".repeat(200_000));
    let (_, _) = build(&b, None);
    let manifest = b.manifest(&format!("docker.io/{TAG}"));
    let blob = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = blob.trim_start_matches("sha256:");
    let indexes = b.root.path().join("content/.kiln/blobindex");
    assert!(b.blob(&blob).is_file());
    assert!(indexes.join(hex).is_file(), "the blob has its index");
    let pointers = || -> Vec<String> {
        std::fs::read_dir(indexes.join("by-key"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(pointers(), vec![hex.to_string()]);
    support::stdout_ok(&b.kiln(&["rmi", TAG]), "kiln rmi");
    support::stdout_ok(&b.kiln(&["prune", "--all", "--force"]), "kiln prune");
    assert!(!b.blob(&blob).exists(), "the blob is pruned");
    assert!(!indexes.join(hex).exists(), "its index with it");
    assert!(pointers().is_empty(), "and the pointer to it");
}
