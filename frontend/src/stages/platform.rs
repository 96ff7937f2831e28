//! The automatic platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...) derived
//! from the build graph's platform type.

use kiln_oci::Platform;

/// The automatic ARGs for `p` with `prefix` `TARGET` or `BUILD`.
pub fn platform_args(p: &Platform, prefix: &str) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}PLATFORM"), p.to_string()),
        (format!("{prefix}OS"), p.os.clone()),
        (format!("{prefix}ARCH"), p.architecture.clone()),
        (
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_name_every_part() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        let a = platform_args(&p, "TARGET");
        assert_eq!(a[0], ("TARGETPLATFORM".into(), "linux/arm/v7".into()));
        assert_eq!(a[2], ("TARGETARCH".into(), "arm".into()));
        assert_eq!(a[3], ("TARGETVARIANT".into(), "v7".into()));
    }
}
