//! ADD's archive unpacking and the Mkfile/Mkdir/Rm/Symlink actions.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_solver::llb::{
    ChownOpt, CopyAction, FileAction, MkdirAction, MkfileAction, RmAction, SymlinkAction, UserSpec,
};
use kiln_solver::ops::file::{apply_file_actions, FileOpError, SourceRoot};

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode, uid) in [
        ("top.txt", "top", 0o640, 7u64),
        ("d/in.txt", "in", 0o600, 8),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(12345);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn compressed() -> Vec<(&'static str, Vec<u8>)> {
    let raw = tar_bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&raw).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&raw).unwrap();
    vec![
        ("plain.tar", raw.clone()),
        ("a.tar.gz", gz.finish().unwrap()),
        ("a.tar.bz2", bz.finish().unwrap()),
        ("a.tar.xz", xz.finish().unwrap()),
        ("a.tar.zst", zstd::encode_all(raw.as_slice(), 1).unwrap()),
    ]
}

fn add(src: &str, dest: &str, unpack: bool) -> FileAction {
    FileAction::Copy(CopyAction {
        src: src.into(),
        dest: dest.into(),
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        attempt_unpack: unpack,
        ..Default::default()
    })
}

#[test]
fn add_unpacks_every_compression() {
    let ctx = tempfile::tempdir().unwrap();
    for (name, bytes) in compressed() {
        fs::write(ctx.path().join(name), bytes).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        apply_file_actions(d, &[SourceRoot::new(ctx.path())], &[add(name, "/x", true)]).unwrap();
        assert_eq!(
            fs::read_to_string(d.join("x/top.txt")).unwrap(),
            "top",
            "{name}"
        );
        assert_eq!(
            fs::read_to_string(d.join("x/d/in.txt")).unwrap(),
            "in",
            "{name}"
        );
        let md = fs::metadata(d.join("x/top.txt")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640, "{name}");
        assert_eq!(md.mtime(), 12345, "{name}");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(md.uid(), 7, "archive owners are kept ({name})");
        }
    }
}

#[test]
fn add_chown_owns_the_unpacked_entries() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    let gz = compressed().remove(1).1;
    fs::write(ctx.path().join("a.tar.gz"), gz).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let FileAction::Copy(mut action) = add("a.tar.gz", "/x/", true) else {
        unreachable!()
    };
    action.owner = Some(ChownOpt {
        user: UserSpec::Id(1234),
        group: None,
    });
    apply_file_actions(
        d,
        &[SourceRoot::new(ctx.path())],
        &[FileAction::Copy(action)],
    )
    .unwrap();
    for p in ["x", "x/top.txt", "x/d/in.txt"] {
        let md = fs::metadata(d.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 1234), "{p}");
    }
    assert_eq!(
        fs::metadata(d.join("x/top.txt")).unwrap().mode() & 0o7777,
        0o640
    );
}

#[test]
fn add_without_unpack_and_non_archives_copy() {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let gz = compressed().remove(1).1;
    fs::write(c.join("a.tar.gz"), &gz).unwrap();
    // gzip of something that is not a tar: copied as is.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"just text").unwrap();
    fs::write(c.join("notes.gz"), enc.finish().unwrap()).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    apply_file_actions(
        d,
        &[SourceRoot::new(c)],
        &[
            add("a.tar.gz", "/keep/", false),
            add("notes.gz", "/n/", true),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(d.join("keep/a.tar.gz")).unwrap(), gz);
    assert!(d.join("n/notes.gz").is_file());
}

#[test]
fn mkfile_mkdir_symlink_rm() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let owner = Some(ChownOpt {
        user: UserSpec::Id(1000),
        group: Some(UserSpec::Id(1001)),
    });
    let actions = vec![
        FileAction::Mkdir(MkdirAction {
            path: "/app/work".into(),
            mode: 0o750,
            make_parents: true,
            owner: owner.clone(),
            timestamp: Some(99),
        }),
        FileAction::Mkfile(MkfileAction {
            path: "/app/work/run.sh".into(),
            mode: 0o755,
            data: b"#!/bin/sh\necho hi\n".to_vec(),
            owner: owner.clone(),
            timestamp: Some(77),
        }),
        FileAction::Symlink(SymlinkAction {
            target: "work/run.sh".into(),
            path: "/app/run".into(),
            owner: None,
            timestamp: Some(55),
        }),
        FileAction::Mkfile(MkfileAction {
            path: "/app/gone.txt".into(),
            mode: 0o644,
            data: b"x".to_vec(),
            owner: None,
            timestamp: None,
        }),
        FileAction::Rm(RmAction {
            path: "/app/gone*".into(),
            allow_not_found: false,
            allow_wildcard: true,
        }),
        FileAction::Rm(RmAction {
            path: "/not/there".into(),
            allow_not_found: true,
            allow_wildcard: false,
        }),
    ];
    apply_file_actions(d, &[], &actions).unwrap();
    let work = fs::metadata(d.join("app/work")).unwrap();
    assert_eq!(work.mode() & 0o7777, 0o750);
    assert_eq!(fs::metadata(d.join("app")).unwrap().mode() & 0o7777, 0o750);
    let f = fs::metadata(d.join("app/work/run.sh")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o755);
    assert_eq!(f.mtime(), 77);
    if nix::unistd::geteuid().is_root() {
        assert_eq!((work.uid(), work.gid()), (1000, 1001));
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
    }
    assert_eq!(
        fs::read_link(d.join("app/run")).unwrap(),
        Path::new("work/run.sh")
    );
    assert_eq!(fs::symlink_metadata(d.join("app/run")).unwrap().mtime(), 55);
    assert!(!d.join("app/gone.txt").exists());

    // Errors: rm of a missing path, rm of /, mkfile without a parent.
    let err = apply_file_actions(
        d,
        &[],
        &[FileAction::Rm(RmAction {
            path: "/nope".into(),
            allow_not_found: false,
            allow_wildcard: false,
        })],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::RmNotFound { .. }), "{err}");
    let err = apply_file_actions(
        d,
        &[],
        &[FileAction::Rm(RmAction {
            path: "/".into(),
            allow_not_found: true,
            allow_wildcard: false,
        })],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::RmRoot { .. }), "{err}");
    let err = apply_file_actions(
        d,
        &[],
        &[FileAction::Mkfile(MkfileAction {
            path: "/no/parent/f".into(),
            mode: 0o644,
            data: vec![],
            owner: None,
            timestamp: None,
        })],
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/parent/f"), "{err}");
    // Mkdir without parents of an existing dir is fine and keeps its mode.
    fs::set_permissions(d.join("app"), fs::Permissions::from_mode(0o711)).unwrap();
    apply_file_actions(
        d,
        &[],
        &[FileAction::Mkdir(MkdirAction {
            path: "/app".into(),
            mode: 0o755,
            make_parents: false,
            owner: None,
            timestamp: None,
        })],
    )
    .unwrap();
    assert_eq!(fs::metadata(d.join("app")).unwrap().mode() & 0o7777, 0o711);
}
