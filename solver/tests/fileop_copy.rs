//! COPY/ADD semantics against real directories: trees, modes, owners,
//! mtimes, and the error cases. Tests run as root in CI (owners are checked
//! only then).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_solver::llb::{ChmodOpt, ChownOpt, CopyAction, FileAction, MkdirAction, UserSpec};
use kiln_solver::ops::file::{apply_file_actions, FileOpError, SourceRoot};
use kiln_solver::pattern::parse_dockerignore;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes `path` (with parents) holding `content`, mode `mode`, mtime 1000.
fn file(root: &Path, path: &str, content: &str, mode: u32) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&p, 1000);
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// The context most cases copy from.
fn context() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    file(r, "a.txt", "alpha", 0o644);
    file(r, "b.sh", "#!/bin/sh", 0o755);
    file(r, "home1.txt", "h1", 0o600);
    file(r, "home2.txt", "h2", 0o644);
    file(r, "dir/x.txt", "x", 0o640);
    file(r, "dir/sub/y.md", "y", 0o644);
    file(r, "dir/sub/z.txt", "z", 0o644);
    fs::set_permissions(r.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&r.join("dir/sub"), 2000);
    set_mtime(&r.join("dir"), 3000);
    symlink("a.txt", r.join("link.txt")).unwrap();
    symlink("../../../../etc/hostname", r.join("escape")).unwrap();
    d
}

/// A sorted listing: `path kind mode [content|-> target]`.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = e.path().symlink_metadata().unwrap();
        let line = if md.file_type().is_symlink() {
            format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display())
        } else if md.is_dir() {
            format!("{rel}/ {:o}", md.mode() & 0o7777)
        } else {
            format!(
                "{rel} {:o} {}",
                md.mode() & 0o7777,
                fs::read_to_string(e.path()).unwrap()
            )
        };
        out.push(line);
    }
    out
}

fn copy(src: &str, dest: &str) -> CopyAction {
    CopyAction {
        src_input: 0,
        src: src.to_string(),
        dest: dest.to_string(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        ..Default::default()
    }
}

fn run(ctx: &Path, dest: &Path, actions: Vec<CopyAction>) -> Result<(), FileOpError> {
    let actions: Vec<FileAction> = actions.into_iter().map(FileAction::Copy).collect();
    apply_file_actions(dest, &[SourceRoot::new(ctx)], &actions)
}

#[test]
fn copy_table() {
    type Case = (&'static str, Vec<CopyAction>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "file to new name",
            vec![copy("a.txt", "/out")],
            vec!["out 644 alpha"],
        ),
        (
            "file into dir (trailing slash)",
            vec![copy("a.txt", "/app/")],
            vec!["app/ 755", "app/a.txt 644 alpha"],
        ),
        (
            "leading slash and .. are clamped to the context",
            vec![copy("../../a.txt", "/x/"), copy("/b.sh", "/x/")],
            vec!["x/ 755", "x/a.txt 644 alpha", "x/b.sh 755 #!/bin/sh"],
        ),
        (
            "directory copies its contents",
            vec![copy("dir", "/d")],
            vec![
                "d/ 755",
                "d/sub/ 755",
                "d/sub/y.md 644 y",
                "d/sub/z.txt 644 z",
                "d/x.txt 640 x",
            ],
        ),
        (
            "directory contents into root",
            vec![copy("dir/sub/", "/")],
            vec!["y.md 644 y", "z.txt 644 z"],
        ),
        (
            "wildcard",
            vec![copy("home*", "/h/")],
            vec!["h/ 755", "h/home1.txt 600 h1", "h/home2.txt 644 h2"],
        ),
        (
            "wildcard in a subdirectory component",
            vec![copy("dir/*/*.txt", "/w/")],
            vec!["w/ 755", "w/z.txt 644 z"],
        ),
        (
            "symlink source followed (Dockerfile COPY)",
            vec![copy("link.txt", "/l")],
            vec!["l 644 alpha"],
        ),
        (
            "symlink source kept without follow_symlinks",
            vec![CopyAction {
                follow_symlinks: false,
                ..copy("link.txt", "/l")
            }],
            vec!["l -> a.txt"],
        ),
        (
            "octal chmod on files and dirs",
            vec![CopyAction {
                mode: Some(ChmodOpt::Octal(0o700)),
                ..copy("dir", "/m/")
            }],
            vec![
                "m/ 755",
                "m/sub/ 700",
                "m/sub/y.md 700 y",
                "m/sub/z.txt 700 z",
                "m/x.txt 700 x",
            ],
        ),
        (
            "symbolic chmod with X",
            vec![CopyAction {
                mode: Some(ChmodOpt::Symbolic("u=rwX,go=rX".into())),
                ..copy("dir", "/s")
            }],
            vec![
                "s/ 755",
                "s/sub/ 755",
                "s/sub/y.md 644 y",
                "s/sub/z.txt 644 z",
                "s/x.txt 644 x",
            ],
        ),
        (
            "exclude patterns",
            vec![CopyAction {
                // patternmatcher semantics: `*.md` is only the top level.
                exclude_patterns: vec!["**/*.md".into(), "x.txt".into()],
                ..copy("dir", "/e")
            }],
            vec!["e/ 755", "e/sub/ 755", "e/sub/z.txt 644 z"],
        ),
        (
            "parents with pivot",
            vec![CopyAction {
                parents: true,
                ..copy("dir/./sub/y.md", "/p/")
            }],
            vec!["p/ 755", "p/sub/ 755", "p/sub/y.md 644 y"],
        ),
        (
            "parents without pivot and ** keeps the whole path",
            vec![CopyAction {
                parents: true,
                ..copy("dir/**/*.txt", "/p/")
            }],
            vec![
                "p/ 755",
                "p/dir/ 750",
                "p/dir/sub/ 755",
                "p/dir/sub/z.txt 644 z",
                "p/dir/x.txt 640 x",
            ],
        ),
        (
            "include patterns restrict the copy",
            vec![CopyAction {
                include_patterns: vec!["sub/z.txt".into()],
                ..copy("dir", "/i/")
            }],
            vec!["i/ 755", "i/sub/ 755", "i/sub/z.txt 644 z"],
        ),
        (
            "empty wildcard allowed",
            vec![CopyAction {
                allow_empty_wildcard: true,
                ..copy("nothing*", "/n/")
            }],
            vec![],
        ),
    ];
    let ctx = context();
    for (name, actions, want) in cases {
        let dest = tempfile::tempdir().unwrap();
        run(ctx.path(), dest.path(), actions).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tree(dest.path()), want, "{name}");
    }
}

#[test]
fn copy_into_existing_paths() {
    let ctx = context();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::create_dir_all(d.join("app")).unwrap();
    fs::set_permissions(d.join("app"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(d.join("app/old"), "old").unwrap();
    fs::write(d.join("f"), "replace me").unwrap();
    // An existing directory is copied into even without a trailing slash;
    // an existing file is replaced; the destination dir keeps its mode.
    run(
        ctx.path(),
        d,
        vec![
            copy("a.txt", "/app"),
            copy("b.sh", "/f"),
            copy("dir", "/app"),
        ],
    )
    .unwrap();
    assert_eq!(
        tree(d),
        [
            "app/ 700",
            "app/a.txt 644 alpha",
            "app/old 644 old",
            "app/sub/ 755",
            "app/sub/y.md 644 y",
            "app/sub/z.txt 644 z",
            "app/x.txt 640 x",
            "f 755 #!/bin/sh",
        ]
    );
    // A directory in the way of a file is an error.
    fs::create_dir_all(d.join("app2/x.txt")).unwrap();
    let err = run(ctx.path(), d, vec![copy("dir", "/app2")]).unwrap_err();
    assert!(
        matches!(err, FileOpError::ReplaceDirWithFile { .. }),
        "{err}"
    );
}

#[test]
fn metadata_owner_and_times() {
    let ctx = context();
    let r = ctx.path();
    if is_root() {
        std::os::unix::fs::lchown(r.join("dir/x.txt"), Some(123), Some(456)).unwrap();
    }
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    run(r, d, vec![copy("dir", "/keep/")]).unwrap();
    let md = fs::metadata(d.join("keep/x.txt")).unwrap();
    assert_eq!(md.mtime(), 1000);
    assert_eq!(fs::metadata(d.join("keep/sub")).unwrap().mtime(), 2000);
    // The destination directory keeps its 0755 from creation but takes the
    // source directory's mtime, as BuildKit's copier does.
    let keep = fs::metadata(d.join("keep")).unwrap();
    assert_eq!((keep.mode() & 0o7777, keep.mtime()), (0o755, 3000));
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (123, 456));
    }

    // --chown by name from the DESTINATION's /etc/passwd, applied to every
    // copied path and to the parents the copy creates.
    fs::create_dir(d.join("etc")).unwrap();
    fs::write(
        d.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    fs::write(d.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:\n").unwrap();
    let chown = |user: &str, group: Option<&str>| ChownOpt {
        user: UserSpec::Name(user.into()),
        group: group.map(|g| UserSpec::Name(g.into())),
    };
    if is_root() {
        run(
            r,
            d,
            vec![CopyAction {
                owner: Some(chown("app", Some("staff"))),
                timestamp: Some(42),
                ..copy("dir", "/new/parent/dir")
            }],
        )
        .unwrap();
        for p in [
            "new",
            "new/parent",
            "new/parent/dir",
            "new/parent/dir/sub",
            "new/parent/dir/x.txt",
        ] {
            let md = fs::metadata(d.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), (1000, 50), "{p}");
        }
        for p in [
            "new/parent/dir/sub",
            "new/parent/dir/x.txt",
            "new/parent/dir/sub/z.txt",
        ] {
            assert_eq!(fs::metadata(d.join(p)).unwrap().mtime(), 42, "{p}");
        }
        // Numeric user alone: gid is the same number.
        run(
            r,
            d,
            vec![CopyAction {
                owner: Some(ChownOpt {
                    user: UserSpec::Id(77),
                    group: None,
                }),
                ..copy("a.txt", "/num")
            }],
        )
        .unwrap();
        let md = fs::metadata(d.join("num")).unwrap();
        assert_eq!((md.uid(), md.gid()), (77, 77));
    }
    // A name missing from /etc/passwd is root, as BuildKit's readUser makes it.
    run(
        r,
        d,
        vec![CopyAction {
            owner: Some(chown("nobody", None)),
            ..copy("a.txt", "/x")
        }],
    )
    .unwrap();
    let md = fs::metadata(d.join("x")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

#[test]
fn hard_links_are_preserved_within_one_copy() {
    let ctx = tempfile::tempdir().unwrap();
    let r = ctx.path();
    file(r, "h/one", "same", 0o644);
    fs::hard_link(r.join("h/one"), r.join("h/two")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    run(r, dest.path(), vec![copy("h", "/h")]).unwrap();
    let one = fs::metadata(dest.path().join("h/one")).unwrap();
    let two = fs::metadata(dest.path().join("h/two")).unwrap();
    assert_eq!(one.ino(), two.ino());
    assert_eq!(one.nlink(), 2);
}

#[test]
fn dockerignore_hides_paths() {
    let ctx = context();
    let ignore = parse_dockerignore("*.txt\n!home2.txt\ndir/sub\n").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let src = SourceRoot {
        path: ctx.path(),
        ignore: Some(&ignore),
    };
    let actions = vec![FileAction::Copy(copy(".", "/all/"))];
    apply_file_actions(dest.path(), &[src], &actions).unwrap();
    assert_eq!(
        tree(dest.path()),
        [
            "all/ 755",
            "all/b.sh 755 #!/bin/sh",
            "all/dir/ 750",
            "all/dir/x.txt 640 x",
            "all/escape -> ../../../../etc/hostname",
            "all/home2.txt 644 h2"
        ]
    );
    let err = apply_file_actions(
        dest.path(),
        &[src],
        &[FileAction::Copy(copy("a.txt", "/x"))],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "file not found in build context or excluded by .dockerignore: stat a.txt: no such file or directory"
    );
    // Wildcards never match ignored paths.
    let err = apply_file_actions(
        dest.path(),
        &[src],
        &[FileAction::Copy(copy("home1*", "/x/"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NoMatch { .. }), "{err}");
}

#[test]
fn error_cases() {
    let ctx = context();
    let r = ctx.path();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let err = run(r, d, vec![copy("missing.txt", "/x")]).unwrap_err();
    assert!(
        matches!(err, FileOpError::SourceNotFound { ref path, .. } if path == "missing.txt"),
        "{err}"
    );
    let err = run(r, d, vec![copy("nomatch*", "/x/")]).unwrap_err();
    assert!(matches!(err, FileOpError::NoMatch { .. }), "{err}");
    // A symlink pointing out of the context resolves inside it: not found.
    let err = run(r, d, vec![copy("escape", "/x")]).unwrap_err();
    assert!(matches!(err, FileOpError::SourceNotFound { .. }), "{err}");
    // `..` can't leave the context either.
    let err = run(r, d, vec![copy("../../../../etc/hostname", "/x")]).unwrap_err();
    assert!(matches!(err, FileOpError::SourceNotFound { .. }), "{err}");
    // Several sources into a path that is not a directory are copied in turn,
    // as BuildKit does: the last file wins.
    run(r, d, vec![copy("a.txt", "/two"), copy("b.sh", "/two")]).unwrap();
    assert_eq!(
        std::fs::read(d.join("two")).unwrap(),
        std::fs::read(r.join("b.sh")).unwrap()
    );
    // Without create_dest_path the parent must exist.
    let err = run(
        r,
        d,
        vec![CopyAction {
            create_dest_path: false,
            ..copy("a.txt", "/no/such/x")
        }],
    )
    .unwrap_err();
    assert!(
        matches!(err, FileOpError::DestParentMissing { .. }),
        "{err}"
    );
    // --parents without wildcards requires the path.
    let err = run(
        r,
        d,
        vec![CopyAction {
            parents: true,
            ..copy("dir/./nope", "/p/")
        }],
    )
    .unwrap_err();
    assert!(
        matches!(err, FileOpError::RequiredPathMissing { .. }),
        "{err}"
    );
    let err = apply_file_actions(d, &[], &[FileAction::Copy(copy("a", "/b"))]).unwrap_err();
    assert!(matches!(err, FileOpError::NoSuchInput { .. }), "{err}");
}

#[test]
fn destination_symlinks_stay_inside_the_root() {
    let ctx = context();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let outside = tempfile::tempdir().unwrap();
    // /app -> an absolute host path: inside the root it means <root>/<path>.
    symlink(outside.path(), d.join("app")).unwrap();
    run(ctx.path(), d, vec![copy("a.txt", "/app/")]).unwrap();
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "wrote outside the root"
    );
    let inside = d
        .join(outside.path().strip_prefix("/").unwrap())
        .join("a.txt");
    assert_eq!(fs::read_to_string(inside).unwrap(), "alpha");
    // WORKDIR-style mkdir through the same link stays inside too.
    apply_file_actions(
        d,
        &[],
        &[FileAction::Mkdir(MkdirAction {
            path: "/app/work".into(),
            mode: 0o755,
            make_parents: true,
            owner: None,
            timestamp: None,
        })],
    )
    .unwrap();
    assert!(!outside.path().join("work").exists());
}

#[test]
fn reincluded_paths_inside_ignored_dirs_bring_their_parents() {
    let ctx = context();
    // `dir` is ignored but one file inside is re-included: its parents are
    // created (with the source's modes) only for it.
    let ignore = parse_dockerignore("dir\n!dir/sub/z.txt\n*.sh\n").unwrap();
    let src = SourceRoot {
        path: ctx.path(),
        ignore: Some(&ignore),
    };
    let dest = tempfile::tempdir().unwrap();
    apply_file_actions(dest.path(), &[src], &[FileAction::Copy(copy(".", "/c/"))]).unwrap();
    let listing: Vec<String> = tree(dest.path())
        .into_iter()
        .filter(|l| l.starts_with("c/dir"))
        .collect();
    assert_eq!(
        listing,
        ["c/dir/ 750", "c/dir/sub/ 755", "c/dir/sub/z.txt 644 z"]
    );
    assert!(!dest.path().join("c/b.sh").exists());
    assert_eq!(
        fs::metadata(dest.path().join("c/dir")).unwrap().mtime(),
        3000
    );
}

#[test]
fn xattrs_are_copied_where_the_filesystem_has_them() {
    let ctx = tempfile::tempdir().unwrap();
    let f = ctx.path().join("f");
    fs::write(&f, "x").unwrap();
    if xattr::set(&f, "user.kiln", b"yes").is_err() {
        // tmpfs without user xattrs: nothing to check here, and the copy
        // must still work.
        let dest = tempfile::tempdir().unwrap();
        run(ctx.path(), dest.path(), vec![copy("f", "/f")]).unwrap();
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    run(ctx.path(), dest.path(), vec![copy("f", "/f")]).unwrap();
    assert_eq!(
        xattr::get(dest.path().join("f"), "user.kiln")
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
}

#[test]
fn copies_are_independent_of_their_source_and_replace_what_is_in_the_way() {
    let ctx = context();
    let r = ctx.path();
    let t = nix::sys::time::TimeSpec::new(1234, 567_891_234);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &r.join("b.sh"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    fs::create_dir(d.join("in")).unwrap();
    // In the way: a dangling symlink (never followed), a read-only file, a link to the source.
    symlink("/nonexistent/target", d.join("in/a.txt")).unwrap();
    fs::write(d.join("in/b.sh"), "old").unwrap();
    fs::set_permissions(d.join("in/b.sh"), fs::Permissions::from_mode(0o444)).unwrap();
    symlink(r.join("home1.txt"), d.join("in/home1.txt")).unwrap();
    run(
        r,
        d,
        vec![
            copy("a.txt", "/in/"),
            copy("b.sh", "/in/"),
            copy("home1.txt", "/in/"),
        ],
    )
    .unwrap();
    assert!(!Path::new("/nonexistent/target").exists());
    let b = fs::symlink_metadata(d.join("in/b.sh")).unwrap();
    assert!(b.is_file());
    assert_eq!(
        (b.mode() & 0o7777, b.mtime(), b.mtime_nsec()),
        (0o755, 1234, 567_891_234)
    );
    assert_ne!(b.ino(), fs::metadata(r.join("b.sh")).unwrap().ino());

    // The source changes after the copy (in place, as `>>` and chmod do): the copy does not.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(r.join("a.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b" changed").unwrap();
    fs::set_permissions(r.join("home1.txt"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(r.join("home1.txt"), "rewritten").unwrap();
    assert_eq!(
        tree(&d.join("in")),
        ["a.txt 644 alpha", "b.sh 755 #!/bin/sh", "home1.txt 600 h1"]
    );
}

#[test]
fn many_files_copied_in_parallel_batches_keep_contents_and_directory_times() {
    let ctx = tempfile::tempdir().unwrap();
    let r = ctx.path();
    // More files than one batch, in nested directories with their own times and modes.
    for i in 0..4500 {
        file(
            r,
            &format!("d{}/e{}/f{i}", i % 3, i % 5),
            &format!("file {i}"),
            0o640 | (i % 2) as u32,
        );
    }
    for a in 0..3 {
        for b in 0..5 {
            set_mtime(&r.join(format!("d{a}/e{b}")), 5000 + b);
        }
        fs::set_permissions(r.join(format!("d{a}")), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&r.join(format!("d{a}")), 4000 + a);
    }
    // Around the one-read size limit, and an empty file.
    let sizes = [0usize, 65535, 65536, 65537, 300_000];
    for n in sizes {
        let body: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        fs::write(r.join(format!("size{n}")), &body).unwrap();
    }
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    run(r, d, vec![copy(".", "/out/")]).unwrap();
    for n in sizes {
        let body: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        assert_eq!(
            fs::read(d.join(format!("out/size{n}"))).unwrap(),
            body,
            "{n}"
        );
    }
    for i in [0, 1, 2047, 4095, 4096, 4499] {
        let p = d.join(format!("out/d{}/e{}/f{i}", i % 3, i % 5));
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("file {i}"));
        let md = fs::metadata(&p).unwrap();
        assert_eq!(
            (md.mode() & 0o777, md.mtime()),
            (0o640 | (i % 2) as u32, 1000)
        );
    }
    let count = walkdir::WalkDir::new(d.join("out"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(count, 4500 + sizes.len());
    for a in 0..3 {
        let md = fs::metadata(d.join(format!("out/d{a}"))).unwrap();
        assert_eq!((md.mode() & 0o777, md.mtime()), (0o555, 4000 + a));
        for b in 0..5 {
            assert_eq!(
                fs::metadata(d.join(format!("out/d{a}/e{b}")))
                    .unwrap()
                    .mtime(),
                5000 + b
            );
        }
    }
    for a in 0..3 {
        fs::set_permissions(r.join(format!("d{a}")), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
