//! RPM packages: the SQLite rpm database of rpm >= 4.16 (`rpmdb.sqlite` under
//! `/var/lib/rpm` or `/usr/lib/sysimage/rpm`), each row an rpm header blob.
//!
//! SQLite is read by `rusqlite` from a copy of the image's files (taken through
//! [`ImageRoot`], so a link cannot point outside the root). No maintained crate parses a
//! bare header blob (the `rpm` crate keeps its header parser private), so the blob is read
//! here: a count of index entries and the data size, 16-byte entries, then the data;
//! every count, offset and string is bounds-checked (the image is hostile). The older
//! BerkeleyDB `Packages` database (rpm < 4.16) has no maintained reader in Rust and is
//! reported as a warning, not read.

use super::distro::Distro;
use super::root::{ImageRoot, ReadError};
use super::{license, purl, Found, Package, PackageKind};

/// Where rpm keeps its SQLite database, newest layout first.
const SQLITE_DBS: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
/// The BerkeleyDB database of rpm < 4.16.
const BDB_PACKAGES: &str = "/var/lib/rpm/Packages";
/// A large Fedora image's database is some tens of MiB.
const MAX_DB: u64 = 512 * 1024 * 1024;
/// rpm's own bounds on a header (`hdrchkTags`, `hdrchkData`).
const MAX_TAGS: usize = 0xffff;
const MAX_DATA: usize = 0x0fff_ffff;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_VENDOR: u32 = 1011;
const TAG_LICENSE: u32 = 1014;
const TAG_PACKAGER: u32 = 1015;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The RPM packages of the image (none when it has no rpm database).
pub fn scan(
    image: &ImageRoot,
    distro: Option<&Distro>,
    max_packages: usize,
    warnings: &mut Vec<String>,
) -> Found {
    let Some(found) = SQLITE_DBS.iter().find_map(|p| match image.read(p, MAX_DB) {
        Ok(b) => Some(Ok((*p, b))),
        Err(ReadError::Missing(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }) else {
        if image.resolve(BDB_PACKAGES).is_ok_and(|p| p.is_file()) {
            warnings.push(format!(
                "{BDB_PACKAGES}: a BerkeleyDB rpm database (rpm < 4.16) is not read; its packages are not listed"
            ));
        }
        return Ok(Vec::new());
    };
    let (shown, bytes) = found?;
    // The write-ahead log holds what rpm committed but did not checkpoint yet.
    let wal = image.read(&format!("{shown}-wal"), MAX_DB).ok();
    let blobs = read_blobs(&bytes, wal.as_deref(), max_packages)
        .map_err(|e| format!("{shown}: not a readable rpm database: {e}"))?;
    let mut out = Vec::with_capacity(blobs.len());
    for (i, blob) in blobs.iter().enumerate() {
        match Header::parse(blob).and_then(|h| package(&h, shown, distro)) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => {}
            Err(e) => warnings.push(format!("{shown}: header {i}: {e}")),
        }
    }
    Ok(out)
}

/// The header blobs of the `Packages` table of a database (and its WAL), at most `max`.
fn read_blobs(db: &[u8], wal: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("rpmdb.sqlite");
    std::fs::write(&path, db).map_err(|e| e.to_string())?;
    if let Some(wal) = wal {
        std::fs::write(dir.path().join("rpmdb.sqlite-wal"), wal).map_err(|e| e.to_string())?;
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT blob FROM Packages ORDER BY hnum")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows.take(max) {
        out.push(row.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// One index entry of a header.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    ty: u32,
    offset: usize,
}

/// A parsed header: its entries and data store, every entry's offset inside the data.
#[derive(Debug)]
struct Header<'a> {
    entries: Vec<Entry>,
    data: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

impl<'a> Header<'a> {
    /// Parses a header blob as rpm stores it in its database (no leading magic).
    fn parse(blob: &'a [u8]) -> Result<Header<'a>, String> {
        let (il, dl) = match (be32(blob, 0), be32(blob, 4)) {
            (Some(il), Some(dl)) => (il as usize, dl as usize),
            _ => return Err("shorter than a header".into()),
        };
        if il == 0 || il > MAX_TAGS || dl > MAX_DATA {
            return Err(format!(
                "{il} entries, {dl} bytes of data: out of rpm's bounds"
            ));
        }
        let data_start = 8 + il * 16;
        let data = blob
            .get(data_start..data_start + dl)
            .ok_or("entries and data run past the blob")?;
        let mut entries = Vec::with_capacity(il);
        for i in 0..il {
            let at = 8 + i * 16;
            let field = |k: usize| be32(blob, at + 4 * k).ok_or("truncated entry");
            let (tag, ty, offset) = (field(0)?, field(1)?, field(2)? as usize);
            if offset >= dl && dl > 0 {
                return Err(format!("tag {tag}: offset {offset} past the data"));
            }
            entries.push(Entry { tag, ty, offset });
        }
        Ok(Header { entries, data })
    }

    fn entry(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    /// A string tag (the first of an array or of the translations).
    fn string(&self, tag: u32) -> Option<String> {
        let e = self.entry(tag)?;
        if !matches!(e.ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) {
            return None;
        }
        let rest = self.data.get(e.offset..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&rest[..end]).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// A 32-bit integer tag.
    fn int32(&self, tag: u32) -> Option<u32> {
        let e = self.entry(tag)?;
        (e.ty == TYPE_INT32).then(|| be32(self.data, e.offset))?
    }
}

/// The package a header describes; `None` for rpm's pseudo-packages (`gpg-pubkey`).
fn package(
    h: &Header<'_>,
    location: &str,
    distro: Option<&Distro>,
) -> Result<Option<Package>, String> {
    let name = h.string(TAG_NAME).ok_or("no name")?;
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    let version = h.string(TAG_VERSION).ok_or("no version")?;
    let release = h.string(TAG_RELEASE).unwrap_or_default();
    let full = if release.is_empty() {
        version
    } else {
        format!("{version}-{release}")
    };
    let epoch = h
        .int32(TAG_EPOCH)
        .map(|e| e.to_string())
        .unwrap_or_default();
    let arch = h.string(TAG_ARCH).unwrap_or_default();
    let vendor = h.string(TAG_VENDOR);
    // syft's namespace is the distribution; without os-release, the vendor.
    let namespace = distro
        .map(|d| d.id.clone())
        .or_else(|| vendor.as_ref().map(|v| v.to_lowercase()));
    let distro_q = distro.map(|d| d.qualifier()).unwrap_or_default();
    let upstream = h.string(TAG_SOURCERPM).unwrap_or_default();
    let purl = purl(
        "rpm",
        namespace.as_deref(),
        &name,
        &full,
        &[
            ("arch", &arch),
            ("epoch", &epoch),
            ("upstream", &upstream),
            ("distro", &distro_q),
        ],
    );
    let license = h.string(TAG_LICENSE).and_then(|l| license::normalize(&l));
    let supplier = vendor
        .or_else(|| h.string(TAG_PACKAGER))
        .map(|v| format!("Organization: {v}"));
    Ok(Some(Package {
        kind: PackageKind::Rpm,
        name,
        version: if epoch.is_empty() {
            full
        } else {
            format!("{epoch}:{full}")
        },
        purl,
        license,
        supplier: supplier.clone(),
        originator: supplier,
        locations: vec![location.to_string()],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header blob of `(tag, type, data)` entries, strings NUL-terminated.
    fn blob(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, d) in entries {
            if *ty == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            index.extend(tag.to_be_bytes());
            index.extend(ty.to_be_bytes());
            index.extend((data.len() as u32).to_be_bytes());
            index.extend(1u32.to_be_bytes());
            data.extend(d);
        }
        let mut out = Vec::new();
        out.extend((entries.len() as u32).to_be_bytes());
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn a_header_gives_name_version_purl_and_license() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, s("bash")),
            (TAG_VERSION, TYPE_STRING, s("5.2.26")),
            (TAG_RELEASE, TYPE_STRING, s("3.fc40")),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            (TAG_ARCH, TYPE_STRING, s("x86_64")),
            (TAG_LICENSE, TYPE_STRING, s("GPL-3.0-or-later")),
            (TAG_VENDOR, TYPE_STRING, s("Fedora Project")),
            (TAG_SOURCERPM, TYPE_STRING, s("bash-5.2.26-3.fc40.src.rpm")),
        ]);
        let h = Header::parse(&b).unwrap();
        let distro = Distro {
            id: "fedora".into(),
            version_id: "40".into(),
        };
        let p = package(&h, "/var/lib/rpm/rpmdb.sqlite", Some(&distro))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("bash", "1:5.2.26-3.fc40")
        );
        assert_eq!(
            p.purl,
            "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40&epoch=1&upstream=bash-5.2.26-3.fc40.src.rpm"
        );
        assert_eq!(p.license.as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(p.supplier.as_deref(), Some("Organization: Fedora Project"));
    }

    #[test]
    fn broken_headers_are_errors_not_panics() {
        for bad in [
            vec![],
            vec![0, 0, 0, 1],
            // One entry, no room for it.
            vec![0, 0, 0, 1, 0, 0, 0, 0],
            // Too many entries.
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        ] {
            assert!(Header::parse(&bad).is_err(), "{bad:?}");
        }
        // An offset past the data.
        let mut b = blob(&[(TAG_NAME, TYPE_STRING, s("x"))]);
        b[16..20].copy_from_slice(&100u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
        // A string without its NUL is no string.
        let b = blob(&[(TAG_NAME, TYPE_STRING, b"x".to_vec())]);
        assert_eq!(Header::parse(&b).unwrap().string(TAG_NAME), None);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(h) = Header::parse(&bytes) {
                for tag in [TAG_NAME, TAG_VERSION, TAG_EPOCH] {
                    let _ = h.string(tag);
                    let _ = h.int32(tag);
                }
                let _ = package(&h, "x", None);
            }
        }

        #[test]
        fn mutated_headers_never_panic(flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8)) {
            let mut b = blob(&[
                (TAG_NAME, TYPE_STRING, s("bash")),
                (TAG_VERSION, TYPE_STRING, s("5")),
                (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            ]);
            for (at, v) in flips {
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            if let Ok(h) = Header::parse(&b) {
                let _ = package(&h, "x", None);
            }
        }
    }
}
