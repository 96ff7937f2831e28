//! Rebuilds that should do nothing, and the ones that must not: the stat cache keeps an
//! unchanged context from being read again, yet a touched file changes nothing and an
//! edited one (even with its size and mtime kept) re-runs what depends on it.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::{executed, Build, TestEnv};

/// The content of `path` in the image tagged `tag` (via umoci, not kiln).
fn file_in_image(b: &Build, tag: &str, path: &str) -> String {
    let root = b.unpack(&format!("docker.io/{tag}"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn touch_changes_nothing_and_a_same_size_edit_reruns_the_step() {
    let env = TestEnv::load();
    let b = Build::new();
    let base = format!("{}/library/busybox:latest", env.registry());
    b.write(
        "Dockerfile",
        &format!("FROM {base}\nCOPY data.txt /in/\nRUN tr a-z A-Z < /in/data.txt > /out.txt\n"),
    );
    b.write("data.txt", "first\n");
    b.write("unused/big.txt", &"x".repeat(100_000));
    let data = b.ctx().join("data.txt");
    let tag = "kiln-test/noop:1";

    let first = b.build(&["-t", tag]);
    assert!(executed(&first) >= 2, "{first}");
    assert_eq!(file_in_image(&b, tag, "out.txt"), "FIRST\n");
    let index = b.root.path().join("content/index.json");
    let index_inode = std::fs::metadata(&index).unwrap().ino();

    // Nothing changed: nothing runs, same image, and the tag is not rewritten.
    let again = b.build(&["-t", tag]);
    assert_eq!(executed(&again), 0, "{again}");
    assert_eq!(
        again["containerimage.digest"],
        first["containerimage.digest"]
    );
    assert_eq!(
        std::fs::metadata(&index).unwrap().ino(),
        index_inode,
        "a no-op rebuild leaves index.json alone"
    );

    // Touched (mtime only): the cache key is the content, so nothing runs.
    set_mtime(&data, SystemTime::now() + Duration::from_secs(60));
    let touched = b.build(&["-t", tag]);
    assert_eq!(executed(&touched), 0, "{touched}");
    assert_eq!(
        touched["containerimage.digest"],
        first["containerimage.digest"]
    );
    // And once more, now from the stat cache's fresh entry.
    assert_eq!(executed(&b.build(&["-t", tag])), 0);

    // Same size, new bytes, mtime put back: the step re-runs with the new content.
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    b.write("data.txt", "secnd\n");
    set_mtime(&data, mtime);
    let edited = b.build(&["-t", tag]);
    assert!(executed(&edited) >= 2, "COPY and RUN re-run: {edited}");
    assert_eq!(file_in_image(&b, tag, "out.txt"), "SECND\n");
    assert_ne!(
        edited["containerimage.digest"],
        first["containerimage.digest"]
    );

    // An edit right after a build (inside the racy window) is seen as well.
    b.write("data.txt", "third\n");
    let racy = b.build(&["-t", tag]);
    assert!(executed(&racy) >= 2, "{racy}");
    assert_eq!(file_in_image(&b, tag, "out.txt"), "THIRD\n");
    // Going back to earlier content hits the cache of the first build.
    b.write("data.txt", "first\n");
    let back = b.build(&["-t", tag]);
    assert_eq!(executed(&back), 0, "{back}");
    assert_eq!(
        back["containerimage.digest"],
        first["containerimage.digest"]
    );
}
