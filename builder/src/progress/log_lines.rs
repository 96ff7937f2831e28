//! Splitting raw log chunks into lines, and making a line safe to draw in a terminal frame.

/// Collects chunks of one stream and hands out complete lines (without the `\n`).
#[derive(Debug, Default, Clone)]
pub struct LineBuffer {
    partial: Vec<u8>,
    /// Keep at most this many bytes of a line (its end, where `\r`-redrawn progress
    /// shows); `None` keeps everything.
    limit: Option<usize>,
}

impl LineBuffer {
    /// A buffer that keeps only the last `limit` bytes of each line (for displays that show
    /// a tail, so a huge unterminated output cannot exhaust memory).
    pub fn with_limit(limit: usize) -> Self {
        LineBuffer {
            partial: Vec::new(),
            limit: Some(limit),
        }
    }

    /// Appends `data`; returns the lines it completed, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        self.push_each(data, |line| lines.push(line.to_vec()));
        lines
    }

    /// Appends `data` and calls `f` with each line it completed, in order (a trailing `\r` is
    /// dropped). Lines wholly inside `data` are passed without copying.
    pub fn push_each(&mut self, data: &[u8], mut f: impl FnMut(&[u8])) {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            match piece.strip_suffix(b"\n") {
                Some(body) if self.partial.is_empty() => {
                    let body = self.keep(body);
                    f(body.strip_suffix(b"\r").unwrap_or(body));
                }
                Some(body) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(self.keep(body));
                    cap(&mut line, self.limit);
                    f(line.strip_suffix(b"\r").unwrap_or(&line));
                    // Reuse the allocation for the next partial line.
                    line.clear();
                    self.partial = line;
                }
                None => {
                    let kept = self.keep(piece);
                    self.partial.extend_from_slice(kept);
                    cap(&mut self.partial, self.limit);
                }
            }
        }
    }

    /// The part of `data` worth appending under the limit.
    fn keep<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        match self.limit {
            Some(limit) => data.get(data.len().saturating_sub(limit)..).unwrap_or(data),
            None => data,
        }
    }

    /// The unterminated rest, if any (flushed when the vertex ends).
    pub fn take_partial(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.partial))
        }
    }

    /// The unterminated rest without taking it.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }
}

/// An error message without a leading `<vertex name>: `: the vertex line already names it
/// (BuildKit prints `#5 ERROR: process "/bin/sh -c exit 3" did not complete …`).
pub fn error_text<'a>(name: &str, message: &'a str) -> &'a str {
    message
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(": "))
        .filter(|rest| !name.is_empty() && !rest.is_empty())
        .unwrap_or(message)
}

/// Drops the front of `line` beyond `limit` bytes.
fn cap(line: &mut Vec<u8>, limit: Option<usize>) {
    if let Some(limit) = limit {
        let excess = line.len().saturating_sub(limit);
        line.drain(..excess);
    }
}

/// A log line as a terminal frame may show it: text after the last carriage return (what a
/// terminal would show), ANSI escape sequences removed, tabs as spaces, other control
/// characters dropped, invalid UTF-8 replaced.
pub fn sanitize(line: &[u8]) -> String {
    let visible = match line.iter().rposition(|b| *b == b'\r') {
        Some(pos) => line.get(pos + 1..).unwrap_or_default(),
        None => line,
    };
    let text = String::from_utf8_lossy(visible);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: drop ESC and the next char.
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks_and_keeps_partials() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"hel"), Vec::<Vec<u8>>::new());
        assert_eq!(b.push(b"lo\nwor"), vec![b"hello".to_vec()]);
        assert_eq!(b.push(b"ld\r\n\nx"), vec![b"world".to_vec(), b"".to_vec()]);
        assert_eq!(b.partial(), b"x");
        assert_eq!(b.take_partial(), Some(b"x".to_vec()));
        assert_eq!(b.take_partial(), None);
    }

    #[test]
    fn limited_buffers_keep_line_ends() {
        let mut b = LineBuffer::with_limit(4);
        assert!(b.push(b"abcdefgh").is_empty());
        assert_eq!(b.partial(), b"efgh");
        assert!(b.push(&vec![b'x'; 1_000_000]).is_empty());
        assert_eq!(b.partial(), b"xxxx");
        assert_eq!(
            b.push(b"12\n123456789\nab"),
            vec![b"xx12".to_vec(), b"6789".to_vec()]
        );
        assert_eq!(b.partial(), b"ab");
    }

    #[test]
    fn error_text_drops_the_repeated_vertex_name() {
        assert_eq!(
            error_text("[s 2/2] RUN exit 3", "[s 2/2] RUN exit 3: exit code: 3"),
            "exit code: 3"
        );
        assert_eq!(
            error_text("[s 2/2] RUN exit 3", "exit code: 3"),
            "exit code: 3"
        );
        assert_eq!(error_text("", ": x"), ": x");
        assert_eq!(error_text("n", "n: "), "n: ");
    }

    #[test]
    fn sanitizes_for_terminal() {
        assert_eq!(sanitize(b"10%\r50%\r100%"), "100%");
        assert_eq!(sanitize(b"\x1b[31mred\x1b[0m\tok"), "red    ok");
        assert_eq!(sanitize(b"bad \xff byte\x07"), "bad \u{fffd} byte");
    }
}
