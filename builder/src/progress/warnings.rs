//! The warning summary printed after a build (`1 warning found:` and one line per warning).

use kiln_solver::progress::Warning;

/// The summary lines for `warnings`; empty when there are none.
pub fn summary<'a>(warnings: impl IntoIterator<Item = &'a Warning>) -> Vec<String> {
    let lines: Vec<String> = warnings.into_iter().map(line).collect();
    if lines.is_empty() {
        return lines;
    }
    let n = lines.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = vec![format!("{n} warning{plural} found:")];
    out.extend(lines);
    out
}

/// ` - Short text (Dockerfile:5)`.
fn line(w: &Warning) -> String {
    let mut s = format!(" - {}", w.short.trim_end());
    if let Some(loc) = &w.location {
        match loc.ranges.first() {
            Some(r) if r.start_column > 0 => {
                s.push_str(&format!(
                    " ({}:{}:{})",
                    loc.file, r.start_line, r.start_column
                ));
            }
            Some(r) => s.push_str(&format!(" ({}:{})", loc.file, r.start_line)),
            None => s.push_str(&format!(" ({})", loc.file)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::{SourceRange, WarningLocation};

    #[test]
    fn summary_lines() {
        assert!(summary(&[]).is_empty());
        let w = Warning {
            level: 1,
            short: "JSONArgsRecommended: JSON arguments recommended for CMD".into(),
            location: Some(WarningLocation {
                file: "Dockerfile".into(),
                ranges: vec![SourceRange {
                    start_line: 5,
                    end_line: 5,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let bare = Warning {
            short: "no location".into(),
            ..Default::default()
        };
        assert_eq!(
            summary(&[w, bare]),
            [
                "2 warnings found:",
                " - JSONArgsRecommended: JSON arguments recommended for CMD (Dockerfile:5)",
                " - no location",
            ]
        );
    }
}
