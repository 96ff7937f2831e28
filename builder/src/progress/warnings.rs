//! The warning summary printed after a build, as buildx prints it
//! (` 1 warning found (...):` and ` - Rule: message (line N)` per warning).

use kiln_solver::progress::Warning;

/// The summary lines for `warnings`; empty when there are none.
pub fn summary<'a>(warnings: impl IntoIterator<Item = &'a Warning>) -> Vec<String> {
    let lines: Vec<String> = warnings
        .into_iter()
        .map(|w| format!(" - {}", w.short.trim_end()))
        .collect();
    if lines.is_empty() {
        return lines;
    }
    let n = lines.len();
    let plural = if n == 1 { "" } else { "s" };
    // buildx points at `docker --debug`; kiln's details come from `--check`.
    let mut out = vec![format!(
        " {n} warning{plural} found (use kiln build --check to expand):"
    )];
    out.extend(lines);
    out
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
            short: "JSONArgsRecommended: JSON arguments recommended for CMD (line 5)".into(),
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
                " 2 warnings found (use kiln build --check to expand):",
                " - JSONArgsRecommended: JSON arguments recommended for CMD (line 5)",
                " - no location",
            ]
        );
    }
}
