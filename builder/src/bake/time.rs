//! `timestamp()` and `formatdate()` (Terraform's format language), in UTC.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Now as RFC 3339 in UTC, to the second (as buildx's `timestamp()`).
pub fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// `formatdate(spec, timestamp)`: `YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H mm m ss s
/// AA aa ZZZZZ ZZZZ ZZZ Z`, and `'literal'` text.
pub fn formatdate(spec: &str, ts: &str) -> Result<String, String> {
    let t: Timestamp = ts
        .parse()
        .map_err(|e| format!("formatdate: {ts:?} is not an RFC 3339 timestamp: {e}"))?;
    let z = t.to_zoned(TimeZone::UTC);
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '\'')
                .ok_or("formatdate: an unterminated quoted literal")?;
            if end == 0 {
                out.push('\'');
            }
            out.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let hour12 = match z.hour() % 12 {
            0 => 12,
            h => h,
        };
        let piece = match (c, run) {
            ('Y', 4) => format!("{:04}", z.year()),
            ('Y', 2) => format!("{:02}", z.year() % 100),
            ('M', 4) => month_name(z.month()).to_string(),
            ('M', 3) => month_name(z.month())[..3].to_string(),
            ('M', 2) => format!("{:02}", z.month()),
            ('M', 1) => z.month().to_string(),
            ('D', 2) => format!("{:02}", z.day()),
            ('D', 1) => z.day().to_string(),
            ('E', 4) => format!("{:?}", z.weekday()),
            ('E', 3) => format!("{:?}", z.weekday())[..3].to_string(),
            ('h', 2) => format!("{:02}", z.hour()),
            ('h', 1) => z.hour().to_string(),
            ('H', 2) => format!("{hour12:02}"),
            ('H', 1) => hour12.to_string(),
            ('m', 2) => format!("{:02}", z.minute()),
            ('m', 1) => z.minute().to_string(),
            ('s', 2) => format!("{:02}", z.second()),
            ('s', 1) => z.second().to_string(),
            ('A', 2) => if z.hour() < 12 { "AM" } else { "PM" }.into(),
            ('a', 2) => if z.hour() < 12 { "am" } else { "pm" }.into(),
            ('Z', 5) => "+00:00".into(),
            ('Z', 4) => "+0000".into(),
            ('Z', 3) => "UTC".into(),
            ('Z', 1) => "Z".into(),
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!(
                    "formatdate: unsupported sequence {:?}",
                    chars[i..i + run].iter().collect::<String>()
                ))
            }
            _ => chars[i..i + run].iter().collect(),
        };
        out.push_str(&piece);
        i += run;
    }
    Ok(out)
}

pub(super) fn month_name(m: i8) -> &'static str {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    NAMES[(m.clamp(1, 12) - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_terraform() {
        let ts = "2024-03-05T07:08:09Z";
        assert_eq!(formatdate("YYYY-MM-DD", ts).unwrap(), "2024-03-05");
        assert_eq!(formatdate("YYYYMMDDhhmmss", ts).unwrap(), "20240305070809");
        assert_eq!(
            formatdate("DD MMM YYYY hh:mm ZZZ", ts).unwrap(),
            "05 Mar 2024 07:08 UTC"
        );
        assert_eq!(formatdate("EEE, h'h'", ts).unwrap(), "Tue, 7h");
        assert!(formatdate("YYYY", "yesterday").is_err());
        assert!(formatdate("'open", ts).is_err());
        assert!(now_rfc3339().ends_with('Z'));
    }
}
