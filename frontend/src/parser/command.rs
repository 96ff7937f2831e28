//! Splitting an instruction line into keyword, `--flags` and the rest, as BuildKit does.

/// BuildKit's `reWhitespace` class: `[\t\v\f\r ]` (no newline, ASCII only).
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits `s` on runs of [`is_split_space`], at most `limit` pieces (0 = no limit), like Go's
/// `regexp.Split`: leading/trailing separators produce empty pieces.
pub(crate) fn split_whitespace_runs(s: &str, limit: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if limit != 0 && out.len() + 1 == limit {
            break;
        }
        if is_split_space(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if !is_split_space(d) {
                    break;
                }
                end = j + d.len_utf8();
                iter.next();
            }
            out.push(&s[start..i]);
            start = end;
        }
    }
    out.push(&s[start..]);
    out
}

/// The pieces of one instruction line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SplitCommand<'a> {
    /// The keyword as written.
    pub keyword: &'a str,
    /// The `--flags` before the arguments.
    pub flags: Vec<String>,
    /// The arguments after the flags, trimmed.
    pub rest: &'a str,
}

/// Splits `line` into keyword, flags and arguments.
pub(crate) fn split_command(line: &str) -> SplitCommand<'_> {
    let line = line.trim();
    let Some(split_at) = line.find(is_split_space) else {
        return SplitCommand {
            keyword: line,
            flags: Vec::new(),
            rest: "",
        };
    };
    let keyword = &line[..split_at];
    let args = line[split_at..].trim_start_matches(is_split_space);
    let (rest, flags) = extract_builder_flags(args);
    SplitCommand {
        keyword,
        flags,
        rest: rest.trim(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Spaces,
    Word,
    Quote(char),
}

/// Takes leading words that start with `--` off `line`; returns the rest and the flags with
/// quotes and backslash escapes removed. A bare `--` ends the flags and is dropped.
pub(crate) fn extract_builder_flags(line: &str) -> (&str, Vec<String>) {
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut chars = line.char_indices().peekable();
    loop {
        let Some((pos, ch)) = chars.next() else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return ("", words);
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            let next_dash = matches!(chars.peek(), Some(&(_, '-')));
            if ch != '-' || !next_dash {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[pos..], words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    continue;
                }
                if ch == '\\' {
                    match chars.next() {
                        Some((_, escaped)) => word.push(escaped),
                        None => continue,
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                    continue;
                }
                if ch == '\\' {
                    match chars.next() {
                        Some((_, escaped)) => word.push(escaped),
                        None => phase = Phase::Word,
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Spaces => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_off() {
        let s = split_command("COPY --user=me --doit=true foo /tmp/");
        assert_eq!(s.keyword, "COPY");
        assert_eq!(s.flags, vec!["--user=me", "--doit=true"]);
        assert_eq!(s.rest, "foo /tmp/");
        let s = split_command("CMD --doit -- [ ]");
        assert_eq!((s.flags, s.rest), (vec!["--doit".to_string()], "[ ]"));
        let s = split_command("RUN --mount=type=cache,target=\"/a b\" echo");
        assert_eq!(s.flags, vec!["--mount=type=cache,target=/a b"]);
        assert_eq!(s.rest, "echo");
        let s = split_command("RUN -x");
        assert!(s.flags.is_empty());
        assert_eq!(s.rest, "-x");
    }

    #[test]
    fn keyword_only() {
        let s = split_command("  HEALTHCHECK  ");
        assert_eq!((s.keyword, s.rest), ("HEALTHCHECK", ""));
    }

    #[test]
    fn whitespace_runs() {
        assert_eq!(split_whitespace_runs("a  b\tc", 0), vec!["a", "b", "c"]);
        assert_eq!(split_whitespace_runs("a  b\tc", 2), vec!["a", "b\tc"]);
        assert_eq!(split_whitespace_runs("a", 2), vec!["a"]);
    }
}
