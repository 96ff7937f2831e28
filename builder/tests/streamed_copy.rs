//! Streamed COPY layers: a copy that is the last step of the exported image writes its
//! layer tar straight from its sources. The image must be byte for byte the one the
//! directory-based copy makes (`KILN_STREAMED_COPY=0`): same blobs, same diffIDs, same
//! config, whatever the copy does (chown, chmod, symlinks, hard links, empty directories,
//! `.dockerignore`, wildcards, `--exclude`, `--parents`, several sources, a destination
//! file, `--link`). A later step that needs the files unpacks the layer from its blob.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::{busybox, read_json, Build, TestEnv};

const TAG: &str = "kiln-test/streamcopy:latest";

/// A context with a bit of everything a copy treats specially.
fn fill(b: &Build) {
    for d in 0..3 {
        for f in 0..5 {
            let body = format!("dir {d} file {f}\n").repeat(1 + (d * 5 + f) % 4);
            b.write(&format!("src/d{d}/f{f}.txt"), &body);
        }
    }
    b.write("src/d0/skip.log", "a log\n");
    b.write("src/tool.sh", "#!/bin/sh\necho hi\n");
    let ctx = b.ctx();
    std::fs::set_permissions(ctx.join("src/tool.sh"), PermissionsExt::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("d0/f0.txt", ctx.join("src/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("src/abs-link")).unwrap();
    std::fs::hard_link(ctx.join("src/d1/f1.txt"), ctx.join("src/d1/hard.txt")).unwrap();
    std::fs::create_dir_all(ctx.join("src/empty/deeper")).unwrap();
    b.write("a.txt", "file a\n");
    b.write("b.txt", "file b\n");
    b.write("dup/one/x.txt", "first x\n");
    b.write("dup/two/x.txt", "second x\n");
    b.write("secret.key", "ignored\n");
    b.write(".dockerignore", "secret.key\n**/*.tmp\n");
    b.write("src/d2/junk.tmp", "ignored too\n");
    // A long name (GNU long-name entries in the tar).
    b.write(&format!("src/{}/long.txt", "n".repeat(120)), "long\n");
}

thread_local! {
    /// How many layer blobs this thread's last build resumed from an earlier blob (from
    /// the debug log).
    static RESUMED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Builds `ctx` in `state` (streaming unless `off`); returns the metadata JSON and how
/// many copies streamed their layer (from the debug log).
fn build(state: &Build, ctx: &Path, off: bool, extra: &[&str]) -> (serde_json::Value, usize) {
    let meta = state.path("meta.json");
    let _ = std::fs::remove_file(&meta);
    let mut cmd = Command::new(support::kiln_bin());
    cmd.arg("--debug")
        .arg("--root")
        .arg(state.root.path())
        .args(["build", "--progress", "plain", "-t", TAG, "--metadata-file"])
        .arg(&meta)
        .args(extra)
        .arg(ctx);
    if off {
        cmd.env("KILN_STREAMED_COPY", "0");
    }
    let out = cmd.output().expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln build failed:\n{stderr}");
    RESUMED.set(stderr.matches("layer blob resumed").count());
    let streamed = stderr
        .lines()
        .filter(|l| l.contains("copy streamed"))
        .count();
    (read_json(&meta), streamed)
}

/// The image as comparable bytes (see `Build::image_without_times`).
fn image(b: &Build) -> (serde_json::Value, serde_json::Value) {
    b.image_without_times(&format!("docker.io/{TAG}"))
}

/// Builds `dockerfile` streamed and unstreamed in fresh states; asserts the images are
/// equal and that the streamed build streamed `want` copies.
fn same_image(env: &TestEnv, what: &str, dockerfile: &str, want: usize) {
    let b = Build::new();
    fill(&b);
    b.write("Dockerfile", &dockerfile.replace("{BASE}", &busybox(env)));
    let (_, streamed) = build(&b, &b.ctx(), false, &[]);
    assert_eq!(streamed, want, "{what}: copies streamed");
    let off = Build::new();
    let (_, none) = build(&off, &b.ctx(), true, &[]);
    assert_eq!(none, 0, "{what}: KILN_STREAMED_COPY=0 streams nothing");
    assert_eq!(image(&b), image(&off), "{what}: streamed vs directory copy");
}

#[test]
fn streamed_copies_give_the_image_the_directory_copy_gives() {
    let env = TestEnv::load();
    let cases: [(&str, &str, usize); 11] = [
        ("whole context", "FROM {BASE}\nCOPY . /ctx/\n", 1),
        (
            "chown and chmod",
            "FROM {BASE}\nCOPY --chown=1234:5678 --chmod=640 src/ /dst/\n",
            1,
        ),
        (
            "chown by name",
            "FROM {BASE}\nCOPY --chown=nobody:nogroup src /\n",
            1,
        ),
        (
            "several sources into the root",
            "FROM {BASE}\nCOPY a.txt src/ b.txt /\n",
            1,
        ),
        (
            "a wildcard",
            "FROM {BASE}\nCOPY src/d0/f?.txt src/*.sh /\n",
            1,
        ),
        (
            // The second match of *.txt lands where a.txt went: copied again unstreamed.
            "a source twice",
            "FROM {BASE}\nCOPY a.txt b.txt *.txt /\n",
            0,
        ),
        (
            "a destination file",
            "FROM {BASE}\nCOPY a.txt /renamed.txt\n",
            1,
        ),
        (
            "exclude",
            "FROM {BASE}\nCOPY --exclude=*.log --exclude=d1 src/ /ctx/\n",
            1,
        ),
        (
            "parents",
            "FROM {BASE}\nCOPY --parents src/d*/f1.txt /\n",
            1,
        ),
        ("link onto scratch", "FROM {BASE}\nCOPY --link src/ /\n", 1),
        (
            // Two matches land on /x.txt: the streamed copy steps back and copies again.
            "two sources onto one path",
            "FROM scratch\nCOPY dup/*/x.txt /\n",
            0,
        ),
    ];
    for (what, dockerfile, want) in cases {
        same_image(&env, what, dockerfile, want);
    }
}

#[test]
fn a_streamed_layer_is_unpacked_when_a_later_build_needs_its_files() {
    let env = TestEnv::load();
    let b = Build::new();
    fill(&b);
    let copy = format!("FROM {}\nCOPY . /ctx/\n", busybox(&env));
    b.write("Dockerfile", &copy);
    let (first, streamed) = build(&b, &b.ctx(), false, &[]);
    assert_eq!(streamed, 1);
    let lazy = b.root.path().join("layers/.streamed");
    assert_eq!(
        std::fs::read_dir(&lazy).unwrap().count(),
        1,
        "one layer kept as its blob"
    );

    // Another compression: the layer is unpacked and tarred again, to the same tar.
    let off = Build::new();
    build(&off, &b.ctx(), true, &[]);
    let zstd = [
        "--output",
        "type=image,compression=zstd,force-compression=true",
    ];
    build(&b, &b.ctx(), false, &zstd);
    build(&off, &b.ctx(), true, &zstd);
    assert_eq!(image(&b), image(&off), "zstd export of a streamed layer");

    // A RUN on top: the COPY is a cache hit whose files the step needs.
    b.write(
        "Dockerfile",
        &format!(
            "{copy}RUN cat /ctx/src/d0/f0.txt /ctx/src/link > /seen && ls -ln /ctx/src/d1 > /ls\n"
        ),
    );
    let (second, streamed) = build(&b, &b.ctx(), false, &[]);
    assert_eq!(streamed, 0, "the COPY is cached");
    assert_ne!(
        first["containerimage.digest"],
        second["containerimage.digest"]
    );
    let rootfs = b.unpack(&format!("docker.io/{TAG}"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "dir 0 file 0\ndir 0 file 0\n"
    );
    let ls = std::fs::read_to_string(rootfs.join("ls")).unwrap();
    assert!(
        ls.contains("hard.txt") && ls.contains(" 2 "),
        "hard link kept: {ls}"
    );

    // A local export of a streamed result is its files.
    b.write("Dockerfile", &copy.replace("/ctx/", "/out/"));
    let dest = b.path("local-out");
    let (_, streamed) = build(
        &b,
        &b.ctx(),
        false,
        &["--output", &format!("type=local,dest={}", dest.display())],
    );
    assert!(streamed <= 1);
    assert_eq!(
        std::fs::read_to_string(dest.join("out/src/d2/f4.txt")).unwrap(),
        "dir 2 file 4\n".repeat(3)
    );
    assert!(!dest.join("out/secret.key").exists(), ".dockerignore holds");
    assert_eq!(
        std::fs::read_link(dest.join("out/src/abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn an_edited_context_streams_again_to_the_image_a_cold_directory_copy_gives() {
    let env = TestEnv::load();
    let b = Build::new();
    fill(&b);
    // Over three 1 MiB chunks, sorted before the edits below: each streamed blob resumes
    // from the one before after it.
    let big: String = (0..360_000u32)
        .map(|i| format!("{:08x}\n", i.wrapping_mul(2_654_435_761)))
        .collect();
    b.write("0big.txt", &big);
    b.write(
        "Dockerfile",
        &format!("FROM {}\nCOPY . /ctx/\n", busybox(&env)),
    );
    let (_, streamed) = build(&b, &b.ctx(), false, &[]);
    assert_eq!(streamed, 1);
    assert_eq!(RESUMED.get(), 0, "nothing to resume from yet");
    let ctx = b.ctx();
    type Edit = (&'static str, fn(&Path));
    let edits: [Edit; 3] = [
        ("edit one file", |c| {
            std::fs::write(c.join("src/d0/f1.txt"), "changed\n").unwrap()
        }),
        ("add one file", |c| {
            std::fs::write(c.join("src/d1/new.txt"), "new\n").unwrap()
        }),
        ("a directory becomes a file", |c| {
            std::fs::remove_dir_all(c.join("src/d2")).unwrap();
            std::fs::write(c.join("src/d2"), "now a file\n").unwrap();
        }),
    ];
    for (what, edit) in edits {
        edit(&ctx);
        let (_, streamed) = build(&b, &ctx, false, &[]);
        assert_eq!(streamed, 1, "{what}: streamed again");
        assert_eq!(
            RESUMED.get(),
            1,
            "{what}: resumed from the last streamed blob"
        );
        let cold = Build::new();
        build(&cold, &ctx, true, &[]);
        assert_eq!(
            image(&b),
            image(&cold),
            "{what}: streamed edit vs cold directory copy"
        );
    }
}
