//! The display side of the progress channel: events until every sender is gone, or until
//! [`super::ProgressDisplay::finish`] asks the display to stop (then whatever is already
//! queued is still drained), so a forgotten sender clone cannot hang the CLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::{EventKind, ProgressEvent, ProgressReceiver, Received};
use std::collections::HashMap;

/// How often a waiting display looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What [`Feed::next`] found.
#[derive(Debug)]
pub enum Next {
    /// An event.
    Event(ProgressEvent),
    /// Nothing yet.
    Idle,
    /// The stream is over.
    End,
}

/// Name prefixes by vertex (bake: the targets a vertex is built for).
pub type Prefixes = HashMap<VertexDigest, String>;

/// A receiver plus the stop flag its display owner may set.
#[derive(Debug)]
pub struct Feed {
    rx: ProgressReceiver,
    stop: Arc<AtomicBool>,
    prefixes: Prefixes,
}

impl Feed {
    /// A feed that ends only when all senders are dropped (or `stop` is set).
    pub fn new(rx: ProgressReceiver, stop: Arc<AtomicBool>) -> Self {
        Feed {
            rx,
            stop,
            prefixes: Prefixes::new(),
        }
    }

    /// The feed with the names of these vertices prefixed (see [`prefixed_name`]).
    pub fn prefixed(mut self, prefixes: Prefixes) -> Self {
        self.prefixes = prefixes;
        self
    }

    /// The next event, waiting at most `wait` (and never longer than the stop-flag poll).
    pub fn next(&self, wait: Duration) -> Next {
        if self.stop.load(Ordering::Acquire) {
            // Events sent before the stop request are queued already: drain, then end.
            return match self.rx.try_recv() {
                Received::Event(e) => Next::Event(self.rename(e)),
                Received::Timeout | Received::Closed => Next::End,
            };
        }
        match self.rx.recv_timeout(wait.min(POLL)) {
            Received::Event(e) => Next::Event(self.rename(e)),
            Received::Timeout => Next::Idle,
            Received::Closed => Next::End,
        }
    }

    fn rename(&self, mut e: ProgressEvent) -> ProgressEvent {
        if let (EventKind::Registered { name, .. }, Some(prefix)) =
            (&mut e.kind, self.prefixes.get(&e.vertex))
        {
            *name = prefixed_name(prefix, name);
        }
        e
    }
}

/// A vertex name with a prefix, as buildx's `progress.WithPrefix` writes it: inside the
/// leading bracket when the name has one (`[app build 2/4] RUN …`), else as its own.
pub fn prefixed_name(prefix: &str, name: &str) -> String {
    match name.strip_prefix('[') {
        Some(rest) => format!("[{prefix} {rest}"),
        None => format!("[{prefix}] {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::channel;

    #[test]
    fn names_are_prefixed_as_buildx_prefixes_a_target() {
        assert_eq!(
            prefixed_name("app", "[build 2/4] RUN make"),
            "[app build 2/4] RUN make"
        );
        assert_eq!(
            prefixed_name("app,tool", "[internal] load build context"),
            "[app,tool internal] load build context"
        );
        assert_eq!(
            prefixed_name("app", "exporting to image"),
            "[app] exporting to image"
        );
    }

    #[test]
    fn only_the_registration_of_a_prefixed_vertex_is_renamed() {
        let (tx, rx) = channel();
        let (named, other) = (VertexDigest([1; 32]), VertexDigest([2; 32]));
        tx.vertex_with_inputs(named, "[1/2] FROM a", Vec::new());
        tx.vertex_with_inputs(other, "[2/2] RUN b", Vec::new());
        drop(tx);
        let feed = Feed::new(rx, Arc::new(AtomicBool::new(false)))
            .prefixed(Prefixes::from([(named, "app".to_string())]));
        let mut names = Vec::new();
        while let Next::Event(e) = feed.next(Duration::from_secs(1)) {
            if let EventKind::Registered { name, .. } = e.kind {
                names.push(name);
            }
        }
        assert_eq!(names, ["[app 1/2] FROM a", "[2/2] RUN b"]);
    }
}
