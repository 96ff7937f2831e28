//! Debian packages: `/var/lib/dpkg/status` and distroless' `/var/lib/dpkg/status.d/*`,
//! licenses from machine-readable `/usr/share/doc/NAME/copyright` files.

use std::io::BufReader;

use rayon::prelude::*;

use super::distro::Distro;
use super::root::ImageRoot;
use super::{license, purl, Found, Package, PackageKind};

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d";
/// A full Debian desktop's status is under 10 MiB.
const MAX_STATUS: u64 = 64 * 1024 * 1024;
/// One status.d file describes one package.
const MAX_STATUS_D_FILE: u64 = 4 * 1024 * 1024;
/// Files read from status.d at most.
const MAX_STATUS_D_FILES: usize = 50_000;
/// Copyright files are rarely over 100 KiB; bigger ones are not read for licenses.
const MAX_COPYRIGHT: u64 = 2 * 1024 * 1024;

/// The Debian packages of the image (none when it has no dpkg database).
pub fn scan(
    image: &ImageRoot,
    distro: Option<&Distro>,
    max_packages: usize,
    warnings: &mut Vec<String>,
) -> Found {
    let mut packages = Vec::new();
    match image.read(STATUS, MAX_STATUS) {
        Ok(bytes) => packages.extend(parse_status(&bytes, STATUS, distro)),
        Err(super::root::ReadError::Missing(_)) => {}
        Err(e) => warnings.push(error_chain(&e)),
    }
    for name in image.list_dir(STATUS_D, MAX_STATUS_D_FILES) {
        if name.ends_with(".md5sums") || name.starts_with('.') {
            continue;
        }
        let path = format!("{STATUS_D}/{name}");
        match image.read(&path, MAX_STATUS_D_FILE) {
            Ok(bytes) => packages.extend(parse_status(&bytes, &path, distro)),
            Err(e) => warnings.push(error_chain(&e)),
        }
    }
    // Bound the copyright look-ups a hostile status of tiny stanzas could multiply.
    if packages.len() > max_packages {
        warnings.push(format!(
            "the dpkg database lists {} packages; only the first {max_packages} are kept",
            packages.len()
        ));
        packages.truncate(max_packages);
    }
    packages
        .par_iter_mut()
        .for_each(|p| p.license = copyright_license(image, &p.name));
    Ok(packages)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The installed packages of a dpkg status file (paragraphs that do not parse
/// or lack a name or version are skipped).
pub fn parse_status(bytes: &[u8], location: &str, distro: Option<&Distro>) -> Vec<Package> {
    // Invalid UTF-8 would end the reader at the first bad line: replace it instead.
    let text = String::from_utf8_lossy(bytes);
    deb822_fast::Deb822::iter_paragraphs_from_reader(BufReader::new(text.as_bytes()))
        .filter_map(|p| p.ok())
        .filter_map(|p| package(&p, location, distro))
        .collect()
}

fn package(p: &deb822_fast::Paragraph, location: &str, distro: Option<&Distro>) -> Option<Package> {
    let name = p.get("Package")?.trim();
    let version = p.get("Version")?.trim();
    if name.is_empty() || version.is_empty() {
        return None;
    }
    // "deinstall ok config-files" and the like are not in the image; status.d
    // paragraphs (distroless) have no Status field at all.
    if let Some(status) = p.get("Status") {
        if status.split_whitespace().last() != Some("installed") {
            return None;
        }
    }
    let arch = p.get("Architecture").unwrap_or("").trim();
    // "Source: glibc (2.36-9)" names the source package and, when it differs, its version.
    let upstream = p
        .get("Source")
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let distro_q = distro.map(|d| d.qualifier()).unwrap_or_default();
    let namespace = distro.map(|d| d.id.as_str()).unwrap_or("debian");
    let purl = purl(
        "deb",
        Some(namespace),
        name,
        version,
        &[
            ("arch", arch),
            ("upstream", &upstream),
            ("distro", &distro_q),
        ],
    );
    let maintainer = p.get("Maintainer").map(person);
    Some(Package {
        kind: PackageKind::Deb,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        license: None,
        supplier: maintainer.clone(),
        originator: maintainer,
        locations: vec![location.to_string()],
    })
}

/// `Name <email>` as SPDX writes a person: `Person: Name (email)`.
pub fn person(contact: &str) -> String {
    let contact = contact.trim();
    match contact.split_once('<') {
        Some((name, rest)) => {
            let email = rest.trim_end().trim_end_matches('>');
            format!("Person: {} ({})", name.trim(), email.trim())
        }
        None => format!("Person: {contact}"),
    }
}

/// The licenses of a machine-readable (DEP-5) copyright file; free-text ones give none.
fn copyright_license(image: &ImageRoot, name: &str) -> Option<String> {
    if name.contains('/') || name == ".." {
        return None;
    }
    let bytes = image
        .read(&format!("/usr/share/doc/{name}/copyright"), MAX_COPYRIGHT)
        .ok()?;
    parse_copyright(&bytes)
}

/// The `License:` short names of a DEP-5 copyright file, joined with AND.
pub fn parse_copyright(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut paragraphs =
        deb822_fast::Deb822::iter_paragraphs_from_reader(BufReader::new(text.as_bytes()));
    let header = paragraphs.next()?.ok()?;
    if !header.get("Format")?.contains("copyright-format") {
        return None;
    }
    let names: Vec<String> = std::iter::once(Ok(header))
        .chain(paragraphs)
        .filter_map(|p| p.ok())
        .filter_map(|p| {
            // The first line is the short name; the rest is the license text.
            let v = p.get("License")?;
            Some(v.lines().next().unwrap_or("").trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .flat_map(|n| split_or(&n))
        .collect();
    license::all_of(names.iter().map(String::as_str))
}

/// DEP-5 writes alternatives as `GPL-2+ or Artistic`: each is a license present.
fn split_or(n: &str) -> Vec<String> {
    n.split(" or ")
        .flat_map(|x| x.split(" and "))
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stanzas copied from a Debian 12 machine's /var/lib/dpkg/status.
    const STATUS_FIXTURE: &str = include_str!("testdata/dpkg-status");
    /// debianutils' DEP-5 copyright file.
    const COPYRIGHT_FIXTURE: &str = include_str!("testdata/dpkg-copyright");

    fn debian12() -> Distro {
        Distro {
            id: "debian".into(),
            version_id: "12".into(),
        }
    }

    #[test]
    fn status_gives_installed_packages_with_purls() {
        let pkgs = parse_status(STATUS_FIXTURE.as_bytes(), STATUS, Some(&debian12()));
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libc6", "netbase"]);
        let libc = &pkgs[1];
        assert_eq!(libc.version, "2.36-9+deb12u14");
        assert_eq!(
            libc.purl,
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert_eq!(
            libc.supplier.as_deref(),
            Some("Person: GNU Libc Maintainers (debian-glibc@lists.debian.org)")
        );
    }

    #[test]
    fn copyright_licenses() {
        assert_eq!(
            parse_copyright(COPYRIGHT_FIXTURE.as_bytes()).as_deref(),
            Some("GPL-2.0-or-later AND LicenseRef-public-domain AND SMAIL-GPL")
        );
        assert_eq!(parse_copyright(b"This is free text, not DEP-5.\n"), None);
    }

    #[test]
    fn garbage_is_skipped() {
        let junk = b"\0\xff\xfe: :\n  \n\nPackage: ok\nVersion: 1\n\n:::\n \tx\nPackage\n";
        let pkgs = parse_status(junk, STATUS, None);
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].purl, "pkg:deb/debian/ok@1");
    }
}
