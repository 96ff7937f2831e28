//! Platforms (`linux/amd64`, `linux/arm64/v8`): the one platform type of the workspace —
//! of `--platform`, the build graph, index entries and image configs — parsed and normalised
//! as containerd's `platforms.Parse` + `Normalize` (what buildx applies).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An OS/architecture[/variant] triple, with the OS version and features Windows images carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, `windows`, ...
    pub os: String,
    /// `os.version` (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features` (Windows).
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// `v7`, `v8`, ... when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Operating systems Go knows (containerd's list): `linux` alone means linux on this machine's
/// architecture.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go knows (containerd's list): `arm64` alone means linux/arm64.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// containerd's architecture aliases and default variants: `aarch64` is `arm64`, `arm64/v8`
/// is `arm64`, `arm` is `arm/v7`, `x86_64` is `amd64`, `amd64/v1` is `amd64`.
fn normalize_arch(arch: &str, variant: &str) -> (String, Option<String>) {
    let (arch, variant) = (arch.to_lowercase(), variant.to_lowercase());
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => "",
                "9" | "9.0" | "v9.0" => "v9",
                v => v,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                v => v,
            },
        ),
        a => (a, variant.as_str()),
    };
    (
        arch.to_string(),
        (!variant.is_empty()).then(|| variant.to_string()),
    )
}

impl Platform {
    /// `os/architecture[/variant]` as given (not normalised).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            ..Default::default()
        }
    }

    /// Parses a platform as buildx does (containerd's `platforms.Parse`, then `Normalize`):
    /// `os/arch[/variant]`, or a known OS (this machine's architecture) or a known architecture
    /// (linux) alone; components are lower-cased and aliases folded (`aarch64` → `arm64`,
    /// `linux/arm64/v8` → `linux/arm64`, `linux/arm` → `linux/arm/v7`). An unknown single word
    /// (`foo`) is an error, not `linux/foo`.
    pub fn parse(s: &str) -> Result<Platform> {
        let bad = || Error::InvalidPlatform(s.to_string());
        let spec = s.trim();
        let component = |w: &str, dot: bool| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dot && c == '.'))
        };
        let parts: Vec<&str> = spec.splitn(4, '/').collect();
        // The OS has no dots (containerd's `os(version)` form is not supported).
        if !component(parts[0], false) || !parts[1..].iter().all(|p| component(p, true)) {
            return Err(bad());
        }
        let os = match parts[0].to_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        let (os, (architecture, variant)) = match parts.as_slice() {
            [_] if KNOWN_OS.contains(&os.as_str()) => {
                return Ok(Platform {
                    os,
                    ..Platform::host()
                })
            }
            [word] => {
                let arch = normalize_arch(word, "");
                if !KNOWN_ARCH.contains(&arch.0.as_str()) {
                    return Err(bad());
                }
                ("linux".to_string(), arch)
            }
            [_, arch] => (os, normalize_arch(arch, "")),
            [_, arch, variant] => (os, normalize_arch(arch, variant)),
            _ => return Err(bad()),
        };
        Ok(Platform {
            os,
            architecture,
            variant,
            ..Default::default()
        })
    }

    /// The platform this program runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform::new(std::env::consts::OS, architecture, variant)
    }

    /// This platform with containerd's aliases folded (`aarch64` → `arm64`, `arm64/v8` →
    /// `arm64`, `arm` → `arm/v7`) and the OS lower-cased.
    pub fn normalized(mut self) -> Self {
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        self.os = self.os.to_lowercase();
        self.architecture = architecture;
        self.variant = variant;
        self
    }

    /// The platform an image config declares (`os`, `architecture`, `variant`), normalised;
    /// `None` when the config is not JSON or lacks os or architecture.
    pub fn from_config(config: &[u8]) -> Option<Platform> {
        let v: serde_json::Value = serde_json::from_slice(config).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty());
        Some(Platform::new(text("os")?, text("architecture")?, text("variant")).normalized())
    }

    /// Whether `candidate` is this platform once both are normalised (os, architecture and
    /// variant; an index entry's OS version and features do not take part).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.clone().normalized();
        let have = candidate.clone().normalized();
        want.os == have.os && want.architecture == have.architecture && want.variant == have.variant
    }

    /// The platform without OS version and features, normalised: the key two index entries
    /// must not share.
    pub fn key(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref()).normalized()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p = Platform::parse("linux/arm/v6").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v6"));
        assert_eq!(p.to_string(), "linux/arm/v6");
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        // containerd's normalisation, as buildx applies it to --platform.
        for (given, normal) in [
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("armhf", "linux/arm/v7"),
            ("linux/x86_64/v1", "linux/amd64"),
            ("linux/amd64/v9", "linux/amd64/v9"),
            ("linux/arm64/9.0", "linux/arm64/v9"),
            ("macos/arm64", "darwin/arm64"),
            ("s390x", "linux/s390x"),
        ] {
            assert_eq!(
                Platform::parse(given).unwrap().to_string(),
                normal,
                "{given}"
            );
        }
        let linux = Platform::parse("linux").unwrap();
        assert_eq!(
            (linux.os.as_str(), linux.architecture),
            ("linux", Platform::host().architecture)
        );
        for bad in [
            "",
            "foo",
            "linux/*",
            "linux.x/amd64",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/arm64/",
            "linux/am d64",
            "linux//x",
        ] {
            let err = Platform::parse(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidPlatform(s) if s == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn host_is_a_valid_platform() {
        let h = Platform::host();
        assert_eq!(Platform::parse(&h.to_string()).unwrap(), h);
    }

    #[test]
    fn from_config_and_matching() {
        let p = Platform::from_config(br#"{"os":"linux","architecture":"aarch64","variant":"v8"}"#);
        assert_eq!(p.map(|p| p.to_string()).as_deref(), Some("linux/arm64"));
        assert_eq!(Platform::from_config(br#"{"os":"linux"}"#), None);
        assert_eq!(Platform::from_config(b"not json"), None);
        let v8 = Platform::new("linux", "arm64", Some("v8"));
        assert!(Platform::parse("linux/arm64").unwrap().matches(&v8));
        assert!(!Platform::parse("linux/arm/v6")
            .unwrap()
            .matches(&Platform::new("linux", "arm", None)));
    }
}
