//! End-to-end tests of the image commands against the registries of testdata/env/setup.sh.

mod support;

use kiln_oci::walk::Partial;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{
    sha256_digest, skopeo, unique, validate_archive, validate_named, validate_remote,
    validate_store,
};

fn env() -> HashMap<String, String> {
    let dir = std::env::var("KILN_TESTENV").unwrap_or_else(|_| "/tmp/kiln-testenv".into());
    let path = Path::new(&dir).join("env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test environment missing ({}: {e}); run `bash testdata/env/setup.sh start` first",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A kiln with its own state directory, Docker config and certs.d.
struct Kiln {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Kiln {
    fn new() -> Self {
        let env = env();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir
            .path()
            .join("certs.d")
            .join(&env["KILN_TEST_REGISTRY_TLS"]);
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&env["KILN_TEST_CA"], certs.join("ca.crt")).unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Kiln { dir, env }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .env("KILN_ROOT", self.path("root"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("KILN_CERTS_DIR", self.path("certs.d"))
            .env_remove("KILN_INSECURE_REGISTRIES");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "kiln {args:?} should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn reg(&self) -> &str {
        &self.env["KILN_TEST_REGISTRY"]
    }
}

fn skopeo_raw(target: &str) -> Vec<u8> {
    skopeo(&["inspect", "--raw", "--tls-verify=false", target])
}

#[test]
fn pull_each_platform_then_images_tag_inspect_rmi() {
    let k = Kiln::new();
    let reg = k.reg().to_string();
    let src = format!("{reg}/library/busybox:latest");
    let index = skopeo_raw(&format!("docker://{src}"));
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    for arch in ["amd64", "arm64"] {
        let out = k.ok(&["pull", "--platform", &format!("linux/{arch}"), &src]);
        assert!(
            out.contains("latest: Pulling from library/busybox"),
            "{out}"
        );
        assert!(out.contains("Digest: sha256:"), "{out}");
        // The store keeps the whole index, and the images of the platforms pulled so far.
        let reports = validate_store(&k.path("root"), Partial::SkipMissingImages);
        assert_eq!(reports.iter().map(|r| r.images).sum::<usize>(), 1);
        // A save of what was pulled holds that platform's image whole.
        let saved = k.path(&format!("{arch}.tar"));
        k.ok(&["save", "-o", saved.to_str().unwrap(), &src]);
        assert_eq!(validate_archive(&saved)[0].images, 1);
        let inspected: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &src])).unwrap();
        assert_eq!(inspected[0]["Architecture"], arch);
        let expected = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .clone();
        assert_eq!(
            inspected[0]["Descriptor"]["digest"], expected,
            "{arch}: the tag points at that platform's manifest"
        );
        // The image ID is the config digest (docker's, and buildx's --iidfile).
        let manifest: serde_json::Value = serde_json::from_slice(&skopeo_raw(&format!(
            "docker://{reg}/library/busybox@{}",
            expected.as_str().unwrap()
        )))
        .unwrap();
        assert_eq!(inspected[0]["Id"], manifest["config"]["digest"], "{arch}");
        let arch_out = k.ok(&["inspect", "--format", "{{.Architecture}}/{{.Os}}", &src]);
        assert_eq!(arch_out.trim(), format!("{arch}/linux"));
    }
    k.ok(&["tag", &src, "localhost/mine:v2"]);
    let listing = k.ok(&["images"]);
    assert!(
        listing.contains("REPOSITORY")
            && listing.contains("localhost/mine")
            && listing.contains("v2"),
        "{listing}"
    );
    let listing = k.ok(&[
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        "reference=localhost/*",
    ]);
    assert_eq!(listing.trim(), "localhost/mine:v2");
    // Go templates: json of the row, pipelines, range over a config list, docker's functions.
    let row: serde_json::Value = serde_json::from_str(&k.ok(&[
        "images",
        "--format",
        "{{json .}}",
        "--filter",
        "reference=localhost/*",
    ]))
    .unwrap();
    assert_eq!(row["Repository"], "localhost/mine");
    assert!(row["Size"].as_str().unwrap().ends_with('B'), "{row}");
    assert!(
        row["CreatedSince"].as_str().unwrap().ends_with(" ago"),
        "{row}"
    );
    let out = k.ok(&[
        "images",
        "--format",
        r#"{{.Repository | upper}}\t{{printf "%.3s" .Tag}}"#,
        "--filter",
        "reference=localhost/*",
    ]);
    assert_eq!(out.trim(), "LOCALHOST/MINE\tv2");
    let out = k.ok(&[
        "images",
        "--format",
        r"table {{.Repository}}\t{{.Tag}}",
        "--filter",
        "reference=localhost/*",
    ]);
    assert_eq!(out, "REPOSITORY       TAG\nlocalhost/mine   v2\n");
    let cmd = k.ok(&[
        "inspect",
        "--format",
        r#"{{range .Config.Cmd}}[{{.}}]{{end}} {{len .RootFS.Layers}} {{if .Variant}}v{{else}}-{{end}}"#,
        &src,
    ]);
    assert_eq!(cmd.trim(), "[sh] 1 -", "{cmd}");
    let err = k.fails(&["inspect", "--format", "{{.Nope}}", &src]);
    assert!(err.contains("--format template \"{{.Nope}}\""), "{err}");
    let steps = k.ok(&[
        "history",
        "--format",
        "{{.ID}}|{{.CreatedSince}}|{{.Size}}",
        "localhost/mine:v2",
    ]);
    let first: Vec<&str> = steps.lines().next().unwrap().split('|').collect();
    assert!(
        first[0].len() == 12 && first[1].ends_with(" ago"),
        "{steps}"
    );
    let ids = k.ok(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "two tags, one image: {ids}");
    assert!(k.ok(&["images", "-f", "dangling=true"]).lines().count() <= 1);
    let json = k.ok(&["images", "--format", "json", "--digests"]);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["Digest"].as_str().unwrap().starts_with("sha256:"));
    }
    let history = k.ok(&["history", "localhost/mine:v2"]);
    assert!(history.contains("CREATED BY"), "{history}");
    let out = k.ok(&["rmi", "localhost/mine:v2"]);
    assert!(out.contains("Untagged: localhost/mine:v2"), "{out}");
    // The other tag keeps the blobs.
    k.ok(&["inspect", &src]);
    let out = k.ok(&["rmi", &src]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    let err = k.fails(&["inspect", &src]);
    assert!(err.contains("no such image"), "{err}");
    let err = k.fails(&["pull", &format!("{reg}/library/busybox:no-such-tag")]);
    assert!(
        err.contains("MANIFEST_UNKNOWN") && err.contains("no-such-tag"),
        "{err}"
    );
    let err = k.fails(&["pull", "Not/Valid"]);
    assert!(err.contains("invalid reference"), "{err}");
}

#[test]
fn push_round_trip_matches_skopeo() {
    let k = Kiln::new();
    let reg = k.reg().to_string();
    k.ok(&[
        "pull",
        "--all-platforms",
        "-q",
        &format!("{reg}/library/busybox:latest"),
    ]);
    assert_eq!(
        validate_store(&k.path("root"), Partial::Refuse)[0].images,
        2
    );
    let dst = format!("{reg}/{}:v1", unique("kiln-e2e/push"));
    k.ok(&["tag", &format!("{reg}/library/busybox:latest"), &dst]);
    let out = k.ok(&["push", &dst]);
    assert!(out.contains("The push refers to repository"), "{out}");
    // The blobs are known in library/busybox on the same registry: mounted, not uploaded.
    assert!(out.contains(": Mounted from source"), "{out}");
    assert!(!out.contains(": Pushed"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("v1: digest: "))
        .unwrap_or_else(|| panic!("{out}"));
    let raw = skopeo_raw(&format!("docker://{dst}"));
    assert!(line.contains(&sha256_digest(&raw)), "{line}");
    assert!(line.ends_with(&format!("size: {}", raw.len())), "{line}");
    // Same bytes as the source index.
    assert_eq!(
        raw,
        skopeo_raw(&format!("docker://{reg}/library/busybox:latest"))
    );
    // imagetools inspect --raw gives exactly what the registry serves.
    let it = k
        .cmd(&["imagetools", "inspect", "--raw", &dst])
        .output()
        .unwrap();
    assert_eq!(it.stdout, raw);
    let summary = k.ok(&["imagetools", "inspect", &dst]);
    assert!(
        summary.contains("linux/amd64") && summary.contains("linux/arm64"),
        "{summary}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["imagetools", "inspect", "--format", "json", &dst])).unwrap();
    assert_eq!(json["manifest"]["manifests"].as_array().unwrap().len(), 2);
    let manifest: serde_json::Value = serde_json::from_str(&k.ok(&[
        "imagetools",
        "inspect",
        "--format",
        "{{json .Manifest}}",
        &dst,
    ]))
    .unwrap();
    assert_eq!(manifest, json["manifest"]);
    let platforms = k.ok(&[
        "imagetools",
        "inspect",
        "--format",
        "{{range .Manifest.manifests}}{{.platform.architecture}} {{end}}",
        &dst,
    ]);
    assert_eq!(platforms.trim(), "amd64 arm64", "{platforms}");
    // A second push finds the layers present.
    let again = k.ok(&["push", &dst]);
    assert!(again.contains("Layer already exists"), "{again}");
    assert_eq!(validate_remote(&dst).images, 2);
}

#[test]
fn login_tls_basic_auth_and_logout() {
    let k = Kiln::new();
    let tls = k.env["KILN_TEST_REGISTRY_TLS"].clone();
    let user = k.env["KILN_TEST_TLS_USER"].clone();
    let pass = k.env["KILN_TEST_TLS_PASS"].clone();
    // Before login the registry wants credentials.
    let err = k.fails(&["pull", &format!("{tls}/library/busybox:latest")]);
    assert!(
        err.contains("UNAUTHORIZED") && err.contains("kiln login"),
        "{err}"
    );
    let bad = k.with_stdin(
        &["login", "-u", &user, "--password-stdin", &tls],
        "wrong-password\n",
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("UNAUTHORIZED"), "{stderr}");
    assert!(
        !k.path("docker/config.json").exists()
            || !std::fs::read_to_string(k.path("docker/config.json"))
                .unwrap()
                .contains(&tls)
    );
    let good = k.with_stdin(
        &["login", "-u", &user, "--password-stdin", &tls],
        &format!("{pass}\n"),
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        all.contains("Login Succeeded") && !all.contains(&pass),
        "{all}"
    );
    let cfg = std::fs::read_to_string(k.path("docker/config.json")).unwrap();
    assert!(cfg.contains(&tls) && !cfg.contains(&pass), "{cfg}");
    let out = k.ok(&["pull", &format!("{tls}/library/busybox:latest")]);
    assert!(out.contains("Digest:"), "{out}");
    let dst = format!("{tls}/{}:x", unique("kiln-e2e/tls"));
    k.ok(&["tag", &format!("{tls}/library/busybox:latest"), &dst]);
    k.ok(&["push", &dst]);
    let out = k.ok(&["logout", &tls]);
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(!std::fs::read_to_string(k.path("docker/config.json"))
        .unwrap()
        .contains(&tls));
    k.fails(&["pull", &format!("{tls}/library/busybox:latest")]);
}

#[test]
fn token_auth_read_only_user_cannot_push() {
    let k = Kiln::new();
    let reg = k.env["KILN_TEST_REGISTRY_TOKEN"].clone();
    let ro = k.with_stdin(
        &[
            "login",
            "-u",
            &k.env["KILN_TEST_TOKEN_RO_USER"],
            "--password-stdin",
            &reg,
        ],
        &k.env["KILN_TEST_TOKEN_RO_PASS"],
    );
    assert!(
        ro.status.success(),
        "{}",
        String::from_utf8_lossy(&ro.stderr)
    );
    k.ok(&["pull", &format!("{reg}/library/busybox:latest")]);
    let repo = unique("kiln-e2e/ro");
    let dst = format!("{reg}/{repo}:x");
    k.ok(&["tag", &format!("{reg}/library/busybox:latest"), &dst]);
    let err = k.fails(&["push", &dst]);
    assert!(
        err.contains(&format!("repository:{repo}:pull,push")),
        "{err}"
    );
    assert!(err.contains("reader"), "{err}");
    // The read-write user can.
    let rw = k.with_stdin(
        &[
            "login",
            "-u",
            &k.env["KILN_TEST_TOKEN_USER"],
            "--password-stdin",
            &reg,
        ],
        &k.env["KILN_TEST_TOKEN_PASS"],
    );
    assert!(rw.status.success());
    k.ok(&["push", &dst]);
}

#[test]
fn save_load_round_trip_docker_and_oci() {
    let k = Kiln::new();
    let reg = k.reg().to_string();
    let src = format!("{reg}/library/busybox:latest");
    k.ok(&["pull", "-a", &src]);
    validate_store(&k.path("root"), Partial::Refuse);
    let id = k.ok(&["images", "-q", "--no-trunc"]).trim().to_string();
    let docker_tar = k.path("bb.tar");
    k.ok(&["save", "-o", docker_tar.to_str().unwrap(), &src]);
    let skopeo = Command::new("skopeo")
        .args([
            "inspect",
            &format!("docker-archive:{}", docker_tar.display()),
        ])
        .output()
        .unwrap();
    assert!(
        skopeo.status.success(),
        "skopeo reads the docker archive: {}",
        String::from_utf8_lossy(&skopeo.stderr)
    );
    let oci_tar = k.path("bb-oci.tar");
    k.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci_tar.to_str().unwrap(),
        &src,
    ]);
    let raw = skopeo_raw(&format!("oci-archive:{}", oci_tar.display()));
    assert_eq!(
        sha256_digest(&raw),
        id,
        "the OCI archive carries the index as is"
    );
    assert_eq!(validate_archive(&oci_tar)[0].images, 2);
    assert_eq!(validate_archive(&docker_tar)[0].images, 2);

    // Load into a fresh store: plain tar, and gzip.
    let k2 = Kiln::new();
    let out = k2.ok(&["load", "-i", docker_tar.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {src}")), "{out}");
    assert_eq!(k2.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    validate_store(&k2.path("root"), Partial::Refuse);

    // Several images in one file.
    k.ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        &format!("{reg}/library/busybox:latest-arm64"),
    ]);
    let two = k.path("two.tar");
    k.ok(&[
        "save",
        "-o",
        two.to_str().unwrap(),
        &src,
        &format!("{reg}/library/busybox:latest-arm64"),
    ]);
    let k5 = Kiln::new();
    let out = k5.ok(&["load", "-i", two.to_str().unwrap()]);
    assert_eq!(out.matches("Loaded image: ").count(), 2, "{out}");
    assert_eq!(k5.ok(&["images", "-q"]).lines().count(), 2);
    validate_archive(&two);
    validate_store(&k5.path("root"), Partial::Refuse);
    let gz = k.path("bb-oci.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", oci_tar.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let k3 = Kiln::new();
    k3.ok(&["load", "-i", gz.to_str().unwrap()]);
    assert_eq!(k3.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    validate_store(&k3.path("root"), Partial::Refuse);
    let inspected: serde_json::Value =
        serde_json::from_str(&k3.ok(&["inspect", "--platform", "linux/arm64", &src])).unwrap();
    assert_eq!(inspected[0]["Architecture"], "arm64");
    // A tampered archive is refused and stores nothing.
    let bad = k.path("bad.tar");
    let mut bytes = std::fs::read(&oci_tar).unwrap();
    // Flip a byte inside the first blob (after the two directory headers and its own header).
    let pos = 512 * 3 + 10;
    bytes[pos] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let k4 = Kiln::new();
    let err = k4.fails(&["load", "-i", bad.to_str().unwrap()]);
    assert!(err.contains("corrupt") || err.contains("hashes"), "{err}");
    assert_eq!(k4.ok(&["images", "-q"]).trim(), "");
    let garbage = k.path("garbage.tar");
    std::fs::write(&garbage, b"not a tar at all").unwrap();
    k4.fails(&["load", "-i", garbage.to_str().unwrap()]);
}

#[test]
fn copy_between_registries_layouts_and_imagetools_create() {
    let k = Kiln::new();
    let reg = k.reg().to_string();
    let src = format!("{reg}/library/busybox:latest");
    let raw = skopeo_raw(&format!("docker://{src}"));
    // Same registry: blobs are mounted.
    let dst = format!("{reg}/{}:c", unique("kiln-e2e/copy"));
    let out = k.ok(&["copy", &src, &dst]);
    assert!(
        out.contains("Mounted from source") || out.contains("already exists"),
        "{out}"
    );
    assert_eq!(skopeo_raw(&format!("docker://{dst}")), raw);
    assert_eq!(validate_remote(&dst).images, 2);
    // Registry -> OCI dir -> registry.
    let layout = k.path("layout");
    k.ok(&["copy", &src, &format!("oci:{}:v1", layout.display())]);
    assert_eq!(skopeo_raw(&format!("oci:{}:v1", layout.display())), raw);
    assert_eq!(validate_named(&layout, "v1", Partial::Refuse).images, 2);
    let back = format!("{reg}/{}:fromoci", unique("kiln-e2e/copy"));
    k.ok(&["copy", &format!("oci:{}:v1", layout.display()), &back]);
    assert_eq!(skopeo_raw(&format!("docker://{back}")), raw);
    // Registry -> docker-archive -> registry (the archive keeps the OCI index).
    let archive = k.path("da.tar");
    k.ok(&[
        "copy",
        &src,
        &format!("docker-archive:{}", archive.display()),
    ]);
    let back2 = format!("{reg}/{}:fromda", unique("kiln-e2e/copy"));
    k.ok(&[
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &back2,
    ]);
    assert_eq!(skopeo_raw(&format!("docker://{back2}")), raw);
    validate_archive(&archive);
    assert_eq!(validate_remote(&back2).images, 2);

    // imagetools create: two single-platform tags (another repository) into one index.
    let target = format!("{reg}/{}:multi", unique("kiln-e2e/create"));
    let dry = k.ok(&[
        "imagetools",
        "create",
        "--dry-run",
        "-t",
        &target,
        &format!("{reg}/library/busybox:latest-amd64"),
        &format!("{reg}/library/busybox:latest-arm64"),
    ]);
    let idx: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let plats: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    let gone = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "dry run pushes nothing");
    k.ok(&[
        "imagetools",
        "create",
        "-t",
        &target,
        "--annotation",
        "index:org.opencontainers.image.title=kiln",
        &format!("{reg}/library/busybox:latest-amd64"),
    ]);
    k.ok(&[
        "imagetools",
        "create",
        "--append",
        "-t",
        &target,
        &format!("{reg}/library/busybox:latest-arm64"),
    ]);
    let made: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("docker://{target}"))).unwrap();
    assert_eq!(made["manifests"].as_array().unwrap().len(), 2, "{made}");
    assert_eq!(validate_remote(&target).images, 2);
    // Each child is pullable from the new repository.
    for arch in ["amd64", "arm64"] {
        k.ok(&["pull", "--platform", &format!("linux/{arch}"), &target]);
    }
}

#[test]
fn login_through_a_credential_helper_never_writes_the_secret() {
    let k = Kiln::new();
    let tls = k.env["KILN_TEST_REGISTRY_TLS"].clone();
    let user = k.env["KILN_TEST_TLS_USER"].clone();
    let pass = k.env["KILN_TEST_TLS_PASS"].clone();
    // A docker-credential-* helper keeping one credential in a file.
    let bin = k.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let store = k.path("helper-store.json");
    let script = format!(
        r#"#!/bin/sh
store={store}
case "$1" in
  store) cat > "$store" ;;
  get) read server; if [ -s "$store" ]; then
         u=$(sed 's/.*"Username":"\([^"]*\)".*/\1/' "$store"); p=$(sed 's/.*"Secret":"\([^"]*\)".*/\1/' "$store")
         printf '{{"ServerURL":"%s","Username":"%s","Secret":"%s"}}' "$server" "$u" "$p"
       else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read server; if [ -s "$store" ]; then rm -f "$store"; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#,
        store = store.display()
    );
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(&helper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(k.path("docker/config.json"), r#"{"credsStore":"kilntest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str], input: Option<&str>| -> Output {
        let mut c = k.cmd(args);
        c.env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(i) = input {
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let o = run(
        &["login", "-u", &user, "--password-stdin", &tls],
        Some(&pass),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = std::fs::read_to_string(k.path("docker/config.json")).unwrap();
    assert!(
        cfg.contains(&tls) && !cfg.contains(&pass),
        "config.json only records the registry: {cfg}"
    );
    assert!(
        std::fs::read_to_string(&store).unwrap().contains(&pass),
        "the helper holds the secret"
    );
    let o = run(&["pull", &format!("{tls}/library/busybox:latest")], None);
    assert!(
        o.status.success(),
        "pull with helper credentials: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&["logout", &tls], None);
    assert!(o.status.success());
    assert!(!store.exists(), "logout erased the helper's credential");
}

/// Appends one regular file to a tar being built.
fn tar_file<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

#[test]
fn legacy_docker_archive_loads_as_docker_v2_and_round_trips_through_a_registry() {
    let k = Kiln::new();
    let reg = k.reg().to_string();
    // A layer, a config listing its diffID, and the legacy manifest.json layout.
    let mut layer = tar::Builder::new(Vec::new());
    tar_file(&mut layer, "hello.txt", b"hello from a legacy archive\n");
    let layer = layer.into_inner().unwrap();
    let diff_id = sha256_digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "COPY hello.txt /"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let name = format!("{reg}/{}:v1", unique("kiln-e2e/legacy"));
    let manifest = serde_json::json!([{"Config": "cfg.json", "RepoTags": [name.clone()], "Layers": ["abc/layer.tar"]}]);
    let mut ar = tar::Builder::new(Vec::new());
    tar_file(&mut ar, "cfg.json", &config);
    tar_file(&mut ar, "abc/layer.tar", &layer);
    tar_file(
        &mut ar,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let archive = k.path("legacy.tar");
    std::fs::write(&archive, ar.into_inner().unwrap()).unwrap();

    let out = k.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
    let inspected: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
    assert_eq!(
        inspected[0]["Manifest"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(inspected[0]["RootFS"]["Layers"][0], diff_id.as_str());
    validate_store(&k.path("root"), Partial::Refuse);
    k.ok(&["push", &name]);
    let raw: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("docker://{name}"))).unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    // Pull it back into an empty store.
    let k2 = Kiln::new();
    k2.ok(&["pull", &name]);
    let history = k2.ok(&["history", &name]);
    assert!(history.contains("COPY hello.txt /"), "{history}");
    assert_eq!(validate_remote(&name).layers, 1);
    validate_store(&k2.path("root"), Partial::Refuse);
}

#[test]
fn imagetools_create_across_registries_copies_blobs() {
    let k = Kiln::new();
    let plain = k.reg().to_string();
    let token = k.env["KILN_TEST_REGISTRY_TOKEN"].clone();
    let rw = k.with_stdin(
        &[
            "login",
            "-u",
            &k.env["KILN_TEST_TOKEN_USER"],
            "--password-stdin",
            &token,
        ],
        &k.env["KILN_TEST_TOKEN_PASS"],
    );
    assert!(
        rw.status.success(),
        "{}",
        String::from_utf8_lossy(&rw.stderr)
    );
    let target = format!("{token}/{}:multi", unique("kiln-e2e/xreg"));
    k.ok(&[
        "imagetools",
        "create",
        "-t",
        &target,
        &format!("{plain}/library/busybox:latest-amd64"),
        &format!("{plain}/library/busybox:latest-arm64"),
    ]);
    let summary = k.ok(&["imagetools", "inspect", &target]);
    assert!(
        summary.contains("linux/amd64") && summary.contains("linux/arm64"),
        "{summary}"
    );
    // The blobs really are in the target registry: pull both platforms from there.
    for arch in ["amd64", "arm64"] {
        let k2 = Kiln::new();
        std::fs::copy(k.path("docker/config.json"), k2.path("docker/config.json")).unwrap();
        k2.ok(&["pull", "--platform", &format!("linux/{arch}"), &target]);
        let v: serde_json::Value = serde_json::from_str(&k2.ok(&["inspect", &target])).unwrap();
        assert_eq!(v[0]["Architecture"], arch);
    }
}

#[test]
fn docker_typed_images_hold_together_through_imagetools_pull_and_copy() {
    // buildx's rule: a Docker manifest list when every source is Docker-typed, else an OCI
    // index (which may list Docker manifests). Either way the result validates.
    let k = Kiln::new();
    let reg = k.reg().to_string();
    let v2s2 = format!("{reg}/{}:arm64", unique("validate-imagetools/v2s2"));
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/library/busybox:latest-arm64"),
        &format!("docker://{v2s2}"),
    ]);
    let mixed = format!("{reg}/{}:mixed", unique("validate-imagetools/create"));
    k.ok(&[
        "imagetools",
        "create",
        "-t",
        &mixed,
        &format!("{reg}/library/busybox:latest-amd64"),
        &v2s2,
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("docker://{mixed}"))).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(validate_remote(&mixed).images, 2);

    // A Docker manifest list, pulled one platform at a time, and copied whole.
    let list = format!("{reg}/{}:list", unique("validate-imagetools/list"));
    skopeo(&[
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{reg}/library/busybox:latest"),
        &format!("docker://{list}"),
    ]);
    let k2 = Kiln::new();
    k2.ok(&["pull", "--platform", "linux/arm64", &list]);
    let reports = validate_store(&k2.path("root"), Partial::SkipMissingImages);
    assert_eq!(reports.iter().map(|r| r.images).sum::<usize>(), 1);
    let layout = k2.path("list-layout");
    k2.ok(&["copy", &list, &format!("oci:{}:v1", layout.display())]);
    assert_eq!(validate_named(&layout, "v1", Partial::Refuse).images, 2);
    let copied = format!("{reg}/{}:copied", unique("validate-imagetools/list"));
    k2.ok(&["copy", &list, &copied]);
    assert_eq!(validate_remote(&copied).images, 2);
}
