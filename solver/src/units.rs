//! Byte sizes as docker and BuildKit print and read them (Go's `docker/go-units` and
//! BuildKit's progress), in one place: the frontend reads `RUN --mount size=`, the CLI reads
//! size flags and prints tables and progress.
//!
//! - [`human_size`]: `units.HumanSize`, decimal, 4 significant digits (`1.089MB`, `60MB`);
//!   `buildx du`/`prune`. [`human_size_with_precision`] with 3 is `docker images`/`history`.
//! - [`progress_size`]: BuildKit's progress (`%.2f` of `units.Bytes`): decimal, two decimals
//!   (`512B`, `1.05MB`).
//! - [`parse_ram_size`]: `units.RAMInBytes`, binary whatever the spelling (`k` = `kb` = `kib`
//!   = 1024), as every size flag and option of docker and buildx reads it.

/// Decimal unit names, as go-units spells them.
const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// `bytes` in decimal units with 4 significant digits (go-units `HumanSize`): `999B`,
/// `1.089MB`, `60MB`.
pub fn human_size(bytes: u64) -> String {
    human_size_with_precision(bytes, 4)
}

/// `bytes` in decimal units with `precision` significant digits, trailing zeros dropped (Go's
/// `%.*g`, go-units `HumanSizeWithPrecision`): with 3, `4.26MB`, `1.09MB`, `60MB`.
pub fn human_size_with_precision(bytes: u64, precision: usize) -> String {
    let (value, unit) = scale(bytes as f64);
    format!("{}{unit}", significant(value, precision.max(1)))
}

/// BuildKit's progress sizes: bytes below 1000 as an integer, above in decimal units with two
/// decimals (`512B`, `1.00kB`, `1.05MB`).
pub fn progress_size(bytes: u64) -> String {
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let (value, unit) = scale(bytes as f64);
    format!("{value:.2}{unit}")
}

/// Divides by 1000 until below 1000 (or out of unit names).
fn scale(mut value: f64) -> (f64, &'static str) {
    let mut i = 0;
    while value >= 1000.0 && i + 1 < DECIMAL.len() {
        value /= 1000.0;
        i += 1;
    }
    (value, DECIMAL[i])
}

/// Go's `%.{precision}g`: `precision` significant digits, trailing zeros dropped, and the
/// exponent form when the exponent is below -4 or at least `precision` (with 3 digits, 999.5
/// is `1e+03`, as in Go).
fn significant(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    // The decimal exponent after rounding to `precision` digits (999.95 rounds to 1000).
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (precision as i32 - 1 - exp).max(0) as usize;
    trim_fraction(&format!("{value:.decimals$}")).to_string()
}

/// `1.500` → `1.5`, `2.000` → `2`, `10` stays.
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A size that [`parse_ram_size`] does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: expected a number and an optional unit k, m, g, t or p (1024-based; b and i optional), such as 512m or 1.5GiB")]
pub struct InvalidSize(pub String);

/// Reads a size as go-units `RAMInBytes` does: a decimal number, one optional space, an
/// optional unit letter `k m g t p` (any case, powers of 1024), an optional `i` and an optional
/// `b`; the fraction of a byte is dropped. `1024`, `64m`, `1.5g`, `512KiB`, `10GB` (= 10 GiB).
pub fn parse_ram_size(s: &str) -> Result<u64, InvalidSize> {
    let invalid = || InvalidSize(s.to_string());
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, rest) = s.split_at(digits_end);
    // Go's pattern: digits, then groups of `.digits`; a leading or trailing dot is refused.
    if number.is_empty() || number.split('.').any(str::is_empty) {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest).to_ascii_lowercase();
    let mut rest = rest.as_str();
    let mut multiplier = 1u64;
    if let Some(c) = rest.chars().next() {
        if let Some(power) = "kmgtp".find(c) {
            multiplier = 1024u64.pow(power as u32 + 1);
            rest = &rest[1..];
        }
    }
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    let rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        return Err(invalid());
    }
    let bytes = value * multiplier as f64;
    // Go converts to int64; a size past it is an error here rather than a wrapped number.
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_is_go_units_human_size() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1024), "1.024kB");
        assert_eq!(human_size(1_088_400), "1.088MB");
        assert_eq!(human_size(1_089_000), "1.089MB");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(60_000_000), "60MB");
        assert_eq!(human_size(62_924_390), "62.92MB");
        assert_eq!(human_size(999_999), "1000kB");
        assert_eq!(human_size(2_000_000_000), "2GB");
        assert_eq!(human_size(u64::MAX), "18.45EB");
    }

    #[test]
    fn docker_images_precision_three() {
        assert_eq!(human_size_with_precision(999, 3), "999B");
        assert_eq!(human_size_with_precision(4_260_000, 3), "4.26MB");
        assert_eq!(human_size_with_precision(1_089_000, 3), "1.09MB");
        assert_eq!(human_size_with_precision(77_800_000, 3), "77.8MB");
        assert_eq!(human_size_with_precision(123_456_789, 3), "123MB");
        // Go's %.3g of 999.5 is "1e+03".
        assert_eq!(human_size_with_precision(999_500, 3), "1e+03kB");
    }

    #[test]
    fn progress_size_is_buildkit_progress() {
        assert_eq!(progress_size(0), "0B");
        assert_eq!(progress_size(999), "999B");
        assert_eq!(progress_size(1000), "1.00kB");
        assert_eq!(progress_size(1_050_000), "1.05MB");
        assert_eq!(progress_size(2_100_000_000), "2.10GB");
        assert_eq!(progress_size(u64::MAX), "18.45EB");
    }

    #[test]
    fn parse_ram_size_is_binary_like_ram_in_bytes() {
        let cases: &[(&str, u64)] = &[
            ("1024", 1024),
            ("0", 0),
            ("32", 32),
            ("32b", 32),
            ("32B", 32),
            ("32k", 32 * 1024),
            ("32K", 32 * 1024),
            ("32kb", 32 * 1024),
            ("32Kb", 32 * 1024),
            ("32KiB", 32 * 1024),
            ("32Ki", 32 * 1024),
            ("32 KiB", 32 * 1024),
            ("32Mb", 32 << 20),
            ("32Gb", 32 << 30),
            ("10GB", 10 << 30),
            ("32Tb", 32 << 40),
            ("32PB", 32 << 50),
            ("1.5g", 3 << 29),
            ("0.3m", 314_572),
            ("250KB", 256_000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_ram_size(s), Ok(*want), "{s}");
        }
        for s in [
            "", " ", "lots", "-1", "32mb ", " 32", "32  mb", "32.mb", ".5k", "32ee", "1.2.3",
            "32bb", "32kk", "1e3", "9999999p",
        ] {
            assert_eq!(parse_ram_size(s), Err(InvalidSize(s.to_string())), "{s:?}");
        }
        assert!(parse_ram_size("lots")
            .unwrap_err()
            .to_string()
            .contains("512m"));
    }
}
