//! Sources of `kiln build` end to end: `COPY --link --chown=<name>` (names from
//! the stage below, the layer stays independent), ADD of a URL with HTTP
//! revalidation caching, and `--build-context name=oci-layout://...`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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

    fn kiln(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("BUILDKIT_PROGRESS", "plain")
            .output()
            .expect("run kiln")
    }

    /// Builds the context with extra flags; returns the metadata file's JSON.
    fn build(&self, extra: &[&str]) -> serde_json::Value {
        let meta = self.work.path().join("meta.json");
        let ctx = self.ctx();
        let mut args = vec!["build", "--metadata-file", meta.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        let out = self.kiln(&args);
        assert!(
            out.status.success(),
            "kiln build failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap()
    }

    fn build_fails(&self, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        let out = self.kiln(&args);
        assert!(
            !out.status.success(),
            "kiln build should have failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.root
            .path()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The manifest of a tagged image in the state dir's store.
    fn manifest(&self, tag: &str) -> serde_json::Value {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.root.path().join("content/index.json")).unwrap(),
        )
        .unwrap();
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("{tag} is not in the store"))
            .clone();
        serde_json::from_slice(
            &std::fs::read(self.blob(entry["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap()
    }

    /// `(path, uid, gid)` of every entry of the image's last layer (GNU tar's listing).
    fn last_layer_entries(&self, tag: &str) -> Vec<(String, u32, u32)> {
        let manifest = self.manifest(tag);
        let layers = manifest["layers"].as_array().unwrap();
        let last = layers.last().unwrap()["digest"].as_str().unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(self.blob(last))
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (uid, gid) = f[1].split_once('/').unwrap();
                (
                    f[5].trim_end_matches('/').to_string(),
                    uid.parse().unwrap(),
                    gid.parse().unwrap(),
                )
            })
            .collect()
    }

    /// Unpacks a tagged image of the state dir's store with umoci.
    fn unpack(&self, tag: &str) -> PathBuf {
        let bundle = self
            .work
            .path()
            .join(format!("bundle-{}", tag.replace(['/', ':'], "_")));
        let layout = format!("{}/content:{tag}", self.root.path().display());
        let _ = std::fs::remove_dir_all(&bundle);
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
        bundle.join("rootfs")
    }
}

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn busybox(env: &TestEnv) -> String {
    format!("{}/library/busybox:latest", env.registry())
}

#[test]
fn copy_link_chown_names_resolve_in_the_stage_below() {
    let env = TestEnv::load();
    let b = Build::new();
    b.write("app/run.sh", "echo hi\n");
    b.write("app/conf/a.txt", "a\n");
    let dockerfile = |marker: &str| {
        format!(
            "FROM {}\nRUN echo {marker} > /marker\nCOPY --link --chown=app:app app /opt/app/\n",
            busybox(&env)
        )
    };
    b.write("Dockerfile", &dockerfile("one"));
    b.build(&["-t", "kiln-test/link-chown:1"]);

    // The linked layer holds only the copied files, owned by app (1000:1000
    // in busybox's /etc/passwd), and no /etc/passwd of its own.
    let entries = b.last_layer_entries("docker.io/kiln-test/link-chown:1");
    assert!(
        entries.iter().all(|(p, _, _)| !p.contains("etc")),
        "{entries:?}"
    );
    for want in ["opt/app/run.sh", "opt/app/conf/a.txt", "opt/app/conf"] {
        let e = entries
            .iter()
            .find(|(p, _, _)| p == want)
            .unwrap_or_else(|| panic!("{want} missing from {entries:?}"));
        assert_eq!((e.1, e.2), (1000, 1000), "{want}");
    }
    let root = b.unpack("docker.io/kiln-test/link-chown:1");
    assert_eq!(owner(&root.join("opt/app/run.sh")), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(root.join("marker")).unwrap(),
        "one\n"
    );

    // A change below that leaves /etc/passwd and /etc/group alone keeps the
    // linked copy cached: only the RUN and the merge run again.
    b.write("Dockerfile", &dockerfile("two"));
    let meta = b.build(&["-t", "kiln-test/link-chown:2"]);
    assert_eq!(meta["kiln.vertices.executed"], 2, "{meta}");
    let entries2 = b.last_layer_entries("docker.io/kiln-test/link-chown:2");
    assert_eq!(entries, entries2);

    // An unknown name is an error naming the COPY line.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY --link --chown=nosuchuser app /opt/app/\n",
            busybox(&env)
        ),
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("nosuchuser"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}
