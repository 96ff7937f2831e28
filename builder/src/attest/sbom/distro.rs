//! The image's distribution from `/etc/os-release` (the purl `distro` qualifier).

use super::root::ImageRoot;

/// The os-release files, in the order systemd reads them.
const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
/// os-release is a few hundred bytes; more is not an os-release file.
const MAX_OS_RELEASE: u64 = 64 * 1024;

/// The distribution of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`, `alpine`, `ubuntu`).
    pub id: String,
    /// `VERSION_ID` (`12`, `3.19.1`), empty for rolling releases.
    pub version_id: String,
}

impl Distro {
    /// The purl `distro` qualifier as syft writes it: `debian-12`.
    pub fn qualifier(&self) -> String {
        if self.version_id.is_empty() {
            self.id.clone()
        } else {
            format!("{}-{}", self.id, self.version_id)
        }
    }
}

/// Reads the image's os-release; `None` when it has none or it names no `ID`.
pub fn read(image: &ImageRoot) -> Option<Distro> {
    let text = OS_RELEASE
        .iter()
        .find_map(|p| image.read_text(p, MAX_OS_RELEASE).ok())?;
    parse(&text)
}

/// Parses os-release's `KEY=value` lines (values optionally quoted, as
/// os-release(5) allows; no shell expansion is performed, as it specifies).
pub fn parse(text: &str) -> Option<Distro> {
    let mut id = None;
    let mut version_id = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => id = Some(value),
            "VERSION_ID" => version_id = value,
            _ => {}
        }
    }
    let id = id.filter(|i| !i.is_empty())?;
    Some(Distro { id, version_id })
}

fn unquote(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(v);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_os_release() {
        // Debian 12's /usr/lib/os-release.
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let d = parse(text).unwrap();
        assert_eq!(d.qualifier(), "debian-12");
    }

    #[test]
    fn alpine_and_rolling() {
        let d = parse("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n").unwrap();
        assert_eq!(d.qualifier(), "alpine-3.19.1");
        assert_eq!(parse("ID=arch\n").unwrap().qualifier(), "arch");
        assert!(parse("garbage\n\0\0").is_none());
    }
}
