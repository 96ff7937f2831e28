//! Rebuilds that should do nothing, and the ones that must not: the stat cache keeps an
//! unchanged context from being read again, yet a touched file changes nothing and an
//! edited one (even with its size and mtime kept) re-runs what depends on it.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::{kiln_bin, TestEnv};

struct Build {
    root: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Build {
    fn new() -> Build {
        Build {
            root: tempfile::tempdir().expect("state dir"),
            work: tempfile::tempdir().expect("work dir"),
        }
    }

    fn ctx(&self) -> PathBuf {
        self.work.path().join("ctx")
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Builds the context; returns the metadata file's JSON.
    fn build(&self, tag: &str) -> serde_json::Value {
        let meta = self.work.path().join("meta.json");
        let out = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(["build", "--progress", "plain", "--metadata-file"])
            .arg(&meta)
            .args(["-t", tag])
            .arg(self.ctx())
            .output()
            .expect("run kiln");
        assert!(
            out.status.success(),
            "kiln build failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap()
    }

    /// The content of `path` in the image tagged `tag` (via umoci, not kiln).
    fn file_in_image(&self, tag: &str, path: &str) -> String {
        let bundle = self.work.path().join("bundle");
        let _ = std::fs::remove_dir_all(&bundle);
        let layout = format!("{}/content:docker.io/{tag}", self.root.path().display());
        let st = Command::new("umoci")
            .args(["unpack", "--image", &layout])
            .arg(&bundle)
            .output()
            .expect("run umoci");
        assert!(
            st.status.success(),
            "umoci unpack {layout}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        std::fs::read_to_string(bundle.join("rootfs").join(path)).unwrap()
    }
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn executed(meta: &serde_json::Value) -> u64 {
    meta["kiln.vertices.executed"].as_u64().unwrap()
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

    let first = b.build(tag);
    assert!(executed(&first) >= 2, "{first}");
    assert_eq!(b.file_in_image(tag, "out.txt"), "FIRST\n");
    let index = b.root.path().join("content/index.json");
    let index_inode = std::fs::metadata(&index).unwrap().ino();

    // Nothing changed: nothing runs, same image, and the tag is not rewritten.
    let again = b.build(tag);
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
    let touched = b.build(tag);
    assert_eq!(executed(&touched), 0, "{touched}");
    assert_eq!(
        touched["containerimage.digest"],
        first["containerimage.digest"]
    );
    // And once more, now from the stat cache's fresh entry.
    assert_eq!(executed(&b.build(tag)), 0);

    // Same size, new bytes, mtime put back: the step re-runs with the new content.
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    b.write("data.txt", "secnd\n");
    set_mtime(&data, mtime);
    let edited = b.build(tag);
    assert!(executed(&edited) >= 2, "COPY and RUN re-run: {edited}");
    assert_eq!(b.file_in_image(tag, "out.txt"), "SECND\n");
    assert_ne!(
        edited["containerimage.digest"],
        first["containerimage.digest"]
    );

    // An edit right after a build (inside the racy window) is seen as well.
    b.write("data.txt", "third\n");
    let racy = b.build(tag);
    assert!(executed(&racy) >= 2, "{racy}");
    assert_eq!(b.file_in_image(tag, "out.txt"), "THIRD\n");
    // Going back to earlier content hits the cache of the first build.
    b.write("data.txt", "first\n");
    let back = b.build(tag);
    assert_eq!(executed(&back), 0, "{back}");
    assert_eq!(
        back["containerimage.digest"],
        first["containerimage.digest"]
    );
}
