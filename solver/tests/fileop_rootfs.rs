//! COPY against a real image root filesystem (the busybox rootfs of the test
//! environment, testdata/env/setup.sh): a whole-root copy is identical to its
//! source, and `--chown` names resolve from the copied /etc/passwd.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_solver::llb::{ChownOpt, CopyAction, FileAction, UserSpec};
use kiln_solver::ops::file::{
    apply_file_actions, apply_file_actions_with, FileOpOptions, SourceRoot,
};

/// `KILN_TEST_ROOTFS_AMD64` from the environment file; fails (never skips)
/// without it.
fn rootfs() -> PathBuf {
    let env_dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
    let env_file = Path::new(&env_dir).join("env");
    let text = fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `bash testdata/env/setup.sh start` to create the test environment",
            env_file.display()
        )
    });
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("KILN_TEST_ROOTFS_AMD64="))
        .unwrap_or_else(|| {
            panic!(
                "KILN_TEST_ROOTFS_AMD64 missing from {}; rerun testdata/env/setup.sh",
                env_file.display()
            )
        });
    PathBuf::from(value)
}

/// Every path with its type, mode, owner, mtime, size and link target.
fn listing(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let target = fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!(
                "{} {:o} {}:{} {} {} {}",
                e.path().strip_prefix(root).unwrap().display(),
                md.mode(),
                md.uid(),
                md.gid(),
                md.mtime(),
                if md.is_dir() { 0 } else { md.len() },
                target
            )
        })
        .collect()
}

fn copy(src: &str, dest: &str) -> CopyAction {
    CopyAction {
        src: src.into(),
        dest: dest.into(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        ..Default::default()
    }
}

#[test]
fn whole_root_copy_is_identical() {
    let src = rootfs();
    let dest = tempfile::tempdir().unwrap();
    apply_file_actions(
        dest.path(),
        &[SourceRoot::new(&src)],
        &[FileAction::Copy(copy("/", "/"))],
    )
    .unwrap();
    let want = listing(&src);
    assert!(want.len() > 100, "the busybox rootfs looks empty");
    assert_eq!(listing(dest.path()), want);
}

#[test]
fn chown_names_come_from_the_destination_root() {
    let src = rootfs();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let inputs = [SourceRoot::new(&src)];
    apply_file_actions(d, &inputs, &[FileAction::Copy(copy("/etc", "/etc"))]).unwrap();
    let chown = ChownOpt {
        user: UserSpec::Name("app".into()),
        group: None,
    };
    // /linuxrc is an absolute symlink to /bin/busybox: followed inside the
    // source root, so the binary itself is copied.
    apply_file_actions(
        d,
        &inputs,
        &[FileAction::Copy(CopyAction {
            owner: Some(chown),
            ..copy("/linuxrc", "/home/app/bin/")
        })],
    )
    .unwrap();
    let md = fs::metadata(d.join("home/app/bin/linuxrc")).unwrap();
    assert!(md.is_file());
    assert_eq!(
        md.len(),
        fs::metadata(src.join("bin/busybox")).unwrap().len()
    );
    for p in ["home", "home/app", "home/app/bin", "home/app/bin/linuxrc"] {
        let md = fs::metadata(d.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{p}");
    }
}

#[test]
fn link_copies_resolve_names_from_the_image_below() {
    // COPY --link writes into an empty directory: names come from the base.
    let base = rootfs();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "x").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let action = FileAction::Copy(CopyAction {
        owner: Some(ChownOpt {
            user: UserSpec::Name("app".into()),
            group: Some(UserSpec::Name("app".into())),
        }),
        ..copy("f", "/data/f")
    });
    let inputs = [SourceRoot::new(ctx.path())];
    // Without the base the name is unknown: root, as BuildKit does.
    apply_file_actions(dest.path(), &inputs, std::slice::from_ref(&action)).unwrap();
    let md = fs::metadata(dest.path().join("data/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    let opts = FileOpOptions {
        users_root: Some(&base),
        ..Default::default()
    };
    apply_file_actions_with(dest.path(), &inputs, &[action], &opts).unwrap();
    let md = fs::metadata(dest.path().join("data/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert!(
        !dest.path().join("etc").exists(),
        "nothing but the copy lands in the layer"
    );
}
