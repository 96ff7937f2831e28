//! Parallel gzip, pigz-style: the input is cut into fixed 1 MiB chunks, each compressed as
//! raw deflate on the rayon pool and ended with a sync flush (the last one with the final
//! block), then written in order between one gzip header and trailer. The result is a single
//! ordinary gzip member any reader accepts. Chunk boundaries depend only on the input, never
//! on the thread count or on flush calls, so the output is deterministic.

use std::io::{self, Write};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Input bytes per independently compressed chunk.
pub const CHUNK: usize = 1 << 20;

/// A gzip writer compressing chunks in parallel.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: Compression,
    crc: Crc,
    current: Vec<u8>,
    full: Vec<Vec<u8>>,
    header_written: bool,
}

/// Raw deflate of one chunk: sync-flushed, or finished when it is the last.
fn deflate_chunk(chunk: &[u8], level: Compression, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(chunk.len());
        let input = chunk.get(consumed..).unwrap_or_default();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(c.total_in()).unwrap_or(0) == chunk.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once it returns with output space to spare.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> ParallelGzEncoder<W> {
    /// Wraps `inner` with gzip `level` (0-9).
    pub fn new(inner: W, level: u32) -> Self {
        ParallelGzEncoder {
            inner,
            level: Compression::new(level.min(9)),
            crc: Crc::new(),
            current: Vec::with_capacity(CHUNK),
            full: Vec::new(),
            header_written: false,
        }
    }

    /// Chunks compressed together: enough to keep every thread busy.
    fn batch() -> usize {
        (rayon::current_num_threads() * 2).max(2)
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let xfl = match self.level.level() {
                9.. => 2,
                0 | 1 => 4,
                _ => 0,
            };
            // No name, mtime 0, OS "unknown": nothing varies between runs.
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn compress_full(&mut self, last: Option<Vec<u8>>) -> io::Result<()> {
        self.write_header()?;
        let level = self.level;
        let mut jobs: Vec<(&[u8], bool)> =
            self.full.iter().map(|c| (c.as_slice(), false)).collect();
        if let Some(l) = &last {
            jobs.push((l.as_slice(), true));
        }
        let out: Vec<io::Result<Vec<u8>>> = jobs
            .par_iter()
            .map(|(c, is_last)| deflate_chunk(c, level, *is_last))
            .collect();
        for d in out {
            self.inner.write_all(&d?)?;
        }
        self.full.clear();
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.current);
        self.compress_full(Some(last))?;
        let crc = self.crc.sum();
        let size = self.crc.amount();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&size.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.current.len();
        let taken = buf.get(..buf.len().min(room)).unwrap_or_default();
        self.current.extend_from_slice(taken);
        self.crc.update(taken);
        if self.current.len() == CHUNK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
            self.full.push(full);
            if self.full.len() >= Self::batch() {
                self.compress_full(None)?;
            }
        }
        Ok(taken.len())
    }

    /// Flushes the inner writer only: cutting a chunk here would make the output depend on
    /// how the caller flushes.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Decodes with the single-member decoder: the output must be one ordinary member.
    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(data);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    fn compress(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut e = ParallelGzEncoder::new(Vec::new(), 6);
        for p in data.chunks(data.len().div_ceil(pieces).max(1)) {
            e.write_all(p).unwrap();
            e.flush().unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn one_member_round_trip_deterministic_whatever_the_writes_and_threads() {
        let data: Vec<u8> = (0..(5 * CHUNK + 12345))
            .map(|i| ((i * 7) % 251) as u8)
            .collect();
        let a = compress(&data, 1);
        assert_eq!(
            a,
            compress(&data, 977),
            "write sizes and flushes do not matter"
        );
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            a,
            one.install(|| compress(&data, 3)),
            "thread count does not matter"
        );
        assert_eq!(gunzip(&a), data);
        assert!(a.len() < data.len() / 4, "it compresses");
    }

    #[test]
    fn empty_and_exact_chunk_inputs_are_valid_gzip() {
        let empty = ParallelGzEncoder::new(Vec::new(), 6).finish().unwrap();
        assert_eq!(gunzip(&empty), Vec::<u8>::new());
        let exact: Vec<u8> = (0..2 * CHUNK).map(|i| (i % 97) as u8).collect();
        assert_eq!(gunzip(&compress(&exact, 1)), exact);
        for level in [0, 1, 9] {
            let mut e = ParallelGzEncoder::new(Vec::new(), level);
            e.write_all(&exact).unwrap();
            assert_eq!(gunzip(&e.finish().unwrap()), exact, "level {level}");
        }
    }

    #[test]
    fn system_gzip_accepts_the_output() {
        let data: Vec<u8> = (0..(2 * CHUNK + 10)).map(|i| (i % 13) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, compress(&data, 1)).unwrap();
        let test = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(test.success(), "gzip -t");
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}
