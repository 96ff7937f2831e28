use std::io::Write as _;
use std::thread;

use super::*;

#[test]
fn events_arrive_in_order_and_iteration_ends_when_senders_drop() {
    let (tx, rx) = channel();
    let d = synthetic_digest("step");
    let v = tx.vertex(d, "[build 1/2] RUN true");
    v.start();
    v.log(LogStream::Stdout, b"hello\n".to_vec());
    v.done();
    drop(v);
    drop(tx);
    let kinds: Vec<EventKind> = rx.map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Registered {
                name: "[build 1/2] RUN true".into(),
                inputs: vec![]
            },
            EventKind::Started,
            EventKind::Log {
                stream: LogStream::Stdout,
                data: b"hello\n".to_vec()
            },
            EventKind::Completed,
        ]
    );
}

#[test]
fn senders_work_from_many_threads_and_keep_per_thread_order() {
    let (tx, rx) = channel();
    let mut handles = Vec::new();
    for t in 0..4u8 {
        let v = tx.vertex(synthetic_digest(&format!("v{t}")), format!("v{t}"));
        handles.push(thread::spawn(move || {
            v.start();
            for i in 0..100u64 {
                v.status("sha256:abc").update(i, Some(100));
            }
            v.done();
        }));
    }
    drop(tx);
    for h in handles {
        h.join().ok();
    }
    let events: Vec<ProgressEvent> = rx.collect();
    assert_eq!(events.len(), 4 * (1 + 1 + 100 + 1));
    for t in 0..4u8 {
        let d = synthetic_digest(&format!("v{t}"));
        let mine: Vec<&ProgressEvent> = events.iter().filter(|e| e.vertex == d).collect();
        assert!(matches!(
            mine.first().map(|e| &e.kind),
            Some(EventKind::Registered { .. })
        ));
        assert_eq!(mine.last().map(|e| &e.kind), Some(&EventKind::Completed));
        let currents: Vec<u64> = mine
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Status { current, .. } => Some(current),
                _ => None,
            })
            .collect();
        assert_eq!(currents, (0..100).collect::<Vec<_>>());
    }
}

#[test]
fn sending_without_a_receiver_is_silent() {
    let (tx, rx) = channel();
    drop(rx);
    let v = tx.vertex(synthetic_digest("x"), "x");
    v.start();
    v.error("boom");
    let d = ProgressSender::discard().vertex(synthetic_digest("y"), "y");
    d.log(LogStream::Stderr, "ignored");
}

#[test]
fn log_writer_forwards_raw_bytes_and_skips_empty_chunks() {
    let (tx, rx) = channel();
    let v = tx.handle(synthetic_digest("w"));
    let mut w = v.writer(LogStream::Stderr);
    w.write_all(b"partial line without newline \xff").ok();
    w.write_all(b"").ok();
    drop((tx, v, w));
    let events: Vec<ProgressEvent> = rx.collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events.first().map(|e| &e.kind),
        Some(&EventKind::Log {
            stream: LogStream::Stderr,
            data: b"partial line without newline \xff".to_vec()
        })
    );
}

#[test]
fn recv_timeout_distinguishes_timeout_and_closed() {
    let (tx, rx) = channel();
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_millis(1)),
        Received::Timeout
    );
    tx.handle(synthetic_digest("a")).start();
    assert!(matches!(rx.try_recv(), Received::Event(_)));
    drop(tx);
    assert_eq!(rx.try_recv(), Received::Closed);
}

#[test]
fn synthetic_digests_are_stable_and_distinct() {
    assert_eq!(synthetic_digest("a"), synthetic_digest("a"));
    assert_ne!(synthetic_digest("a"), synthetic_digest("b"));
}

#[test]
fn final_kinds() {
    assert!(EventKind::Cached.is_final());
    assert!(EventKind::Canceled.is_final());
    assert!(!EventKind::Started.is_final());
}
