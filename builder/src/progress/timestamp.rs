//! RFC 3339 timestamps in UTC with trimmed nanoseconds (Go's `time.RFC3339Nano`, as rawjson uses).

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `t` as `2024-05-01T12:00:00.5Z`; times before 1970 clamp to the epoch.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_nano(at(1_714_564_800, 500_000_000)),
            "2024-05-01T12:00:00.5Z"
        );
        assert_eq!(
            rfc3339_nano(at(1_796_149_914, 123_456_789)),
            "2026-12-01T18:31:54.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(at(4_102_444_799, 1)),
            "2099-12-31T23:59:59.000000001Z"
        );
    }
}
