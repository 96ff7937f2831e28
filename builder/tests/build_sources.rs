//! Sources of `kiln build` end to end: `COPY --link --chown=<name>` (names from
//! the stage below, the layer stays independent), ADD of a URL with HTTP
//! revalidation caching, and `--build-context name=oci-layout://...`.

mod support;

use std::path::Path;
use std::process::Command;
use support::{busybox, Build, TestEnv};

/// `(path, uid, gid)` of every entry of the image's last layer (GNU tar's listing).
fn last_layer_entries(b: &Build, tag: &str) -> Vec<(String, u32, u32)> {
    let manifest = b.manifest(tag);
    let layers = manifest["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(b.blob(last))
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

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
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
    let entries = last_layer_entries(&b, "docker.io/kiln-test/link-chown:1");
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
    let entries2 = last_layer_entries(&b, "docker.io/kiln-test/link-chown:2");
    assert_eq!(entries, entries2);

    // An unknown name is 0:0, as BuildKit's readUser resolves a name missing
    // from the image's /etc/passwd.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY --link --chown=nosuchuser app /opt/app/\n",
            busybox(&env)
        ),
    );
    b.build(&["-t", "kiln-test/link-chown:unknown"]);
    let entries = last_layer_entries(&b, "docker.io/kiln-test/link-chown:unknown");
    let run_sh = entries.iter().find(|(p, _, _)| p == "opt/app/run.sh");
    assert_eq!(run_sh.map(|e| (e.1, e.2)), Some((0, 0)), "{entries:?}");
    // Linked layers rebased on another RUN are real layers of their images.
    for tag in ["1", "2", "unknown"] {
        b.validate_image(&format!("docker.io/kiln-test/link-chown:{tag}"));
    }
}

/// A file server for ADD: serves `/data.txt` with an ETag (the content's
/// version), answers `If-None-Match` with 304, and counts requests.
struct FileServer {
    base: String,
    state: std::sync::Arc<std::sync::Mutex<ServerState>>,
}

#[derive(Default)]
struct ServerState {
    body: Vec<u8>,
    version: u32,
    requests: u32,
    conditional: u32,
    not_modified: u32,
}

impl FileServer {
    fn start(body: &str) -> FileServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = std::sync::Arc::new(std::sync::Mutex::new(ServerState {
            body: body.as_bytes().to_vec(),
            version: 1,
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut if_none_match = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("if-none-match") {
                            if_none_match = Some(v.trim().to_string());
                        }
                    }
                }
                let mut s = shared.lock().unwrap();
                s.requests += 1;
                let etag = format!("\"v{}\"", s.version);
                let path = request_line.split(' ').nth(1).unwrap_or("/");
                let reply = if path != "/data.txt" {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .as_bytes()
                        .to_vec()
                } else if let Some(tag) = if_none_match {
                    s.conditional += 1;
                    if tag == etag {
                        s.not_modified += 1;
                        format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
                            .into_bytes()
                    } else {
                        full(&s.body, &etag)
                    }
                } else {
                    full(&s.body, &etag)
                };
                drop(s);
                let _ = stream.write_all(&reply);
            }
        });
        FileServer { base, state }
    }

    fn url(&self) -> String {
        format!("{}/data.txt", self.base)
    }

    fn set_body(&self, body: &str) {
        let mut s = self.state.lock().unwrap();
        s.body = body.as_bytes().to_vec();
        s.version += 1;
    }

    /// (requests, conditional requests, 304 answers) so far.
    fn counts(&self) -> (u32, u32, u32) {
        let s = self.state.lock().unwrap();
        (s.requests, s.conditional, s.not_modified)
    }
}

fn full(body: &[u8], etag: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn sha256(data: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

#[test]
fn add_url_revalidates_with_etag_and_reruns_only_what_depends_on_a_change() {
    let env = TestEnv::load();
    let server = FileServer::start("first\n");
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo base > /base.txt\nADD {} /data.txt\nRUN cat /data.txt > /copy.txt\n",
            busybox(&env),
            server.url()
        ),
    );
    b.build(&["-t", "kiln-test/http:1"]);
    assert_eq!(server.counts(), (1, 0, 0), "one plain download");
    let root = b.unpack("docker.io/kiln-test/http:1");
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "first\n"
    );

    // Unchanged on the server: one conditional request answered 304, nothing runs.
    let meta = b.build(&["-t", "kiln-test/http:2"]);
    assert_eq!(server.counts(), (2, 1, 1));
    assert_eq!(meta["kiln.vertices.executed"], 0, "{meta}");
    assert_eq!(
        b.manifest("docker.io/kiln-test/http:1"),
        b.manifest("docker.io/kiln-test/http:2")
    );

    // Changed: downloaded again; the download, the ADD and the RUN reading it
    // run, the RUN before the ADD stays cached.
    server.set_body("second\n");
    let meta = b.build(&["-t", "kiln-test/http:3"]);
    assert_eq!(server.counts(), (3, 2, 1));
    assert_eq!(meta["kiln.vertices.executed"], 3, "{meta}");
    let root = b.unpack("docker.io/kiln-test/http:3");
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "second\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("base.txt")).unwrap(),
        "base\n"
    );

    // --no-cache downloads without validators.
    b.build(&["--no-cache", "-t", "kiln-test/http:4"]);
    assert_eq!(server.counts(), (4, 2, 1));

    // `kiln prune --all` forgets the downloads: the next build asks without validators.
    let out = b.kiln(&["prune", "--all", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.build(&[]);
    assert_eq!(server.counts(), (5, 2, 1));
}

#[test]
fn add_url_with_a_known_checksum_sends_no_request() {
    let env = TestEnv::load();
    let server = FileServer::start("pinned\n");
    let b = Build::new();
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nADD --checksum={} {} /pinned.txt\n",
            busybox(&env),
            sha256("pinned\n"),
            server.url()
        ),
    );
    b.build(&["-t", "kiln-test/http-sum:1"]);
    assert_eq!(server.counts(), (1, 0, 0));
    let meta = b.build(&["-t", "kiln-test/http-sum:2"]);
    assert_eq!(
        server.counts(),
        (1, 0, 0),
        "the content is known: no request"
    );
    assert_eq!(meta["kiln.vertices.executed"], 0, "{meta}");
    let root = b.unpack("docker.io/kiln-test/http-sum:2");
    assert_eq!(
        std::fs::read_to_string(root.join("pinned.txt")).unwrap(),
        "pinned\n"
    );
    assert_eq!(
        owner(&root.join("pinned.txt")),
        (0, 0),
        "ADD of a URL gives root-owned files"
    );

    // A checksum the server's content does not match fails and stores nothing.
    b.write(
        "Dockerfile",
        &format!(
            "FROM {}\nADD --checksum={} {} /pinned.txt\n",
            busybox(&env),
            sha256("other\n"),
            server.url()
        ),
    );
    let err = b.build_fails(&[]);
    assert!(err.contains("digest mismatch"), "{err}");
}

/// Copies the env registry's busybox into an OCI layout with skopeo (all
/// platforms: the layout's entry is an index).
fn busybox_layout(env: &TestEnv, dir: &Path, tag: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}", busybox(env)))
        .arg(format!("oci:{}:{tag}", dir.display()))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The digest of the layout's entry tagged `tag`.
fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn oci_layout_contexts_by_tag_and_digest_in_from_and_copy_from() {
    let env = TestEnv::load();
    let b = Build::new();
    let layout = b.work.path().join("layout");
    busybox_layout(&env, &layout, "v1");
    b.write(
        "Dockerfile",
        "FROM base AS main\nRUN echo built > /built.txt\nCOPY --from=tools /bin/busybox /copied-busybox\n\
         FROM base AS mounted\nRUN --mount=from=tools,target=/tools cp /tools/etc/passwd /passwd.copy\n",
    );
    let by_tag = format!("base=oci-layout://{}:v1", layout.display());
    let digest = layout_digest(&layout, "v1");
    let by_digest = format!("tools=oci-layout://{}@{digest}", layout.display());
    b.build(&[
        "-t",
        "kiln-test/layout:1",
        "--target",
        "main",
        "--build-context",
        &by_tag,
        "--build-context",
        &by_digest,
    ]);
    let root = b.unpack("docker.io/kiln-test/layout:1");
    assert_eq!(
        std::fs::read_to_string(root.join("built.txt")).unwrap(),
        "built\n"
    );
    let original = std::fs::read(root.join("bin/busybox")).unwrap();
    assert_eq!(
        std::fs::read(root.join("copied-busybox")).unwrap(),
        original
    );
    // The base's layers are the layout's (the amd64 image of its index).
    let manifest = b.manifest("docker.io/kiln-test/layout:1");
    let layers = manifest["layers"].as_array().unwrap();
    let layout_index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let amd64 = layout_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(amd64)).unwrap())
            .unwrap();
    assert_eq!(layers[0]["digest"], base["layers"][0]["digest"]);
    // The layout itself, and the image built on it.
    support::validate_layout(&layout, kiln_oci::walk::Partial::Refuse);
    b.validate_image("docker.io/kiln-test/layout:1");

    // RUN --mount from= a layout context.
    b.build(&[
        "-t",
        "kiln-test/layout:2",
        "--target",
        "mounted",
        "--build-context",
        &format!("base=oci-layout://{}:v1", layout.display()),
        "--build-context",
        &format!("tools=oci-layout://{}:v1", layout.display()),
    ]);
    let root = b.unpack("docker.io/kiln-test/layout:2");
    assert!(std::fs::read_to_string(root.join("passwd.copy"))
        .unwrap()
        .contains("app:x:1000:1000"));
    b.validate_image("docker.io/kiln-test/layout:2");

    // Built again: the layout's image is cached like a pinned registry image.
    let meta = b.build(&[
        "--target",
        "main",
        "--build-context",
        &by_tag,
        "--build-context",
        &by_digest,
    ]);
    assert_eq!(meta["kiln.vertices.executed"], 0, "{meta}");

    // A missing tag names the tag and the tags the layout has.
    let err = b.build_fails(&[
        "--target",
        "main",
        "--build-context",
        &format!("base=oci-layout://{}:nosuchtag", layout.display()),
        "--build-context",
        &by_digest,
    ]);
    assert!(err.contains("nosuchtag"), "{err}");
    assert!(err.contains("v1"), "the known tags are listed: {err}");
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert!(err.contains("layout's"), "the hint is about layouts: {err}");
    // Not a layout at all.
    let err = b.build_fails(&["--build-context", "base=oci-layout:///nowhere"]);
    assert!(err.contains("oci-layout:///nowhere"), "{err}");
}
