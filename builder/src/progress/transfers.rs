//! Registry blob transfers (kiln_registry's progress callbacks) as status items of a build
//! vertex, e.g. the layers of `[build 1/4] FROM busybox` (`#3 sha256:… 1.05MB / 2.10MB 0.4s`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_oci::Digest;
use kiln_registry::progress::{BlobStatus, Progress};
use kiln_solver::progress::VertexProgress;

/// Intermediate byte counts of one blob are reported at most this often.
const UPDATE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Transfer {
    current: u64,
    total: u64,
    last_sent: Option<Instant>,
}

/// Forwards transfer callbacks to a vertex's status items.
#[derive(Debug)]
pub struct VertexTransfers {
    vertex: VertexProgress,
    transfers: Mutex<HashMap<Digest, Transfer>>,
}

impl VertexTransfers {
    /// Reports the transfers as status items of `vertex`.
    pub fn new(vertex: VertexProgress) -> Self {
        VertexTransfers {
            vertex,
            transfers: Mutex::new(HashMap::new()),
        }
    }

    fn with_transfer(&self, digest: &Digest, f: impl FnOnce(&mut Transfer)) {
        // A poisoned lock only means another callback panicked; progress stays best effort.
        let mut map = match self.transfers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let t = map.entry(digest.clone()).or_insert(Transfer {
            current: 0,
            total: 0,
            last_sent: None,
        });
        f(t);
    }
}

fn total(t: &Transfer) -> Option<u64> {
    (t.total > 0).then_some(t.total)
}

impl Progress for VertexTransfers {
    fn start(&self, digest: &Digest, size: u64) {
        let status = self.vertex.status(digest.to_string());
        self.with_transfer(digest, |t| {
            t.total = size;
            t.last_sent = Some(Instant::now());
            status.update(t.current, total(t));
        });
    }

    fn advance(&self, digest: &Digest, n: u64) {
        let status = self.vertex.status(digest.to_string());
        self.with_transfer(digest, |t| {
            t.current = t.current.saturating_add(n);
            let due = t.last_sent.is_none_or(|s| s.elapsed() >= UPDATE_INTERVAL);
            if due {
                t.last_sent = Some(Instant::now());
                status.update(t.current, total(t));
            }
        });
    }

    fn done(&self, digest: &Digest, _status: BlobStatus) {
        let status = self.vertex.status(digest.to_string());
        self.with_transfer(digest, |t| {
            // A blob that already existed moved no bytes; show its size as done.
            let current = if t.current == 0 { t.total } else { t.current };
            status.complete(current, total(t));
        });
    }

    fn message(&self, line: &str) {
        self.vertex.status(line).complete(0, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::{channel, synthetic_digest, EventKind};

    #[test]
    fn transfers_become_status_items() {
        let (tx, rx) = channel();
        let t = VertexTransfers::new(tx.handle(synthetic_digest("from")));
        let d = Digest::of(b"a layer");
        t.message("resolve 127.0.0.1:5000/library/busybox:latest");
        t.start(&d, 2_000);
        for _ in 0..1000 {
            t.advance(&d, 2);
        }
        t.done(&d, BlobStatus::Downloaded);
        drop((t, tx));
        let statuses: Vec<(String, u64, Option<u64>, bool)> = rx
            .filter_map(|e| match e.kind {
                EventKind::Status {
                    id,
                    current,
                    total,
                    completed,
                } => Some((id, current, total, completed)),
                _ => None,
            })
            .collect();
        assert_eq!(
            statuses.first(),
            Some(&(
                "resolve 127.0.0.1:5000/library/busybox:latest".to_string(),
                0,
                None,
                true
            ))
        );
        assert_eq!(
            statuses.get(1),
            Some(&(d.to_string(), 0, Some(2_000), false))
        );
        assert_eq!(
            statuses.last(),
            Some(&(d.to_string(), 2_000, Some(2_000), true))
        );
        // 1000 advances in well under 100ms each are throttled, not forwarded one by one.
        assert!(statuses.len() < 1000, "{}", statuses.len());
    }
}
