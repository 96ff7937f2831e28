//! RFC 3339 timestamps in UTC with trimmed nanoseconds (Go's `time.RFC3339Nano`, as rawjson uses).

pub use kiln_solver::timestamp::rfc3339_nano;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
