//! Heredoc detection on RUN/COPY/ADD lines (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`).
//!
//! As in BuildKit, the first line of the instruction is split into shell words (quotes and
//! escapes kept, `<<` followed by blanks glued to the next word), and every word matching
//! `^(\d*)<<(-?)\s*([^<]*)$` is a heredoc. The delimiter is quoted (no expansion of the body)
//! when removing quotes changes the number of quote characters in it.

use super::node::Heredoc;

/// Settings of the small word splitter.
#[derive(Clone, Copy)]
struct Lex {
    /// Keep quote characters in the words.
    raw_quotes: bool,
    /// Keep escape characters in the words.
    raw_escapes: bool,
}

/// Splits `s` into shell words with `\` as escape. `None` on an unterminated quote.
fn split_words(s: &str, lex: Lex) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if lex.raw_escapes {
                    word.push('\\');
                }
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '\'' => {
                in_word = true;
                if lex.raw_quotes {
                    word.push('\'');
                }
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
                if lex.raw_quotes {
                    word.push('\'');
                }
            }
            '"' => {
                in_word = true;
                if lex.raw_quotes {
                    word.push('"');
                }
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let next = chars.next()?;
                            if lex.raw_escapes || !matches!(next, '"' | '$' | '\\' | '`') {
                                word.push('\\');
                            }
                            word.push(next);
                        }
                        c => word.push(c),
                    }
                }
                if lex.raw_quotes {
                    word.push('"');
                }
            }
            '<' if chars.peek() == Some(&'<') => {
                in_word = true;
                chars.next();
                word.push_str("<<");
                // Blanks between `<<` and the delimiter belong to the heredoc word.
                while let Some(&c) = chars.peek() {
                    if c != ' ' && c != '\t' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Parses one word as a heredoc start; `None` when it is not one.
pub fn parse_heredoc(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let (fd, rest) = word.split_at(digits);
    let rest = rest.strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    // Go ignores the ParseUint error and keeps its saturated value.
    let file_descriptor = if fd.is_empty() {
        0
    } else {
        fd.parse::<u64>().unwrap_or(u64::MAX)
    };
    let plain = split_words(
        rest,
        Lex {
            raw_quotes: false,
            raw_escapes: false,
        },
    )?;
    let [name] = plain.as_slice() else {
        return None;
    };
    let raw = split_words(
        rest,
        Lex {
            raw_quotes: true,
            raw_escapes: false,
        },
    )?;
    let raw_name = raw.first()?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        file_descriptor,
    })
}

/// All heredocs started on `line`, in order.
pub fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    split_words(
        line,
        Lex {
            raw_quotes: true,
            raw_escapes: true,
        },
    )
    .unwrap_or_default()
    .iter()
    .filter_map(|w| parse_heredoc(w))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool, u64)> {
        heredocs_from_line(line)
            .into_iter()
            .map(|h| (h.name, h.expand, h.chomp, h.file_descriptor))
            .collect()
    }

    #[test]
    fn forms() {
        assert_eq!(names("RUN <<EOF"), vec![("EOF".into(), true, false, 0)]);
        assert_eq!(names("RUN 3<<-'X'"), vec![("X".into(), false, true, 3)]);
        assert_eq!(names("RUN <<eo'f'"), vec![("eof".into(), false, false, 0)]);
        assert_eq!(names(r"RUN <<eo\'f"), vec![("eo'f".into(), true, false, 0)]);
        assert_eq!(
            names(r"RUN <<'e'o\'f"),
            vec![("eo'f".into(), false, false, 0)]
        );
        assert_eq!(
            names("RUN <<  EOF  > foo"),
            vec![("EOF".into(), true, false, 0)]
        );
        assert_eq!(names("COPY <<A <<B /d").len(), 2);
        assert!(names("RUN \"<<NOHEREDOC\"").is_empty());
        assert!(names("RUN echo a<<b").is_empty());
        assert!(names("RUN <<'unterminated").is_empty());
    }
}
