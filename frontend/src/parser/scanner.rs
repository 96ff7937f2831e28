//! Physical lines of a Dockerfile and the continuation rules.

/// Iterates over the physical lines of a source, line endings included, counting 1-based lines.
pub(crate) struct Lines<'a> {
    source: &'a str,
    pos: usize,
    current: usize,
    line_starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// Lines of `source`.
    pub fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1)
                .filter(|&i| i < source.len()),
        );
        if source.is_empty() {
            line_starts.clear();
        }
        Lines {
            source,
            pos: 0,
            current: 0,
            line_starts,
        }
    }

    /// The next line including its `\n`, or `None` at the end.
    pub fn next_line(&mut self) -> Option<&'a str> {
        if self.pos >= self.source.len() {
            return None;
        }
        let rest = &self.source[self.pos..];
        let len = rest.find('\n').map_or(rest.len(), |i| i + 1);
        self.pos += len;
        self.current += 1;
        Some(&rest[..len])
    }

    /// The 1-based number of the line last returned (0 before the first).
    pub fn current(&self) -> usize {
        self.current
    }

    /// The text of 1-based line `line`, without its line ending.
    pub fn line_text(&self, line: usize) -> Option<&'a str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.source.len());
        Some(trim_newline(self.source.get(start..end)?))
    }

    /// Byte offsets where each line starts.
    pub fn line_starts(&self) -> &[usize] {
        &self.line_starts
    }
}

/// Removes trailing `\r` and `\n` characters.
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Number of leading whitespace characters.
pub(crate) fn leading_columns(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count()
}

/// If `line` ends with the escape character (optionally followed by blanks) that is not itself
/// escaped, returns the line without it and `false` (the instruction continues); otherwise the
/// line and `true`.
pub(crate) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\  \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("FROM `", '`'), ("FROM ", false));
        assert_eq!(trim_continuation("FROM \\", '`'), ("FROM \\", true));
    }

    #[test]
    fn lines_keep_endings() {
        let mut l = Lines::new("a\r\nb\nc");
        assert_eq!(l.next_line(), Some("a\r\n"));
        assert_eq!(l.next_line(), Some("b\n"));
        assert_eq!(l.next_line(), Some("c"));
        assert_eq!(l.next_line(), None);
        assert_eq!(l.current(), 3);
        assert_eq!(l.line_text(1), Some("a"));
        assert_eq!(l.line_text(3), Some("c"));
        assert_eq!(l.line_text(4), None);
    }
}
