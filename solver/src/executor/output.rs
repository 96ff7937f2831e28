//! Capturing a step's stdout and stderr: streamed to a callback, kept whole.

use std::fmt;

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process' standard output.
    Stdout,
    /// The process' standard error.
    Stderr,
}

/// Receives output chunks as they arrive (the progress UI).
pub type OutputCallback<'a> = &'a mut (dyn FnMut(Stream, &[u8]) + Send);

/// The whole interleaved output of a step, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    chunks: Vec<(Stream, Vec<u8>)>,
}

impl CapturedOutput {
    /// Appends a chunk.
    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        match self.chunks.last_mut() {
            Some((s, buf)) if *s == stream => buf.extend_from_slice(data),
            _ => self.chunks.push((stream, data.to_vec())),
        }
    }

    /// All bytes of one stream.
    pub fn stream(&self, stream: Stream) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// All bytes of both streams, interleaved as they arrived.
    pub fn combined(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// The last `n` lines of the combined output (lossy UTF-8).
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.combined()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines
            .get(start..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl fmt::Display for CapturedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.combined()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_and_tails() {
        let mut out = CapturedOutput::default();
        let big = "x\n".repeat(100_000);
        out.push(Stream::Stdout, big.as_bytes());
        out.push(Stream::Stderr, b"err1\n");
        out.push(Stream::Stdout, b"last\n");
        assert_eq!(out.stream(Stream::Stdout).len(), big.len() + 5);
        assert_eq!(out.stream(Stream::Stderr), b"err1\n");
        assert_eq!(out.last_lines(2), vec!["err1", "last"]);
        assert_eq!(out.last_lines(1_000_000).len(), 100_002);
    }
}
