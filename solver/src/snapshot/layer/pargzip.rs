//! Parallel gzip, pigz-style: the input is cut into fixed 1 MiB chunks, each compressed as
//! raw deflate on the rayon pool and ended with a sync flush (the last one with the final
//! block), then written in order between one gzip header and trailer. The result is a single
//! ordinary gzip member any reader accepts. Chunk boundaries depend only on the input, never
//! on the thread count or on flush calls, so the output is deterministic. Compression runs
//! while the caller keeps writing (tarring, hashing): a pipeline with a bounded number of
//! chunks in flight. Chunks that would not shrink (random or already-compressed data, tested
//! on a few probes) are written as stored blocks instead of being deflated for nothing.
//!
//! Since every chunk is compressed on its own, the blob of an input that shares its first
//! chunks with an earlier one starts with the same bytes: a *tracked* encoder reports its
//! state at every chunk boundary ([`InputMark`]: input offset, CRC, sha256 of the input) and
//! a [`ParallelGzEncoder::resume`]d one carries on from such a mark.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use crc32fast::Hasher as Crc;
use flate2::{Compress, Compression, FlushCompress, Status};
use kiln_oci::Digest;
use sha2_11::{Digest as _, Sha256};

use crate::content::{finish_hash, restore_hash, save_hash, HashState};

/// Input bytes per independently compressed chunk.
pub const CHUNK: usize = 1 << 20;

/// The encoder's state at a chunk boundary of its input, all a resumed encoder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMark {
    /// Input bytes before the boundary (a multiple of [`CHUNK`]).
    pub offset: u64,
    /// CRC-32 of those bytes.
    pub crc: u32,
    /// sha256 state after those bytes.
    pub hash: HashState,
}

/// Called after a chunk's output was written to the inner writer, with the mark of the input
/// boundary that chunk ends at.
pub type ChunkHook<W> = Box<dyn FnMut(&mut W, InputMark) -> io::Result<()> + Send>;

/// A chunk being compressed: its output, once done.
type Compressing = Receiver<io::Result<Vec<u8>>>;

/// A tracked encoder's sha256 of its input and what to call at each chunk boundary.
struct Track<W> {
    hash: Sha256,
    hook: ChunkHook<W>,
}

/// A gzip writer compressing chunks in parallel.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: Compression,
    crc: Crc,
    /// Input bytes taken (resumed encoders count the skipped prefix).
    total_in: u64,
    current: Vec<u8>,
    /// Chunks being compressed on the rayon pool, oldest first, with the mark of the input
    /// boundary each ends at (tracked encoders); their output is written in this order while
    /// the caller goes on producing input (a pipeline, not batches).
    in_flight: VecDeque<(Compressing, Option<InputMark>)>,
    header_written: bool,
    track: Option<Track<W>>,
}

/// Bytes of each probe [`incompressible`] deflates.
const PROBE: usize = 16 << 10;
/// Probes per chunk, spread evenly over it.
const PROBES: usize = 4;

/// Whether deflating `chunk` would not pay: its evenly spread probes shrink by less than 3%
/// (already-compressed or random data). Decided from the bytes alone, so the same input
/// always gives the same blob.
fn incompressible(chunk: &[u8], level: Compression) -> bool {
    // Below level 1 nothing is compressed anyway; tiny chunks are cheap to try.
    if level.level() == 0 || chunk.len() < PROBE * PROBES {
        return false;
    }
    let stride = chunk.len() / PROBES;
    let (mut inp, mut outp) = (0usize, 0usize);
    let mut out = Vec::with_capacity(PROBE + PROBE / 8 + 64);
    for i in 0..PROBES {
        let Some(probe) = chunk.get(i * stride..i * stride + PROBE) else {
            return false;
        };
        let mut c = Compress::new(level, false);
        out.clear();
        if c.compress_vec(probe, &mut out, FlushCompress::Finish)
            .is_err()
            || usize::try_from(c.total_in()).ok() != Some(probe.len())
        {
            // Output space ran out: it grew, so it is incompressible.
            return true;
        }
        inp += probe.len();
        outp += out.len();
    }
    outp * 100 >= inp * 97
}

/// `chunk` as deflate stored blocks (the last one final when `last`): what a compressor
/// emits for data it cannot shrink, at memcpy speed.
fn store_chunk(chunk: &[u8], last: bool) -> Vec<u8> {
    const MAX: usize = 65535;
    let blocks = chunk.len().div_ceil(MAX).max(1);
    let mut out = Vec::with_capacity(chunk.len() + blocks * 5);
    let mut pieces = chunk.chunks(MAX).peekable();
    if pieces.peek().is_none() {
        // An empty last chunk still needs its final block.
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(piece) = pieces.next() {
        let fin = last && pieces.peek().is_none();
        // `piece.len() <= 65535` by construction.
        let len = u16::try_from(piece.len()).unwrap_or(u16::MAX);
        out.push(u8::from(fin));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Raw deflate of one chunk: sync-flushed, or finished when it is the last. Chunks that
/// would not shrink are stored (stored blocks end byte-aligned, as a sync flush does).
fn deflate_chunk(chunk: &[u8], level: Compression, last: bool) -> io::Result<Vec<u8>> {
    if incompressible(chunk, level) {
        return Ok(store_chunk(chunk, last));
    }
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
            total_in: 0,
            current: Vec::with_capacity(CHUNK),
            in_flight: VecDeque::new(),
            header_written: false,
            track: None,
        }
    }

    /// Like [`Self::new`], also hashing the input (sha256) and calling `hook` after each
    /// chunk's output is written, with that boundary's [`InputMark`].
    pub fn tracked(inner: W, level: u32, hook: ChunkHook<W>) -> Self {
        let mut e = Self::new(inner, level);
        e.track = Some(Track {
            hash: Sha256::new(),
            hook,
        });
        e
    }

    /// A tracked encoder carrying on after `at`: `inner` already holds the gzip header and
    /// the compressed chunks of the input before `at.offset`, written by an encoder of the
    /// same `level`. The caller writes the input from `at.offset` on. `None` when the mark
    /// is not a chunk boundary or its hash state does not restore.
    pub fn resume(inner: W, level: u32, at: &InputMark, hook: ChunkHook<W>) -> Option<Self> {
        if !at.offset.is_multiple_of(CHUNK as u64) {
            return None;
        }
        let mut e = Self::new(inner, level);
        e.crc = Crc::new_with_initial_len(at.crc, at.offset);
        e.total_in = at.offset;
        e.header_written = true;
        e.track = Some(Track {
            hash: restore_hash(&at.hash)?,
            hook,
        });
        Some(e)
    }

    /// Chunks compressing at once: enough to keep every thread busy, bounded memory.
    fn max_in_flight() -> usize {
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

    /// Queues `chunk` for compression on the pool.
    fn submit(&mut self, chunk: Vec<u8>, last: bool) {
        let (tx, rx) = sync_channel(1);
        let level = self.level;
        rayon::spawn(move || {
            // The receiver is gone only when the encoder was dropped: nothing to report to.
            let _ = tx.send(deflate_chunk(&chunk, level, last));
        });
        let mark = match &self.track {
            Some(t) if !last => Some(InputMark {
                offset: self.total_in,
                crc: self.crc.clone().finalize(),
                hash: save_hash(&t.hash),
            }),
            _ => None,
        };
        self.in_flight.push_back((rx, mark));
    }

    /// Writes the compressed chunks that are done, in order; with `wait_for` set, first
    /// waits until no more than that many are in flight.
    fn drain(&mut self, wait_for: Option<usize>) -> io::Result<()> {
        self.write_header()?;
        while let Some((rx, _)) = self.in_flight.front() {
            let must_wait = wait_for.is_some_and(|n| self.in_flight.len() > n);
            let done = if must_wait {
                recv_helping(rx)?
            } else {
                match rx.try_recv() {
                    Ok(done) => done,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(lost_chunk()),
                }
            };
            let mark = self.in_flight.pop_front().and_then(|(_, m)| m);
            self.inner.write_all(&done?)?;
            if let (Some(mark), Some(t)) = (mark, &mut self.track) {
                (t.hook)(&mut self.inner, mark)?;
            }
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_tracked().map(|(w, _, _)| w)
    }

    /// [`Self::finish`], also returning the sha256 of the whole input (tracked encoders;
    /// `None` otherwise) and its size.
    pub fn finish_tracked(mut self) -> io::Result<(W, Option<Digest>, u64)> {
        let last = std::mem::take(&mut self.current);
        self.submit(last, true);
        self.drain(Some(0))?;
        let crc = self.crc.clone().finalize();
        // ISIZE: the input size modulo 2^32.
        let size = (self.total_in & 0xffff_ffff) as u32;
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&size.to_le_bytes())?;
        self.inner.flush()?;
        let digest = self.track.map(|t| finish_hash(t.hash));
        Ok((self.inner, digest, self.total_in))
    }
}

fn lost_chunk() -> io::Error {
    io::Error::other("a gzip compression job ended without a result")
}

/// Waits for a chunk; on a rayon worker thread (a caller inside `install`), runs queued
/// pool jobs meanwhile, so waiting on a job that only this thread could run cannot hang.
fn recv_helping(rx: &Receiver<io::Result<Vec<u8>>>) -> io::Result<io::Result<Vec<u8>>> {
    loop {
        match rx.try_recv() {
            Ok(done) => return Ok(done),
            Err(TryRecvError::Disconnected) => return Err(lost_chunk()),
            Err(TryRecvError::Empty) => {}
        }
        match rayon::yield_now() {
            // Not a pool thread: the pool runs the job; block.
            None => return rx.recv().map_err(|_| lost_chunk()),
            Some(rayon::Yield::Executed) => {}
            Some(rayon::Yield::Idle) => match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(done) => return Ok(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(lost_chunk()),
            },
        }
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.current.len();
        let taken = buf.get(..buf.len().min(room)).unwrap_or_default();
        self.current.extend_from_slice(taken);
        self.crc.update(taken);
        self.total_in += taken.len() as u64;
        if let Some(t) = &mut self.track {
            t.hash.update(taken);
        }
        if self.current.len() == CHUNK {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK));
            self.submit(full, false);
            self.drain(Some(Self::max_in_flight()))?;
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
pub(super) mod tests {
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

    /// xorshift bytes: as incompressible as random, but reproducible.
    pub(in crate::snapshot::layer) fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_chunks_are_stored_and_round_trip() {
        // Random chunks around a compressible one, and a random tail shorter than the probes.
        let mut data = noise(2 * CHUNK, 1);
        data.extend((0..CHUNK).map(|i| (i % 7) as u8));
        data.extend(noise(CHUNK + 1000, 2));
        data.extend(noise(100, 3));
        assert!(incompressible(
            data.get(..CHUNK).unwrap(),
            Compression::new(1)
        ));
        assert!(!incompressible(
            data.get(2 * CHUNK..3 * CHUNK).unwrap(),
            Compression::new(1)
        ));
        for level in [1, 6, 9] {
            let mut e = ParallelGzEncoder::new(Vec::new(), level);
            e.write_all(&data).unwrap();
            let gz = e.finish().unwrap();
            assert_eq!(gunzip(&gz), data, "level {level}");
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let again = one.install(|| {
                let mut e = ParallelGzEncoder::new(Vec::new(), level);
                for piece in data.chunks(4099) {
                    e.write_all(piece).unwrap();
                }
                e.finish().unwrap()
            });
            assert_eq!(
                again, gz,
                "same bytes whatever the threads and writes, level {level}"
            );
            // Stored random bytes cost 5 bytes per 64 KiB block, the compressible MiB ~nothing.
            assert!(gz.len() < data.len() - CHUNK + CHUNK / 50, "level {level}");
            assert!(gz.len() > data.len() - CHUNK, "level {level}");
        }
        // Stored output: exactly the deflate framing around the bytes.
        for (len, last) in [
            (0, true),
            (0, false),
            (65535, true),
            (65536, false),
            (200_000, true),
        ] {
            let chunk = noise(len, 9);
            let mut out = Vec::new();
            let mut d = flate2::Decompress::new(false);
            let mut stored = store_chunk(&chunk, last);
            if !last {
                // A stream must end: finish it with an empty final stored block.
                stored.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
            }
            out.reserve(len + 16);
            d.decompress_vec(&stored, &mut out, flate2::FlushDecompress::Finish)
                .unwrap();
            assert_eq!(out, chunk, "len {len} last {last}");
        }
    }

    #[test]
    fn system_gzip_accepts_the_output() {
        let mut data: Vec<u8> = (0..(2 * CHUNK + 10)).map(|i| (i % 13) as u8).collect();
        // A stored (incompressible) chunk in the middle and at the end.
        let tail = data.split_off(CHUNK);
        data.extend(noise(CHUNK, 5));
        data.extend(tail);
        data.extend(noise(CHUNK + 77, 6));
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
