//! Alpine packages: the apk database `/lib/apk/db/installed`.
//!
//! The database is apk-tools' own line format (`P:name`, `V:version`, one
//! package per blank-line-separated block); no maintained Rust crate reads it.

use super::distro::Distro;
use super::root::{ImageRoot, ReadError};
use super::{license, purl, Found, Package, PackageKind};

const INSTALLED: &str = "/lib/apk/db/installed";
/// A large Alpine image's database is a few MiB (it lists every file).
const MAX_INSTALLED: u64 = 128 * 1024 * 1024;

/// The Alpine packages of the image (none when it has no apk database).
pub fn scan(image: &ImageRoot, distro: Option<&Distro>) -> Found {
    match image.read(INSTALLED, MAX_INSTALLED) {
        Ok(bytes) => Ok(parse_installed(
            &String::from_utf8_lossy(&bytes),
            INSTALLED,
            distro,
        )),
        Err(ReadError::Missing(_)) => Ok(Vec::new()),
        Err(e) => Err(format!("{e}")),
    }
}

#[derive(Default)]
struct Block<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
    license: &'a str,
    origin: &'a str,
    maintainer: &'a str,
}

/// The packages of an apk `installed` database.
pub fn parse_installed(text: &str, location: &str, distro: Option<&Distro>) -> Vec<Package> {
    let mut out = Vec::new();
    let mut block = Block::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some(p) = finish(&block, location, distro) {
                out.push(p);
            }
            block = Block::default();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "P" => block.name = value.trim(),
            "V" => block.version = value.trim(),
            "A" => block.arch = value.trim(),
            "L" => block.license = value.trim(),
            "o" => block.origin = value.trim(),
            "m" => block.maintainer = value.trim(),
            _ => {}
        }
    }
    out
}

fn finish(b: &Block<'_>, location: &str, distro: Option<&Distro>) -> Option<Package> {
    if b.name.is_empty() || b.version.is_empty() {
        return None;
    }
    let distro_q = distro.map(|d| d.qualifier()).unwrap_or_default();
    let namespace = distro.map(|d| d.id.as_str()).unwrap_or("alpine");
    let purl = purl(
        "apk",
        Some(namespace),
        b.name,
        b.version,
        &[
            ("arch", b.arch),
            ("upstream", b.origin),
            ("distro", &distro_q),
        ],
    );
    // Older packages list licenses separated by spaces ("MIT BSD GPL2+").
    let license = match license::normalize(b.license) {
        Some(l) if !l.starts_with("LicenseRef-") => Some(l),
        _ => license::all_of(b.license.split_whitespace()),
    };
    let maintainer = (!b.maintainer.is_empty()).then(|| super::dpkg::person(b.maintainer));
    Some(Package {
        kind: PackageKind::Apk,
        name: b.name.to_string(),
        version: b.version.to_string(),
        purl,
        license,
        supplier: maintainer.clone(),
        originator: maintainer,
        locations: vec![location.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two entries of Alpine 3.19's /lib/apk/db/installed (file lists shortened).
    const INSTALLED_FIXTURE: &str = "C:Q1l5sRgk3YoEZ8TVlh0zvl0rVgFVU=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407717
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1704216932
c:4dc6eb8ea9e6d3ec4a7a5e2b1f93c8fa9fa52fa7
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1kSglqgNrDVt1Yoj3dwZJGXSkD4Q=
R:libc.musl-x86_64.so.1

C:Q1bnypsWp7t6GuLoOPN9B2ZTn2/5c=
P:busybox
V:1.36.1-r15
A:x86_64
S:507831
I:925696
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1703691424
D:so:libc.musl-x86_64.so.1
F:bin
R:busybox
";

    #[test]
    fn installed_gives_packages() {
        let distro = Distro {
            id: "alpine".into(),
            version_id: "3.19.1".into(),
        };
        let pkgs = parse_installed(INSTALLED_FIXTURE, INSTALLED, Some(&distro));
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].name, "musl");
        assert_eq!(pkgs[0].version, "1.2.4_git20230717-r4");
        assert_eq!(
            pkgs[0].purl,
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1&upstream=musl"
        );
        assert_eq!(pkgs[1].license.as_deref(), Some("GPL-2.0-only"));
        assert_eq!(
            pkgs[1].supplier.as_deref(),
            Some("Person: Sören Tempel (soeren+alpine@soeren-tempel.net)")
        );
    }

    /// The spdx crate reads a bare `BSD` as BSD-2-Clause (its imprecise-name table).
    #[test]
    fn old_space_separated_licenses() {
        let pkgs = parse_installed("P:x\nV:1-r0\nL:MIT BSD\n", INSTALLED, None);
        assert_eq!(pkgs[0].license.as_deref(), Some("MIT AND BSD-2-Clause"));
        assert!(parse_installed("\0garbage\nP:\nV:\n", INSTALLED, None).is_empty());
    }
}
