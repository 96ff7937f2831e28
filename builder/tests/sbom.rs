//! The built-in SBOM scanner on real images: the test environment's
//! Debian-packages base (packages and versions as `dpkg-deb` reads them from
//! the .deb files), the busybox base, the SPDX 2.3 schema, hostile roots.

mod support;

#[allow(dead_code)] // the tests use the scanner, not every helper of the module
#[path = "../src/attest/mod.rs"]
mod attest;

use std::path::{Path, PathBuf};
use std::process::Command;

use attest::sbom::{scan, ScanOptions};
use support::{Build, TestEnv};

/// Exports the image's root filesystem with `FROM IMAGE` and `-o type=local`.
fn export_root(b: &Build, image: &str) -> PathBuf {
    b.write("Dockerfile", &format!("FROM {image}\n"));
    let dest = b.path("rootfs");
    b.build(&["-o", &format!("type=local,dest={}", dest.display())]);
    dest
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .expect("run dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb -f {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn spdx_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/schemas/spdx-2.3.schema.json"
    ))
    .expect("vendored SPDX schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("a valid schema")
}

fn assert_valid_spdx(doc: &serde_json::Value) {
    let validator = spdx_schema();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "SPDX schema errors: {errors:#?}");
}

#[test]
fn debian_packages_image_lists_each_deb_with_version_and_purl() {
    let env = TestEnv::load();
    let b = Build::new();
    let root = export_root(&b, env.get("KILN_TEST_DEBIAN_IMAGE"));
    let doc = scan(&root, &ScanOptions::new(env.get("KILN_TEST_DEBIAN_IMAGE"))).expect("scan");
    assert_eq!(
        doc.distro.as_ref().map(|d| d.qualifier()).as_deref(),
        Some("debian-12")
    );

    let mut debs: Vec<PathBuf> = std::fs::read_dir(env.get("KILN_TEST_DEBIAN_DEBS"))
        .expect("the .deb directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    assert!(debs.len() >= 3, "setup.sh downloads three .debs: {debs:?}");
    for deb in &debs {
        let (name, version, arch) = (
            deb_field(deb, "Package"),
            deb_field(deb, "Version"),
            deb_field(deb, "Architecture"),
        );
        let found: Vec<_> = doc.packages.iter().filter(|p| p.name == name).collect();
        assert_eq!(found.len(), 1, "{name} once in {:#?}", doc.packages);
        let p = found[0];
        assert_eq!(p.version, version, "{name}");
        let want = format!(
            "pkg:deb/debian/{name}@{}?arch={arch}&distro=debian-12",
            version.replace('+', "%2B")
        );
        assert_eq!(p.purl, want, "{name}");
        assert_eq!(p.locations, ["/var/lib/dpkg/status"]);
    }
    // netbase's copyright is machine-readable (GPL-2); base-files' is free text.
    let license = |n: &str| {
        doc.packages
            .iter()
            .find(|p| p.name == n)
            .and_then(|p| p.license.clone())
    };
    assert_eq!(license("netbase").as_deref(), Some("GPL-2.0-only"));
    assert_eq!(license("base-files"), None);
    assert_eq!(
        doc.packages.len(),
        debs.len(),
        "only the dpkg packages: {:#?}",
        doc.packages
    );

    let json = doc.to_spdx_json();
    assert_valid_spdx(&json);
    let purls: Vec<&str> = json["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert_eq!(purls.len(), debs.len());
    assert!(
        purls.iter().all(|p| p.starts_with("pkg:deb/debian/")),
        "{purls:?}"
    );
}

#[test]
fn busybox_image_has_no_packages_and_a_valid_document() {
    let env = TestEnv::load();
    let b = Build::new();
    let root = export_root(&b, &support::busybox(&env));
    let doc = scan(&root, &ScanOptions::new("busybox")).expect("scan");
    assert!(doc.packages.is_empty(), "{:#?}", doc.packages);
    assert!(doc.warnings.is_empty(), "{:#?}", doc.warnings);
    let json = doc.to_spdx_json();
    assert_valid_spdx(&json);
    // The schema check is a real one: a wrongly typed field fails it.
    let mut bad = json.clone();
    bad["packages"][0]["filesAnalyzed"] = serde_json::json!("no");
    assert!(!spdx_schema().is_valid(&bad));
    // Only the image itself, which the document describes.
    assert_eq!(json["packages"].as_array().expect("packages").len(), 1);
    assert_eq!(json["relationships"][0]["relationshipType"], "DESCRIBES");
}

#[test]
fn language_packages_of_a_root() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    let w = |rel: &str, data: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    };
    w("app/Cargo.lock", include_str!("../../Cargo.lock"));
    w(
        "srv/node_modules/@scope/pkg/package.json",
        r#"{"name":"@scope/pkg","version":"1.2.3","license":"ISC"}"#,
    );
    w(
        "srv/node_modules/ms/package.json",
        r#"{"name":"ms","version":"2.1.3","license":"MIT"}"#,
    );
    w(
        "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nbody\n",
    );
    w(
        "go/src/app/go.sum",
        "rsc.io/quote v1.5.2 h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y=\n",
    );
    let doc = scan(root, &ScanOptions::new("lang")).expect("scan");
    let purls: Vec<&str> = doc.packages.iter().map(|p| p.purl.as_str()).collect();
    for want in [
        "pkg:npm/%40scope/pkg@1.2.3",
        "pkg:npm/ms@2.1.3",
        "pkg:pypi/six@1.16.0",
        "pkg:golang/rsc.io/quote@v1.5.2",
    ] {
        assert!(purls.contains(&want), "{want} in {purls:?}");
    }
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:cargo/serde@")),
        "{purls:?}"
    );
    assert_valid_spdx(&doc.to_spdx_json());
}

#[test]
fn hostile_roots_are_contained() {
    let outside = tempfile::tempdir().expect("tmp");
    std::fs::write(
        outside.path().join("status"),
        "Package: host-secret\nStatus: install ok installed\nVersion: 1\n\n",
    )
    .expect("write");
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/lib/dpkg/status.d")).expect("mkdir");
    // An absolute symlink resolves inside the root, where nothing is.
    std::os::unix::fs::symlink(
        outside.path().join("status"),
        root.join("var/lib/dpkg/status"),
    )
    .expect("symlink");
    // A relative one climbing out is clamped at the root.
    std::os::unix::fs::symlink(
        "../../../../../../../../../../..".to_string()
            + &outside.path().join("status").display().to_string(),
        root.join("var/lib/dpkg/status.d/escape"),
    )
    .expect("symlink");
    // A directory symlink out of the root is not walked.
    std::os::unix::fs::symlink(outside.path(), root.join("host")).expect("symlink");
    std::fs::write(
        outside.path().join("package-lock.json"),
        r#"{"packages":{"node_modules/host-secret":{"version":"1"}}}"#,
    )
    .expect("write");
    // A 1 GiB sparse apk database is refused by its size, not read.
    std::fs::create_dir_all(root.join("lib/apk/db")).expect("mkdir");
    let f = std::fs::File::create(root.join("lib/apk/db/installed")).expect("create");
    f.set_len(1 << 30).expect("sparse");
    // A FIFO where a file is expected must not block the scan.
    let fifo = root.join("var/lib/dpkg/status.d/fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let start = std::time::Instant::now();
    let doc = scan(root, &ScanOptions::new("hostile")).expect("scan");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(doc.packages.is_empty(), "{:#?}", doc.packages);
    assert!(
        doc.warnings
            .iter()
            .any(|w| w.contains("/lib/apk/db/installed is larger than")),
        "{:#?}",
        doc.warnings
    );
}

#[test]
fn a_file_instead_of_a_directory_is_an_error() {
    let f = tempfile::NamedTempFile::new().expect("tmp");
    let err = scan(f.path(), &ScanOptions::new("x")).expect_err("not a directory");
    assert!(
        err.to_string().contains("not a readable directory"),
        "{err}"
    );
}

/// A uvarint-length-prefixed string, as the Go linker writes build info.
fn go_string(s: &[u8], out: &mut Vec<u8>) {
    let mut n = s.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(s);
}

/// Compiles a C program whose ELF sections hold the given bytes (gcc, from setup.sh).
fn elf_with_sections(dir: &Path, sections: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut c = String::new();
    for (i, (name, bytes)) in sections.iter().enumerate() {
        let body: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
        c.push_str(&format!(
            "__attribute__((used, section(\"{name}\"))) const unsigned char s{i}[] = {{{}}};\n",
            body.join(",")
        ));
    }
    c.push_str("int main(void) { return 0; }\n");
    let src = dir.join("prog.c");
    std::fs::write(&src, c).expect("write C");
    let bin = dir.join("root/usr/local/bin/prog");
    std::fs::create_dir_all(bin.parent().expect("parent")).expect("mkdir");
    let out = Command::new("gcc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn binaries_with_go_build_info_and_cargo_auditable_data() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tmp");
    // Go 1.18+ build info: header, then the Go version and the module info inline.
    let modinfo = "path\texample.com/hello\nmod\texample.com/hello\tv1.0.0\t\ndep\tgolang.org/x/text\tv0.14.0\th1:abc=\nbuild\t-compiler=gc\n";
    let mut sentinelled = vec![0x30u8; 16];
    sentinelled.extend_from_slice(modinfo.as_bytes());
    sentinelled.extend_from_slice(&[0x31u8; 16]);
    let mut buildinfo = b"\xff Go buildinf:\x08\x02".to_vec();
    buildinfo.resize(32, 0);
    go_string(b"go1.21.5", &mut buildinfo);
    go_string(&sentinelled, &mut buildinfo);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(br#"{"packages":[{"name":"hello","version":"0.1.0","source":"local","root":true},{"name":"libc","version":"0.2.150","source":"crates.io"}]}"#)
        .expect("zlib");
    elf_with_sections(
        dir.path(),
        &[
            (".go.buildinfo", buildinfo),
            (".dep-v0", z.finish().expect("zlib")),
        ],
    );
    let doc = scan(&dir.path().join("root"), &ScanOptions::new("bin")).expect("scan");
    let purls: Vec<&str> = doc.packages.iter().map(|p| p.purl.as_str()).collect();
    assert_eq!(
        purls,
        [
            "pkg:cargo/hello@0.1.0",
            "pkg:cargo/libc@0.2.150",
            "pkg:golang/example.com/hello@v1.0.0",
            "pkg:golang/golang.org/x/text@v0.14.0",
            "pkg:golang/stdlib@1.21.5"
        ]
    );
    assert!(doc
        .packages
        .iter()
        .all(|p| p.locations == ["/usr/local/bin/prog"]));
}

#[test]
fn a_status_of_tiny_stanzas_is_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).expect("mkdir");
    let status: String = (0..50_000)
        .map(|i| format!("Package: p{i}\nVersion: 1\n\n"))
        .collect();
    std::fs::write(root.join("var/lib/dpkg/status"), status).expect("write");
    let mut opts = ScanOptions::new("tiny");
    opts.limits.max_packages = 1000;
    let doc = scan(root, &opts).expect("scan");
    assert_eq!(doc.packages.len(), 1000);
    assert!(
        doc.warnings
            .iter()
            .any(|w| w.contains("lists 50000 packages")),
        "{:#?}",
        doc.warnings
    );
}
