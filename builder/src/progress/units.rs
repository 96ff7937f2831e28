//! Human-readable sizes and durations as BuildKit prints them (`1.05MB`, `0.3s`).

use std::time::{Duration, SystemTime};

/// Decimal byte size with two decimals above 1000 bytes: `512B`, `1.05MB`, `2.10GB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = "kB";
    for next in UNITS.iter().skip(1) {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    format!("{value:.2}{unit}")
}

/// `current / total` when the total is known, else just `current`; empty when both are zero.
pub fn progress(current: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => format!("{} / {}", bytes(current), bytes(total)),
        _ if current > 0 => bytes(current),
        _ => String::new(),
    }
}

/// Seconds from `from` to `to` (zero when the clock went backwards).
pub fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(1000), "1.00kB");
        assert_eq!(bytes(1_050_000), "1.05MB");
        assert_eq!(bytes(2_100_000_000), "2.10GB");
        assert_eq!(bytes(u64::MAX), "18.45EB");
    }

    #[test]
    fn progress_text() {
        assert_eq!(progress(0, None), "");
        assert_eq!(progress(0, Some(0)), "");
        assert_eq!(progress(1_050_000, Some(2_100_000)), "1.05MB / 2.10MB");
        assert_eq!(progress(2048, None), "2.05kB");
    }

    #[test]
    fn seconds_never_negative() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(seconds_between(t, t + Duration::from_millis(300)), 0.3);
        assert_eq!(seconds_between(t, t - Duration::from_secs(1)), 0.0);
    }
}
