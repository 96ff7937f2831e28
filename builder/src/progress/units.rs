//! Progress amounts and durations as BuildKit prints them (`1.05MB / 2.10MB`, `0.3s`); the
//! size format itself is `kiln_solver::units::progress_size`.

use kiln_solver::units::progress_size as bytes;
use std::time::{Duration, SystemTime};

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
