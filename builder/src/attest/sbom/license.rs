//! License names from package metadata as SPDX license expressions.

/// Longest license text kept from metadata (a whole license pasted into a
/// field is not a name).
const MAX_LICENSE_LEN: usize = 512;

/// An SPDX expression for a license as metadata states it: a valid expression
/// as is, an imprecise one canonicalized (`GPL-2+` → `GPL-2.0-or-later`),
/// anything else as a `LicenseRef-` of its sanitized name.
pub fn normalize(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_LICENSE_LEN {
        return None;
    }
    if spdx::Expression::parse(raw).is_ok() {
        return Some(raw.to_string());
    }
    if let Some(gnu) = debian_gnu(raw) {
        return Some(gnu);
    }
    if let Ok(Some(canon)) = spdx::Expression::canonicalize(raw) {
        if spdx::Expression::parse(&canon).is_ok() {
            return Some(canon);
        }
    }
    let sanitized: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Some(format!("LicenseRef-{sanitized}"))
}

/// Debian's GNU short names (`GPL-2`, `GPL-2+`, `LGPL-2.1+`) as SPDX ids
/// (`GPL-2.0-only`, `GPL-2.0-or-later`, `LGPL-2.1-or-later`).
fn debian_gnu(raw: &str) -> Option<String> {
    let (base, or_later) = match raw.strip_suffix('+') {
        Some(b) => (b, true),
        None => (raw, false),
    };
    let (family, version) = base.split_once('-')?;
    if !["GPL", "LGPL", "AGPL", "GFDL"].contains(&family) || version.is_empty() {
        return None;
    }
    if !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let version = if version.contains('.') {
        version.to_string()
    } else {
        format!("{version}.0")
    };
    spdx::gnu_license_id(&format!("{family}-{version}"), or_later).map(|id| id.name.to_string())
}

/// Several licenses of one package (each normalized) joined with `AND`, in
/// their first-seen order, without repeats.
pub fn all_of<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if let Some(e) = normalize(n) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    match out.len() {
        0 => None,
        1 => out.pop(),
        _ => Some(
            out.iter()
                .map(|e| {
                    if e.contains(' ') {
                        format!("({e})")
                    } else {
                        e.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_expressions_are_kept() {
        assert_eq!(
            normalize("MIT OR Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
    }

    #[test]
    fn debian_short_names_are_canonicalized_or_referenced() {
        assert_eq!(normalize("GPL-2+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(normalize("GPL-2").as_deref(), Some("GPL-2.0-only"));
        assert_eq!(normalize("LGPL-2.1+").as_deref(), Some("LGPL-2.1-or-later"));
        assert_eq!(
            normalize("public-domain").as_deref(),
            Some("LicenseRef-public-domain")
        );
        assert_eq!(normalize("  ").as_deref(), None);
    }

    #[test]
    fn several_are_joined_once() {
        assert_eq!(
            all_of(["MIT", "GPL-2+", "MIT", "Apache-2.0 OR MIT"]).as_deref(),
            Some("MIT AND GPL-2.0-or-later AND (Apache-2.0 OR MIT)")
        );
    }
}
