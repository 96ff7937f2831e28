//! Go modules: `go.sum` files and the build info the Go linker embeds in
//! binaries (the `.go.buildinfo` ELF section). Executables are also where
//! `cargo auditable` data lives, so this module reads both sections.

use std::io::Read;
use std::path::Path;

use object::{Object, ObjectSection};

use super::root::{open_regular, read_host_file};
use super::{purl, Found, Package, PackageKind};

/// go.sum of a large module is a few hundred KiB.
const MAX_SUM: u64 = 16 * 1024 * 1024;
/// Build info is a few KiB; sections above this are not build info.
const MAX_SECTION: u64 = 4 * 1024 * 1024;
/// Go binaries' build info header: magic, pointer size, flags (16 bytes), then
/// 16 bytes of pointers or padding.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
const BUILDINFO_HEADER: usize = 32;
/// Go 1.18+ sets this flag: version and module info follow the header inline.
const FLAG_INLINE_STRINGS: u8 = 0x2;

/// The modules of a go.sum file (the `/go.mod`-only lines name modules whose
/// code is not used, and are left out).
pub fn parse_sum_file(host: &Path, shown: &str) -> Found {
    let bytes = read_host_file(host, shown, MAX_SUM).map_err(|e| e.to_string())?;
    Ok(parse_sum(&String::from_utf8_lossy(&bytes), shown))
}

/// The modules of go.sum text.
pub fn parse_sum(text: &str, location: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (module, version) = (parts.next()?, parts.next()?);
            parts.next()?.starts_with("h1:").then_some(())?;
            if version.ends_with("/go.mod") {
                return None;
            }
            Some(module_package(module, version, location))
        })
        .collect()
}

fn module_package(module: &str, version: &str, location: &str) -> Package {
    let (namespace, name) = match module.rsplit_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, module),
    };
    Package {
        kind: PackageKind::Go,
        name: module.to_string(),
        version: version.to_string(),
        purl: purl("golang", namespace, name, version, &[]),
        license: None,
        supplier: None,
        originator: None,
        locations: vec![location.to_string()],
    }
}

/// The Go modules and Rust crates recorded in an executable (none for other files).
pub fn parse_binary_file(host: &Path, shown: &str) -> Found {
    let Ok(mut file) = open_regular(host, shown) else {
        return Ok(Vec::new());
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(Vec::new());
    }
    // The cache reads only the headers and the sections asked for, not the whole binary.
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(data) = section(&elf, ".go.buildinfo") {
        out.extend(parse_buildinfo(data, shown));
    }
    if let Some(data) = section(&elf, ".dep-v0") {
        out.extend(super::cargo::parse_auditable(data, shown)?);
    }
    Ok(out)
}

fn section<'d>(
    elf: &object::File<'d, &'d object::ReadCache<std::fs::File>>,
    name: &str,
) -> Option<&'d [u8]> {
    let s = elf.section_by_name(name)?;
    if s.size() > MAX_SECTION {
        return None;
    }
    s.data().ok()
}

/// The main module and dependencies of a `.go.buildinfo` section (Go 1.18+
/// layout; older binaries keep pointers into the data segment and give none).
pub fn parse_buildinfo(data: &[u8], location: &str) -> Vec<Package> {
    if data.len() < BUILDINFO_HEADER || !data.starts_with(BUILDINFO_MAGIC) {
        return Vec::new();
    }
    if data[15] & FLAG_INLINE_STRINGS == 0 {
        return Vec::new();
    }
    let rest = &data[BUILDINFO_HEADER..];
    let Some((go_version, rest)) = varint_string(rest) else {
        return Vec::new();
    };
    let mut out: Vec<Package> = stdlib(&String::from_utf8_lossy(go_version), location)
        .into_iter()
        .collect();
    let Some((modinfo, _)) = varint_string(rest) else {
        return out;
    };
    // runtime/debug wraps module info in 16-byte sentinels.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    out.extend(parse_modinfo(&String::from_utf8_lossy(modinfo), location));
    out
}

/// The Go standard library linked into a binary, as syft lists it (name
/// `stdlib`, version `go1.21.5`, purl `pkg:golang/stdlib@1.21.5`): what
/// vulnerability scanners match Go's own advisories against. Binaries built
/// without modules (Debian's) have it even though they list no module.
fn stdlib(go_version: &str, location: &str) -> Option<Package> {
    // "go1.21.5 X:loopvar" carries experiments after the version.
    let version = go_version.split_whitespace().next()?;
    let bare = version.strip_prefix("go")?;
    if bare.is_empty() || !bare.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(Package {
        kind: PackageKind::Go,
        name: "stdlib".to_string(),
        version: version.to_string(),
        purl: purl("golang", None, "stdlib", bare, &[]),
        license: Some("BSD-3-Clause".to_string()),
        supplier: None,
        originator: None,
        locations: vec![location.to_string()],
    })
}

/// `mod`/`dep` lines of module info, each `dep` replaced by a following `=>` line.
fn parse_modinfo(text: &str, location: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["mod", path, version, ..] | ["dep", path, version, ..] if *version != "(devel)" => {
                out.push(module_package(path, version, location));
            }
            ["=>", path, version, ..] => {
                if let Some(last) = out.last_mut() {
                    *last = module_package(path, version, location);
                }
            }
            _ => {}
        }
    }
    out
}

/// A uvarint-length-prefixed string (encoding/binary's Uvarint).
fn varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, b) in data.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return (end <= data.len()).then(|| (&data[start..end], &data[end..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_sum_lines() {
        let text = "github.com/google/uuid v1.3.0 h1:t6JiXgmwXMjEs8VusXIJk2BXHsn+wx8BZdTaoZ5fu7I=\ngithub.com/google/uuid v1.3.0/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=\nrsc.io/quote v1.5.2 h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y=\ngarbage\n";
        let purls: Vec<String> = parse_sum(text, "/go.sum")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/github.com/google/uuid@v1.3.0",
                "pkg:golang/rsc.io/quote@v1.5.2"
            ]
        );
    }

    fn uvarint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    #[test]
    fn buildinfo_section() {
        let text = "path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\ndep\tgolang.org/x/text\tv0.14.0\th1:abc=\ndep\trsc.io/quote\tv1.5.2\th1:def=\n=>\texample.com/fork/quote\tv1.5.3\th1:ghi=\nbuild\t-compiler=gc\n";
        // runtime/debug's 16-byte sentinels around the text, as the linker writes them.
        let mut m = vec![0x30u8; 16];
        m.extend_from_slice(text.as_bytes());
        m.extend_from_slice(&[0x31u8; 16]);
        let mut data = BUILDINFO_MAGIC.to_vec();
        data.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        data.resize(BUILDINFO_HEADER, 0);
        let version = b"go1.21.5";
        uvarint(version.len(), &mut data);
        data.extend_from_slice(version);
        uvarint(m.len(), &mut data);
        data.extend_from_slice(&m);
        let purls: Vec<String> = parse_buildinfo(&data, "/bin/hello")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/stdlib@1.21.5",
                "pkg:golang/golang.org/x/text@v0.14.0",
                "pkg:golang/example.com/fork/quote@v1.5.3"
            ]
        );
        assert!(parse_buildinfo(&data[..40], "/bin/x").is_empty());
        assert!(parse_buildinfo(b"\xff Go buildinf:\x08\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "/x").is_empty());
    }
}
