//! Printing check results the way buildx does (`WARNING: Rule - url`, message, source excerpt).

use super::{CheckReport, Warning};

/// The source excerpt BuildKit prints under an error or warning: the lines of the range marked
/// `>>>` with a few lines of context around them.
pub fn source_excerpt(source: &str, file: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let (range_start, range_end) = (start, end.clamp(start, lines.len()));
    let mut out = if range_start == range_end {
        format!("{file}:{range_start}\n")
    } else {
        format!("{file}:{range_start}-{range_end}\n")
    };
    // Context: four lines in total around a one-line range, two around a longer one.
    let pad = if range_start == range_end { 4 } else { 2 };
    let (mut first, mut last, mut p) = (range_start, range_end, 0);
    while p < pad {
        if first > 1 {
            first -= 1;
            p += 1;
        }
        if last < lines.len() {
            last += 1;
            p += 1;
        }
        p += 1;
    }
    out.push_str("--------------------\n");
    for i in first..=last {
        let mark = if (range_start..=range_end).contains(&i) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {i:>3} | {mark} {}\n", lines[i - 1]));
    }
    out.push_str("--------------------\n");
    out
}

/// One warning as buildx prints it.
pub fn warning_text(w: &Warning, source: &str) -> String {
    let mut out = format!("WARNING: {}", w.rule_name);
    if !w.url.is_empty() {
        out.push_str(&format!(" - {}", w.url));
    }
    out.push_str(&format!("\n{}\n", w.detail));
    out.push_str(&source_excerpt(
        source,
        &w.location.file,
        w.location.line,
        w.location.end_line,
    ));
    out
}

/// The whole report as `kiln build --check` prints it.
pub fn report_text(report: &CheckReport, source: &str) -> String {
    let n = report.warnings.len();
    let mut out = match n {
        0 => "Check complete, no warnings found.\n".to_string(),
        1 => "Check complete, 1 warning has been found!\n".to_string(),
        n => format!("Check complete, {n} warnings have been found!\n"),
    };
    for w in &report.warnings {
        out.push('\n');
        out.push_str(&warning_text(w, source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_range_with_context() {
        let src = "FROM alpine\nCMD echo hi\n";
        assert_eq!(
            source_excerpt(src, "Dockerfile", 2, 2),
            "Dockerfile:2\n--------------------\n   1 |     FROM alpine\n   2 | >>> CMD echo hi\n   3 |     \n--------------------\n"
        );
        let src = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let ex = source_excerpt(src, "D", 4, 5);
        assert!(ex.starts_with("D:4-5\n"));
        assert!(
            ex.contains("   3 |     c\n   4 | >>> d\n   5 | >>> e\n   6 |     f\n"),
            "{ex}"
        );
        assert_eq!(source_excerpt(src, "D", 99, 99), "");
    }
}
