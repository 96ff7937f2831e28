//! `os/arch[/variant]` platforms and the automatic platform ARGs derived from them.

use std::fmt;

/// A target or build platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    /// `v7`, `v8`, ... when given.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (also `arch` alone, meaning linux).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad = || format!("invalid platform {s:?}: expected os/arch[/variant]");
        let p = match parts.as_slice() {
            [arch] if !arch.is_empty() => Platform {
                os: "linux".into(),
                arch: arch.to_lowercase(),
                variant: None,
            },
            [os, arch] if !os.is_empty() && !arch.is_empty() => Platform {
                os: os.to_lowercase(),
                arch: arch.to_lowercase(),
                variant: None,
            },
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Platform {
                os: os.to_lowercase(),
                arch: arch.to_lowercase(),
                variant: Some(v.to_lowercase()),
            },
            _ => return Err(bad()),
        };
        if !p
            .os
            .chars()
            .chain(p.arch.chars())
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad());
        }
        Ok(p)
    }

    /// The platform this program runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant,
        }
    }

    /// The automatic ARGs for this platform with `prefix` `TARGET` or `BUILD`.
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_args() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        let a = p.args("TARGET");
        assert_eq!(a[0], ("TARGETPLATFORM".into(), "linux/arm/v7".into()));
        assert_eq!(a[3], ("TARGETVARIANT".into(), "v7".into()));
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }
}
