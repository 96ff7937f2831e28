//! Deep trees: the copier must not exhaust a 2 MiB thread stack (tokio's
//! blocking threads) on the deepest tree Linux paths allow.

use std::path::PathBuf;

use kiln_solver::llb::{CopyAction, FileAction};
use kiln_solver::ops::file::{apply_file_actions, SourceRoot};

#[test]
fn deepest_tree_copies_on_a_small_stack() {
    let ctx = tempfile::tempdir().unwrap();
    // "a/" per level: about 2000 levels before PATH_MAX (4096 bytes).
    let depth = (4000 - ctx.path().as_os_str().len()) / 2;
    let mut p: PathBuf = ctx.path().to_path_buf();
    for _ in 0..depth {
        p.push("a");
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("f"), "deep").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (c, d) = (ctx.path().to_path_buf(), dest.path().to_path_buf());
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let action = FileAction::Copy(CopyAction {
                src: "a".into(),
                dest: "/".into(),
                follow_symlinks: true,
                dir_copy_contents: true,
                create_dest_path: true,
                ..Default::default()
            });
            apply_file_actions(&d, &[SourceRoot::new(&c)], &[action])
        })
        .unwrap();
    let result = handle.join().expect("copier thread crashed");
    // The destination path is longer than the source's: the deepest levels
    // may hit ENAMETOOLONG, which must be an error, not a crash.
    if let Err(e) = result {
        assert!(e.to_string().contains("File name too long"), "{e}");
    }
}
