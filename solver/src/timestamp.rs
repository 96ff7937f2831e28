//! Dates in UTC through `jiff`: RFC 3339 for image history and config times and progress
//! events (Go's `time.RFC3339Nano`), HTTP dates, and docker's "2 hours" ages for tables.

use jiff::fmt::strtime;
use jiff::tz::Offset;
use jiff::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`; seconds outside years -9999..=9999
/// clamp to those bounds.
pub fn rfc3339(secs: i64) -> String {
    let secs = secs.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// `t` as `2024-05-01T12:00:00.5Z` (trailing zeros of the fraction trimmed);
/// times before 1970 clamp to the epoch.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (since.as_secs() as i64).min(Timestamp::MAX.as_second());
    Timestamp::new(secs, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::MAX)
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 time with its offset (`2024-03-01T12:30:15.123Z`,
/// `…+02:00`); the fraction is dropped. `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// Seconds since the epoch of an HTTP date in the IMF-fixdate form servers must send
/// (RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`), or `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let parsed = strtime::parse("%a, %d %b %Y %H:%M:%S GMT", text.trim()).ok()?;
    let time = Offset::UTC.to_timestamp(parsed.to_datetime().ok()?).ok()?;
    Some(time.as_second())
}

/// An age in words as docker prints it (go-units `HumanDuration`; tables add " ago"):
/// `Less than a second`, `30 seconds`, `About a minute`, `About an hour`, `2 hours`, `3 days`,
/// `2 weeks`, `3 months`, `5 years`.
pub fn human_duration(secs: u64) -> String {
    let hours = secs.saturating_add(1800) / 3600; // rounded, as go-units does from the minute on
    match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => format!("{} minutes", secs / 60),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_200), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        // Hostile epochs clamp to jiff's bounds instead of wrapping.
        assert!(
            rfc3339(i64::MAX).starts_with("9999-12-"),
            "{}",
            rfc3339(i64::MAX)
        );
        assert!(
            rfc3339(i64::MIN).starts_with("-009999-01-"),
            "{}",
            rfc3339(i64::MIN)
        );
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(1_714_564_800, 500_000_000)),
            "2024-05-01T12:00:00.5Z"
        );
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rfc3339_round_trips_and_reads_offsets() {
        for secs in [0, 951_782_400, 1_796_083_200, -1] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2024-03-01T12:30:15.123Z"),
            Some(1_709_296_215)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T14:30:15+02:00"),
            Some(1_709_296_215)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2024-02-30T00:00:00Z"), None);
    }

    #[test]
    fn imf_fixdate() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 +0000"), None);
        assert_eq!(parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn ages_like_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(47 * 60), "47 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(15 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86_400), "3 years");
    }
}
