//! The state directory is safe against other local users and interrupted processes:
//! nothing in it is reachable by another user (set-uid binaries and world-writable
//! directories of pulled layers live there).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Build, TestEnv};

/// Every path below `dir` (not `dir` itself), not following symlinks.
fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The paths of `paths` that user 65534 (nobody) can see (`test -e` or `test -L`).
fn reachable_by_nobody(paths: &[PathBuf]) -> Vec<String> {
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args([
            "sh",
            "-c",
            r#"while IFS= read -r p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let list: String = paths
        .iter()
        .map(|p| format!("{}\n", p.to_str().expect("utf-8 path")))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, list.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn other_users_reach_nothing_in_the_state_dir_and_an_old_0755_one_is_repaired() {
    let env = TestEnv::load();
    let b = Build::new();
    let root = b.root.path();
    // A state dir as an older kiln left it: world-traversable, layers too.
    std::fs::create_dir(root.join("layers")).unwrap();
    for p in [root.to_path_buf(), root.join("layers")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The check is only meaningful when the parent lets nobody through.
    assert_ne!(mode(root.parent().unwrap()) & 0o001, 0);
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox:latest\nRUN --mount=type=cache,target=/c echo hi > /c/f && chmod 4755 /bin/busybox && mkdir -m 1777 /drop\n",
            env.registry()
        ),
    );
    b.build(&["--tag", "store-modes:1"]);
    assert_eq!(mode(root), 0o700);
    assert_eq!(mode(&root.join("layers")), 0o700);

    let paths = paths_under(root);
    let setuid: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o4000 != 0)
        })
        .collect();
    assert!(
        !setuid.is_empty(),
        "the build made a set-uid busybox in a layer"
    );
    assert!(
        paths.len() > 100,
        "a busybox layer is in there: {}",
        paths.len()
    );
    let seen = reachable_by_nobody(&paths);
    assert!(
        seen.is_empty(),
        "nobody can reach {} paths: {:?}",
        seen.len(),
        &seen[..seen.len().min(10)]
    );
    // Not vacuous: the same check sees what nobody may see.
    let control = reachable_by_nobody(&[PathBuf::from("/bin/sh"), root.to_path_buf()]);
    assert_eq!(control.len(), 2, "{control:?}");

    // Any verb repairs a directory loosened meanwhile.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = b.kiln(&["images"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(root), 0o700);
}
