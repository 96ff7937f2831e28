//! SIGINT and SIGTERM during `kiln build`.
//!
//! While the solve runs (the listener is [`Interrupts::arm`]ed) the first signal
//! cancels it: running steps are killed and their sandboxes torn down, then kiln
//! exits with 128 + the signal number (130, 143). A second signal while that
//! cleanup runs only says that it is running; a third exits at once, leaving
//! whatever is still mounted or running for the next run's sweep. Outside the
//! solve (resolving base images, exporting) a signal exits at once, as the
//! default action would: every store write there is atomic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A signal that stops a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit status a shell reports for a process killed by it.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 128 + libc::SIGINT as u8,
            Signal::Terminate => 128 + libc::SIGTERM as u8,
        }
    }

    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// A build stopped by a signal; the CLI exits with [`Signal::exit_code`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("build canceled by {}: the running steps were stopped and cleaned up", .signal.name())]
pub struct Interrupted {
    /// The signal.
    pub signal: Signal,
}

struct Shared {
    /// Whether a solve is handling signals.
    armed: AtomicBool,
    /// Signals received so far.
    count: AtomicUsize,
    /// The first signal, once received.
    first: watch::Sender<Option<Signal>>,
}

/// The build's signal listener.
pub struct Interrupts {
    shared: Arc<Shared>,
}

/// Signals cancel the solve while this lives.
pub struct Armed(Arc<Shared>);

impl Drop for Armed {
    fn drop(&mut self) {
        self.0.armed.store(false, Ordering::SeqCst);
    }
}

impl Interrupts {
    /// Listens for SIGINT and SIGTERM on `runtime` from now until it shuts down.
    pub fn listen(runtime: &tokio::runtime::Runtime) -> std::io::Result<Interrupts> {
        let _entered = runtime.enter();
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let shared = Arc::new(Shared {
            armed: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            first: watch::Sender::new(None),
        });
        let state = Arc::clone(&shared);
        runtime.spawn(async move {
            loop {
                let received = tokio::select! {
                    Some(()) = int.recv() => Signal::Interrupt,
                    Some(()) = term.recv() => Signal::Terminate,
                    else => return,
                };
                state.on_signal(received);
            }
        });
        Ok(Interrupts { shared })
    }

    /// Until the returned guard drops, a signal cancels the solve instead of
    /// ending kiln at once.
    pub fn arm(&self) -> Armed {
        self.shared.armed.store(true, Ordering::SeqCst);
        Armed(Arc::clone(&self.shared))
    }

    /// Completes at the first signal.
    pub fn received(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.first.subscribe();
        async move {
            // An error means the listener is gone: then no signal comes.
            if rx.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The first signal received, if any.
    pub fn signal(&self) -> Option<Signal> {
        *self.shared.first.borrow()
    }
}

impl Shared {
    fn on_signal(&self, received: Signal) {
        let count = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let handling = self.armed.load(Ordering::SeqCst) || self.first.borrow().is_some();
        match (handling, count) {
            (false, _) => {
                eprintln!("kiln: {}: exiting", received.name());
                std::process::exit(i32::from(received.exit_code()));
            }
            (true, 1) => {
                self.first.send_replace(Some(received));
            }
            (true, 2) => eprintln!(
                "kiln: {}: still stopping the running steps and removing their mounts; \
                 send it again to exit now (the next build sweeps what is left)",
                received.name()
            ),
            (true, _) => {
                let first = (*self.first.borrow()).unwrap_or(received);
                eprintln!(
                    "kiln: {}: exiting before the cleanup ended",
                    received.name()
                );
                std::process::exit(i32::from(first.exit_code()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(armed: bool) -> Shared {
        Shared {
            armed: AtomicBool::new(armed),
            count: AtomicUsize::new(0),
            first: watch::Sender::new(None),
        }
    }

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(
            Interrupted {
                signal: Signal::Terminate
            }
            .to_string(),
            "build canceled by SIGTERM: the running steps were stopped and cleaned up"
        );
    }

    #[test]
    fn the_first_signal_while_armed_is_recorded_and_the_second_only_warns() {
        let s = shared(true);
        s.on_signal(Signal::Terminate);
        assert_eq!(*s.first.borrow(), Some(Signal::Terminate));
        s.on_signal(Signal::Interrupt);
        assert_eq!(*s.first.borrow(), Some(Signal::Terminate));
        assert_eq!(s.count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn received_completes_after_the_first_signal() {
        let rt_shared = Arc::new(shared(true));
        let i = Interrupts {
            shared: Arc::clone(&rt_shared),
        };
        let waiting = tokio::spawn(i.received());
        assert!(i.signal().is_none());
        rt_shared.on_signal(Signal::Interrupt);
        waiting.await.unwrap();
        assert_eq!(i.signal(), Some(Signal::Interrupt));
    }
}
