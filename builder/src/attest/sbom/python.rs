//! Python distributions: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO`
//! (core metadata, RFC 822 headers).

use std::path::Path;

use mailparse::MailHeaderMap;

use super::root::read_host_file;
use super::{license, purl, Found, Package, PackageKind};

/// METADATA carries the long description; a few MiB is already unusual.
const MAX_METADATA: u64 = 16 * 1024 * 1024;

/// The distribution described by a METADATA / PKG-INFO file.
pub fn parse_metadata_file(host: &Path, shown: &str) -> Found {
    let bytes = read_host_file(host, shown, MAX_METADATA).map_err(|e| e.to_string())?;
    parse_metadata(&bytes, shown)
}

/// The distribution of core metadata bytes.
pub fn parse_metadata(bytes: &[u8], location: &str) -> Found {
    let (headers, _) = mailparse::parse_headers(bytes).map_err(|e| format!("{location}: {e}"))?;
    let (Some(name), Some(version)) = (
        headers.get_first_value("Name"),
        headers.get_first_value("Version"),
    ) else {
        return Ok(Vec::new());
    };
    let (name, version) = (name.trim().to_string(), version.trim().to_string());
    if name.is_empty() || version.is_empty() {
        return Ok(Vec::new());
    }
    // Metadata 2.4's License-Expression is SPDX; the older License field is
    // free text (sometimes the whole license), used when it is short.
    let license = headers
        .get_first_value("License-Expression")
        .and_then(|l| license::normalize(&l))
        .or_else(|| {
            headers
                .get_first_value("License")
                .filter(|l| !l.contains('\n') && l.len() <= 64 && l.trim() != "UNKNOWN")
                .and_then(|l| license::normalize(&l))
        });
    let author = author(&headers);
    Ok(vec![Package {
        kind: PackageKind::Python,
        purl: purl("pypi", None, &normalize_name(&name), &version, &[]),
        name,
        version,
        license,
        supplier: author.clone(),
        originator: author,
        locations: vec![location.to_string()],
    }])
}

/// PEP 503 name normalization, as the purl spec asks for pypi names.
fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

fn author(headers: &[mailparse::MailHeader<'_>]) -> Option<String> {
    let name = headers
        .get_first_value("Author")
        .filter(|a| !a.trim().is_empty());
    let email = headers
        .get_first_value("Author-email")
        .filter(|a| !a.trim().is_empty());
    match (name, email) {
        (Some(n), Some(e)) => Some(format!("Person: {} ({})", n.trim(), e.trim())),
        (Some(n), None) => Some(format!("Person: {}", n.trim())),
        // Author-email often holds `Name <email>` by itself.
        (None, Some(e)) => Some(super::dpkg::person(&e)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_info_metadata() {
        // The head of typing_extensions 4.4.0's METADATA (License-Expression added: metadata 2.4).
        let text = "Metadata-Version: 2.1\nName: Typing_Extensions\nVersion: 4.4.0\nSummary: Backported and Experimental Type Hints for Python 3.7+\nAuthor-email: \"Guido van Rossum, Jukka Lehtosalo, Łukasz Langa, Michael Lee\" <levkivskyi@gmail.com>\nRequires-Python: >=3.7\nClassifier: License :: OSI Approved :: Python Software Foundation License\nLicense-Expression: PSF-2.0\n\nbody: not a header\n";
        let p = parse_metadata(
            text.as_bytes(),
            "/usr/lib/python3/dist-packages/typing_extensions-4.4.0.dist-info/METADATA",
        )
        .unwrap();
        assert_eq!(p[0].name, "Typing_Extensions");
        assert_eq!(p[0].purl, "pkg:pypi/typing-extensions@4.4.0");
        assert_eq!(p[0].license.as_deref(), Some("PSF-2.0"));
    }

    #[test]
    fn pkg_info_with_free_text_license() {
        let text = b"Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\nAuthor: Benjamin Peterson\nAuthor-email: benjamin@python.org\nLicense: MIT\n";
        let p = parse_metadata(text, "/x/six.egg-info/PKG-INFO").unwrap();
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            p[0].supplier.as_deref(),
            Some("Person: Benjamin Peterson (benjamin@python.org)")
        );
        assert!(parse_metadata(b"\xff\xfe\0garbage", "/x")
            .unwrap_or_default()
            .is_empty());
    }
}
