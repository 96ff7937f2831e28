//! A writer that hands its bytes to a thread of its own: the blob's sha256 and the file
//! writes of an ingest then run beside the work producing the bytes (tarring, hashing the
//! diffID) instead of after it on the same thread.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Bytes gathered before they are handed over.
const HANDOFF: usize = 1 << 20;
/// Handoffs queued at most (bounded memory: a few MiB).
const QUEUE: usize = 4;

/// Work for the thread: bytes to write, or a call to make on the writer between them.
enum Job<W> {
    Bytes(Vec<u8>),
    Mark(Box<dyn FnOnce(&mut W) + Send>),
}

/// Writes to `W` on a background thread; [`ThreadedWriter::finish`] returns it.
pub struct ThreadedWriter<W: Write + Send + 'static> {
    tx: Option<SyncSender<Job<W>>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<(W, io::Result<()>)>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    /// Starts the thread that writes to `inner`.
    pub fn new(inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Job<W>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("kiln-writer".into())
            .spawn(move || {
                let mut inner = inner;
                for job in rx {
                    match job {
                        Job::Bytes(bytes) => {
                            if let Err(e) = inner.write_all(&bytes) {
                                return (inner, Err(e));
                            }
                        }
                        Job::Mark(f) => f(&mut inner),
                    }
                }
                let flushed = inner.flush();
                (inner, flushed)
            })?;
        Ok(ThreadedWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(HANDOFF),
            thread: Some(thread),
        })
    }

    /// Calls `f` on the writer on its thread once every byte written so far reached it
    /// (to read a hasher's state at this point of the stream, say).
    pub fn mark(&mut self, f: impl FnOnce(&mut W) + Send + 'static) -> io::Result<()> {
        self.hand_off()?;
        self.send(Job::Mark(Box::new(f)))
    }

    fn hand_off(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(HANDOFF));
        self.send(Job::Bytes(bytes))
    }

    fn send(&mut self, job: Job<W>) -> io::Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(job).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: a write failed. Its error is the one to report.
        match self.join() {
            Ok(_) => Err(io::Error::other("the writer thread stopped early")),
            Err(e) => Err(e),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        self.tx = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the writer thread was already joined"))?;
        match thread.join() {
            Ok((inner, Ok(()))) => Ok(inner),
            Ok((_, Err(e))) => Err(e),
            Err(_) => Err(io::Error::other("the writer thread panicked")),
        }
    }

    /// Writes what is left, waits for the thread and returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.hand_off()?;
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for ThreadedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= HANDOFF {
            self.hand_off()?;
        }
        Ok(data.len())
    }

    /// Hands the gathered bytes over; the inner writer is flushed by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        self.hand_off()
    }
}

impl<W: Write + Send + 'static> Drop for ThreadedWriter<W> {
    fn drop(&mut self) {
        // Unfinished: stop the thread and let it drop the inner writer (an ingest then
        // removes its temporary file).
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_the_inner_writer_comes_back() {
        let data: Vec<u8> = (0..(3 * HANDOFF + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = ThreadedWriter::new(Vec::new()).unwrap();
        for piece in data.chunks(7777) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        w.write_all(b"tail").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), data.len() + 4);
        assert_eq!(&out[..data.len()], &data[..]);
        assert_eq!(&out[data.len()..], b"tail");
    }

    /// Fails every write after `ok` bytes.
    struct Failing {
        ok: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.ok);
            self.ok -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_of_the_thread_is_reported() {
        let mut w = ThreadedWriter::new(Failing { ok: 10 }).unwrap();
        let big = vec![0u8; 2 * HANDOFF];
        // The error surfaces on a later handoff or at finish, never lost.
        let mut failed = None;
        for _ in 0..(QUEUE + 4) {
            if let Err(e) = w.write_all(&big) {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => w.finish().err().unwrap(),
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    }
}
