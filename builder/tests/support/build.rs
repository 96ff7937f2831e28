//! A build fixture: a fresh state dir and context dir, `kiln` run against
//! them, and readers of what the build stored (umoci, skopeo, the raw blobs).

use std::path::PathBuf;
use std::process::{Command, Output};

use super::kiln_bin;

/// One state directory (`--root`) and one work directory holding the context (`ctx/`).
pub struct Build {
    /// The state directory passed as `--root`.
    pub root: tempfile::TempDir,
    /// Holds the context (`ctx/`), the metadata file and unpacked bundles.
    pub work: tempfile::TempDir,
}

impl Build {
    /// Empty state and work directories.
    pub fn new() -> Build {
        Build {
            root: tempfile::tempdir().expect("state dir"),
            work: tempfile::tempdir().expect("work dir"),
        }
    }

    /// The build context directory.
    pub fn ctx(&self) -> PathBuf {
        self.work.path().join("ctx")
    }

    /// A path in the work directory (beside the context).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    /// Writes a file of the context, making its directories.
    pub fn write(&self, rel: &str, data: &str) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(p, data).expect("write context file");
    }

    /// Runs `kiln --root <state> ARGS` with plain progress and extra environment.
    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("BUILDKIT_PROGRESS", "plain")
            .envs(env.iter().copied())
            .output()
            .expect("run kiln")
    }

    /// Runs `kiln --root <state> ARGS` with plain progress.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    /// Builds the context with extra flags and environment; returns the metadata file's JSON.
    pub fn build_env(&self, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        let meta = self.path("meta.json");
        let _ = std::fs::remove_file(&meta);
        let ctx = self.ctx();
        let mut args = vec![
            "build",
            "--metadata-file",
            meta.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().expect("utf-8 path"));
        let out = self.kiln_env(&args, env);
        assert!(
            out.status.success(),
            "kiln build failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&std::fs::read(meta).expect("metadata file")).expect("metadata JSON")
    }

    /// Builds the context with extra flags; returns the metadata file's JSON.
    pub fn build(&self, extra: &[&str]) -> serde_json::Value {
        self.build_env(extra, &[])
    }

    /// Builds the context expecting failure; returns stderr.
    pub fn build_fails(&self, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().expect("utf-8 path"));
        let out = self.kiln(&args);
        assert!(!out.status.success(), "kiln build should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Unpacks a tagged image of the state dir's store (an OCI layout) with umoci.
    pub fn unpack(&self, tag: &str) -> PathBuf {
        let bundle = self.path(&format!("bundle-{}", tag.replace(['/', ':'], "_")));
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

    /// The path of a blob of the state dir's content store.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.root
            .path()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The manifest of a tagged image in the state dir's store, as stored.
    pub fn manifest(&self, tag: &str) -> serde_json::Value {
        let index = read_json(&self.root.path().join("content/index.json"));
        let entry = index["manifests"]
            .as_array()
            .expect("index manifests")
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("{tag} is not in the store"));
        read_json(&self.blob(entry["digest"].as_str().expect("digest")))
    }

    /// The config blob as stored (skopeo's view drops Docker-only fields such as OnBuild).
    pub fn raw_config(&self, tag: &str) -> serde_json::Value {
        let manifest = self.manifest(tag);
        read_json(
            &self.blob(
                manifest["config"]["digest"]
                    .as_str()
                    .expect("config digest"),
            ),
        )
    }

    /// A stored image as comparable bytes: its manifest's layers, and its config without
    /// creation times (two builds of one input run at different times).
    pub fn image_without_times(&self, tag: &str) -> (serde_json::Value, serde_json::Value) {
        let manifest = self.manifest(tag);
        let mut config = self.raw_config(tag);
        if let Some(c) = config.as_object_mut() {
            c.remove("created");
        }
        if let Some(h) = config["history"].as_array_mut() {
            for e in h.iter_mut().filter_map(|e| e.as_object_mut()) {
                e.remove("created");
            }
        }
        (manifest["layers"].clone(), config)
    }

    /// The image config of a stored tag, as skopeo reads it.
    pub fn config(&self, tag: &str) -> serde_json::Value {
        let out = Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}/content:{tag}", self.root.path().display()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("config JSON")
    }
}

/// A JSON file.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metadata file's count of vertices that executed (were not cached).
pub fn executed(meta: &serde_json::Value) -> u64 {
    meta["kiln.vertices.executed"]
        .as_u64()
        .expect("executed counter")
}

impl Build {
    /// Runs `kiln ARGS` as the unprivileged `user` (rootless mode), with plain
    /// progress, HOME the work directory and XDG_DATA_HOME the state directory, so
    /// the state is the user's default `$XDG_DATA_HOME/kiln`. Both directories are
    /// handed to the user (only themselves: what kiln stores keeps its owners).
    pub fn kiln_as(&self, user: &str, args: &[&str]) -> Output {
        self.kiln_as_env(user, args, &[])
    }

    /// [`Build::kiln_as`] with extra `KEY=VALUE` environment (`PATH=...`).
    pub fn kiln_as_env(&self, user: &str, args: &[&str], env: &[&str]) -> Output {
        self.kiln_as_command(user, args, env)
            .output()
            .expect("run kiln through runuser")
    }

    /// The command [`Build::kiln_as_env`] runs, for a caller to wrap.
    pub fn kiln_as_command(&self, user: &str, args: &[&str], env: &[&str]) -> Command {
        for d in [self.root.path(), self.work.path()] {
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(d)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown {user}: {}", d.display());
        }
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "env"])
            .arg(format!("HOME={}", self.work.path().display()))
            .arg(format!("XDG_DATA_HOME={}", self.root.path().display()))
            .arg("BUILDKIT_PROGRESS=plain")
            .args(env)
            .arg(kiln_bin())
            .args(args);
        cmd
    }
}
