//! Scripted builds through every display, compared with golden files in `testdata/`.
//! Set `KILN_BLESS=1` to rewrite the golden files after an intended change.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::{
    channel, synthetic_digest, EventKind, LogStream, ProgressEvent, SourceRange, Warning,
    WarningLocation,
};

use super::plain::PlainPrinter;
use super::rawjson::RawJsonPrinter;
use super::state::BuildState;
use super::tty::render_frame;
use super::{ProgressDisplay, ProgressMode};

const BASE_SECS: u64 = 1_796_149_914; // 2026-12-01T18:31:54Z

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(BASE_SECS) + Duration::from_millis(ms)
}

fn d(label: &str) -> VertexDigest {
    synthetic_digest(label)
}

fn ev(label: &str, ms: u64, kind: EventKind) -> ProgressEvent {
    ProgressEvent {
        vertex: d(label),
        at: at(ms),
        kind,
    }
}

fn reg(label: &str, name: &str, inputs: &[&str]) -> ProgressEvent {
    ev(
        label,
        0,
        EventKind::Registered {
            name: name.into(),
            inputs: inputs.iter().map(|i| d(i)).collect(),
        },
    )
}

fn log(label: &str, ms: u64, stream: LogStream, data: &[u8]) -> ProgressEvent {
    ev(
        label,
        ms,
        EventKind::Log {
            stream,
            data: data.to_vec(),
        },
    )
}

fn status(
    label: &str,
    ms: u64,
    id: &str,
    current: u64,
    total: Option<u64>,
    completed: bool,
) -> ProgressEvent {
    ev(
        label,
        ms,
        EventKind::Status {
            id: id.into(),
            current,
            total,
            completed,
        },
    )
}

const LAYER: &str = "sha256:9c7a54a9a43cca047013b82af109fe963fde787f63f9e016fdc3384500c2823d";

/// A build with a transfer, a cache hit, interleaved RUN output, a failure, a pending vertex
/// and a lint warning. Events up to `ms` only.
fn scripted_build(until_ms: u64) -> Vec<ProgressEvent> {
    let events = vec![
        reg(
            "def",
            "[internal] load build definition from Dockerfile",
            &[],
        ),
        reg(
            "meta",
            "[internal] load metadata for 127.0.0.1:5000/library/busybox:latest",
            &[],
        ),
        reg(
            "from",
            "[build 1/4] FROM 127.0.0.1:5000/library/busybox:latest",
            &["meta"],
        ),
        reg("copy", "[build 2/4] COPY . /src", &["from"]),
        reg(
            "run",
            "[build 3/4] RUN echo hello && echo oops >&2",
            &["copy"],
        ),
        reg("other", "[stage-1 1/1] RUN exit 3", &["from"]),
        reg("make", "[build 4/4] RUN make", &["run"]),
        ev("def", 0, EventKind::Started),
        status("def", 0, "transferring dockerfile", 0, None, false),
        status("def", 10, "transferring dockerfile", 120, None, true),
        ev(
            "def",
            15,
            EventKind::Warning(Warning {
                level: 1,
                short: "JSONArgsRecommended: JSON arguments recommended for CMD (line 9)".into(),
                detail: vec!["Use JSON arguments to avoid signal problems".into()],
                url: Some(
                    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/".into(),
                ),
                location: Some(WarningLocation {
                    file: "Dockerfile".into(),
                    ranges: vec![SourceRange {
                        start_line: 9,
                        start_column: 1,
                        end_line: 9,
                        end_column: 20,
                    }],
                }),
            }),
        ),
        ev("def", 20, EventKind::Completed),
        ev("meta", 20, EventKind::Started),
        ev("meta", 250, EventKind::Completed),
        ev("from", 260, EventKind::Started),
        status("from", 300, LAYER, 1_050_000, Some(2_100_000), false),
        status("from", 500, LAYER, 1_500_000, Some(2_100_000), false),
        status("from", 1400, LAYER, 2_000_000, Some(2_100_000), false),
        status("from", 1500, LAYER, 2_100_000, Some(2_100_000), true),
        ev("from", 1600, EventKind::Completed),
        ev("copy", 1600, EventKind::Started),
        ev("copy", 1600, EventKind::Cached),
        ev("run", 1610, EventKind::Started),
        log("run", 1700, LogStream::Stdout, b"hello\n"),
        ev("other", 1720, EventKind::Started),
        log("run", 1750, LogStream::Stderr, b"oops\n"),
        log(
            "other",
            1800,
            LogStream::Stdout,
            b"line 1\nline 2\nno newline",
        ),
        ev("run", 1900, EventKind::Completed),
        ev(
            "other",
            2100,
            EventKind::Errored {
                message:
                    "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
                        .into(),
            },
        ),
        ev("make", 2100, EventKind::Canceled),
    ];
    events
        .into_iter()
        .filter(|e| e.at <= at(until_ms))
        .collect()
}

const MANIFEST: &str = "sha256:e943dbfec03cfca71ab14e451e96383305c28f64ef9763a14f21c38a30f53bcf";
const CONFIG: &str = "sha256:e4b991d5d984396f0bd3bc12d6d670238aad53046cb07a28b4ef97a516503fe0";

/// A successful build whose image is exported and pushed as the last step,
/// with the phases buildx shows (`exporting layers` … `pushing manifest for`).
fn export_build() -> Vec<ProgressEvent> {
    let name = "127.0.0.1:5000/app:1";
    vec![
        reg("run", "[stage-0 2/2] RUN make", &[]),
        reg("export", "exporting to image", &[]),
        ev("run", 0, EventKind::Started),
        ev("run", 400, EventKind::Completed),
        ev("export", 410, EventKind::Started),
        status("export", 410, "exporting layers", 0, None, false),
        status("export", 650, "exporting layers", 0, None, true),
        status(
            "export",
            660,
            &format!("exporting manifest {MANIFEST}"),
            0,
            None,
            true,
        ),
        status(
            "export",
            660,
            &format!("exporting config {CONFIG}"),
            0,
            None,
            true,
        ),
        status("export", 670, &format!("naming to {name}"), 0, None, true),
        status("export", 680, "pushing layers", 0, None, false),
        status(
            "export",
            900,
            "pushing layers",
            1_200_000,
            Some(3_400_000),
            false,
        ),
        status(
            "export",
            1900,
            "pushing layers",
            3_400_000,
            Some(3_400_000),
            false,
        ),
        status(
            "export",
            2000,
            "pushing layers",
            3_400_000,
            Some(3_400_000),
            true,
        ),
        status(
            "export",
            2050,
            &format!("pushing manifest for {name}@{MANIFEST}"),
            0,
            None,
            true,
        ),
        ev("export", 2060, EventKind::Completed),
    ]
}

#[test]
fn export_steps_golden() {
    let events = export_build();
    assert_golden("export.plain.txt", &plain_output(&events));
    assert_golden("export.rawjson.jsonl", &rawjson_output(&events));
    let mut state = BuildState::default();
    for e in &events {
        state.apply(e);
    }
    let frame = render_frame(&state, at(2100), 100, None, true);
    assert_golden("export.tty-final.txt", &(frame.join("\n") + "\n"));
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/progress/testdata")
        .join(name)
}

fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, actual).ok();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from the golden file (KILN_BLESS=1 to update)"
    );
}

fn plain_output(events: &[ProgressEvent]) -> String {
    let mut p = PlainPrinter::new(Vec::new());
    for e in events {
        assert!(p.event(e).is_ok());
    }
    assert!(p.finish().is_ok());
    String::from_utf8_lossy(&p.into_inner()).into_owned()
}

#[test]
fn plain_golden() {
    assert_golden("build.plain.txt", &plain_output(&scripted_build(u64::MAX)));
}

#[test]
fn plain_prints_every_log_line_unclipped() {
    let long = "x".repeat(10_000);
    let mut events = vec![
        reg("v", "[build 1/1] RUN spam", &[]),
        ev("v", 0, EventKind::Started),
    ];
    for i in 0..2000u64 {
        events.push(log(
            "v",
            i,
            LogStream::Stdout,
            format!("{i} {long}\n").as_bytes(),
        ));
    }
    events.push(ev(
        "v",
        3000,
        EventKind::Errored {
            message: "exit code: 1".into(),
        },
    ));
    let out = plain_output(&events);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 2000 + 1);
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("#1 0.000 0 {long}").as_str())
    );
    assert_eq!(
        lines.get(2000).copied(),
        Some(format!("#1 1.999 1999 {long}").as_str())
    );
    assert_eq!(lines.last().copied(), Some("#1 ERROR: exit code: 1"));
}

#[test]
fn plain_keeps_raw_bytes() {
    let events = vec![
        reg("v", "bin", &[]),
        ev("v", 0, EventKind::Started),
        log("v", 1, LogStream::Stdout, b"\xff\xfe raw\n"),
    ];
    let mut p = PlainPrinter::new(Vec::new());
    for e in &events {
        assert!(p.event(e).is_ok());
    }
    let out = p.into_inner();
    assert!(out.windows(6).any(|w| w == b"\xff\xfe raw"));
}

fn rawjson_output(events: &[ProgressEvent]) -> String {
    let mut p = RawJsonPrinter::new(Vec::new());
    for e in events {
        assert!(p.event(e).is_ok());
    }
    assert!(p.finish().is_ok());
    String::from_utf8_lossy(&p.into_inner()).into_owned()
}

#[test]
fn rawjson_golden() {
    assert_golden(
        "build.rawjson.jsonl",
        &rawjson_output(&scripted_build(u64::MAX)),
    );
}

#[test]
fn rawjson_lines_are_solve_status_objects() {
    let out = rawjson_output(&scripted_build(u64::MAX));
    let mut saw_log = false;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let obj = v.as_object().cloned().unwrap_or_default();
        assert_eq!(obj.len(), 1, "one list per event: {line}");
        if let Some(logs) = obj.get("logs") {
            let data = logs
                .get(0)
                .and_then(|l| l.get("data"))
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default();
            if bytes == b"hello\n" {
                saw_log = true;
                assert_eq!(
                    logs.get(0).and_then(|l| l.get("stream")),
                    Some(&serde_json::json!(1))
                );
            }
        }
    }
    assert!(saw_log);
}

fn state_until(ms: u64) -> BuildState {
    let mut s = BuildState::default();
    for e in scripted_build(ms) {
        s.apply(&e);
    }
    s
}

#[test]
fn tty_frame_while_running() {
    let frame = render_frame(&state_until(1850), at(1850), 100, None, false);
    assert_golden("build.tty-running.txt", &(frame.join("\n") + "\n"));
}

#[test]
fn tty_final_frame() {
    let frame = render_frame(&state_until(u64::MAX), at(5000), 100, None, true);
    assert_golden("build.tty-final.txt", &(frame.join("\n") + "\n"));
}

#[test]
fn tty_frame_fits_width_and_height() {
    let s = state_until(1850);
    let frame = render_frame(&s, at(1850), 40, Some(8), false);
    assert!(frame.len() <= 8, "{frame:#?}");
    assert!(
        frame.iter().all(|l| console::measure_text_width(l) <= 40),
        "{frame:#?}"
    );
    assert_eq!(
        frame.first().map(String::as_str),
        Some("[+] Building 1.9s (4/7)")
    );
    // Ended vertices go first; the running ones stay.
    assert!(
        frame.iter().any(|l| l.contains("[build 3/4]")),
        "{frame:#?}"
    );
    assert!(
        frame.iter().any(|l| l.contains("[stage-1 1/1]")),
        "{frame:#?}"
    );
    assert!(
        !frame.iter().any(|l| l.contains("[internal]")),
        "{frame:#?}"
    );
}

#[test]
fn tty_shows_only_the_last_six_log_lines() {
    let mut events = vec![
        reg("v", "[a 1/1] RUN seq 20", &[]),
        ev("v", 0, EventKind::Started),
    ];
    for i in 1..=20u64 {
        events.push(log("v", i, LogStream::Stdout, format!("{i}\n").as_bytes()));
    }
    let mut s = BuildState::default();
    for e in &events {
        s.apply(e);
    }
    let frame = render_frame(&s, at(1000), 60, None, false);
    let logs: Vec<&str> = frame
        .iter()
        .filter_map(|l| l.strip_prefix(" => => # "))
        .collect();
    assert_eq!(logs, ["15", "16", "17", "18", "19", "20"]);
    assert_eq!(
        frame.get(1).map(String::as_str),
        Some(format!(" => [a 1/1] RUN seq 20{}1.0s", " ".repeat(60 - 22 - 4)).as_str())
    );
}

/// A `Write` that appends to a shared buffer, for reading a display thread's output.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

fn run_display(mode: ProgressMode) -> (String, super::BuildSummary) {
    let (tx, rx) = channel();
    let buf = SharedBuf::default();
    let display = ProgressDisplay::start_with_writer(mode, rx, Box::new(buf.clone()));
    let senders: Vec<_> = (0..2).map(|_| tx.clone()).collect();
    drop(tx);
    let script = scripted_build(u64::MAX);
    let producer = std::thread::spawn(move || {
        for e in script {
            if let Some(s) = senders.first() {
                s.send(e);
            }
        }
    });
    assert!(producer.join().is_ok());
    let summary = display.finish();
    assert!(
        summary.display_error.is_none(),
        "{:?}",
        summary.display_error
    );
    (buf.text(), summary)
}

/// The failure and warning every display reports for the scripted build.
fn assert_scripted_summary(summary: &super::BuildSummary) {
    let failed: Vec<String> = summary.failed.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        failed,
        ["------\n > [stage-1 1/1] RUN exit 3:\nline 1\nline 2\nno newline\n------"]
    );
    assert_eq!(
        summary.failed.first().map(|f| f.message.as_str()),
        Some("process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3")
    );
    assert_eq!(summary.warnings.len(), 1);
}

#[test]
fn display_thread_drains_until_senders_close() {
    let plain = plain_output(&scripted_build(u64::MAX));
    let rawjson = rawjson_output(&scripted_build(u64::MAX));
    // Without a terminal, auto and tty print plain.
    for (mode, expected) in [
        (ProgressMode::Plain, plain.as_str()),
        (ProgressMode::Rawjson, rawjson.as_str()),
        (ProgressMode::Quiet, ""),
        (ProgressMode::Auto, plain.as_str()),
        (ProgressMode::Tty, plain.as_str()),
    ] {
        let (out, summary) = run_display(mode);
        assert_eq!(out, expected, "{mode:?}");
        assert_scripted_summary(&summary);
    }
}

#[test]
fn mode_resolution_and_parsing() {
    use clap::ValueEnum;
    assert_eq!(ProgressMode::Auto.resolve(true), ProgressMode::Tty);
    assert_eq!(ProgressMode::Auto.resolve(false), ProgressMode::Plain);
    assert_eq!(ProgressMode::Tty.resolve(false), ProgressMode::Plain);
    assert_eq!(ProgressMode::Rawjson.resolve(true), ProgressMode::Rawjson);
    assert_eq!(
        ProgressMode::from_str("none", true),
        Ok(ProgressMode::Quiet)
    );
    assert_eq!(
        ProgressMode::from_str("rawjson", true),
        Ok(ProgressMode::Rawjson)
    );
    assert!(ProgressMode::from_str("fancy", true).is_err());
}

/// A terminal that records what is written to it.
#[derive(Debug, Clone, Default)]
struct RecordingTerm(Arc<Mutex<Vec<String>>>);

impl RecordingTerm {
    fn record(&self, op: String) -> std::io::Result<()> {
        if let Ok(mut v) = self.0.lock() {
            v.push(op);
        }
        Ok(())
    }
    fn ops(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl indicatif::TermLike for RecordingTerm {
    fn width(&self) -> u16 {
        100
    }
    fn height(&self) -> u16 {
        40
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.record(format!("<up {n}>"))
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.record(format!("<down {n}>"))
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.record(format!("<right {n}>"))
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.record(format!("<left {n}>"))
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.record(format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.record(s.to_string())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.record("<clear>".into())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tty_display_draws_live_then_leaves_the_final_frame() {
    let (tx, rx) = channel();
    let term = RecordingTerm::default();
    let t = term.clone();
    let feed = super::feed::Feed::new(rx, Arc::default());
    let display =
        std::thread::spawn(move || super::tty::run_on(feed, t, &super::colors::Palette::none()));
    for e in scripted_build(u64::MAX) {
        tx.send(e);
    }
    drop(tx);
    let summary = display.join();
    assert!(summary.as_ref().is_ok_and(|s| s.display_error.is_none()));
    if let Ok(summary) = &summary {
        assert_scripted_summary(summary);
    }
    let ops = term.ops();
    // The last lines written are the final frame and the warning summary, as plain lines.
    let expected_final =
        std::fs::read_to_string(golden_path("build.tty-final.txt")).unwrap_or_default();
    let mut expected: Vec<String> = expected_final.lines().map(|l| format!("{l}\n")).collect();
    expected.extend(
        [
            "",
            " 1 warning found (use kiln build --check to expand):",
            " - JSONArgsRecommended: JSON arguments recommended for CMD (line 9)",
        ]
        .iter()
        .map(|l| format!("{l}\n")),
    );
    let tail = ops
        .get(ops.len().saturating_sub(expected.len())..)
        .unwrap_or_default();
    // The header's elapsed time runs to the wall clock at finish; the rest is scripted.
    let header = tail.first().cloned().unwrap_or_default();
    assert!(
        header.starts_with("[+] Building ") && header.ends_with("s (7/7) ERROR\n"),
        "{header:?}"
    );
    assert_eq!(tail.get(1..), expected.get(1..));
    // Before that, indicatif drew at least one live frame and cleared it again.
    let before = ops
        .get(..ops.len().saturating_sub(expected.len()))
        .unwrap_or_default();
    assert!(
        before.iter().any(|op| op.starts_with("[+] Building")),
        "{before:#?}"
    );
    let final_header = |l: &str| l.starts_with("[+]") && l.ends_with(" ERROR");
    assert!(
        !before.iter().any(|op| op.lines().any(final_header)),
        "{before:#?}"
    );
}

#[test]
fn finish_does_not_wait_for_lingering_senders() {
    for mode in [
        ProgressMode::Plain,
        ProgressMode::Rawjson,
        ProgressMode::Quiet,
    ] {
        let (tx, rx) = channel();
        let buf = SharedBuf::default();
        let display = ProgressDisplay::start_with_writer(mode, rx, Box::new(buf.clone()));
        let lingering = tx.clone();
        for e in scripted_build(u64::MAX) {
            tx.send(e);
        }
        drop(tx);
        // `lingering` is still alive (like a worker kept for exporting): finish must return
        // with everything sent so far printed.
        let summary = display.finish();
        assert_scripted_summary(&summary);
        let expected = match mode {
            ProgressMode::Plain => plain_output(&scripted_build(u64::MAX)),
            ProgressMode::Rawjson => rawjson_output(&scripted_build(u64::MAX)),
            _ => String::new(),
        };
        assert_eq!(buf.text(), expected, "{mode:?}");
        // Later events are dropped without error.
        lingering.handle(d("late")).start();
    }
}

#[test]
fn a_stopped_feed_drains_then_ends_while_senders_live() {
    use super::feed::{Feed, Next};
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let feed = Feed::new(rx, Arc::clone(&stop));
    assert!(matches!(feed.next(Duration::from_millis(1)), Next::Idle));
    tx.handle(d("a")).start();
    tx.handle(d("a")).done();
    stop.store(true, Ordering::Release);
    assert!(matches!(feed.next(Duration::ZERO), Next::Event(_)));
    assert!(matches!(feed.next(Duration::ZERO), Next::Event(_)));
    assert!(matches!(feed.next(Duration::from_secs(5)), Next::End));
    drop(tx);
}

#[test]
fn tty_final_frame_is_coloured_like_buildkit() {
    let (tx, rx) = channel();
    let term = RecordingTerm::default();
    let t = term.clone();
    let feed = super::feed::Feed::new(rx, Arc::default());
    let palette = super::colors::Palette::buildkit();
    let display = std::thread::spawn(move || super::tty::run_on(feed, t, &palette));
    for e in scripted_build(u64::MAX) {
        tx.send(e);
    }
    drop(tx);
    assert!(display.join().is_ok());
    let ops = term.ops();
    let find = |needle: &str| {
        ops.iter()
            .rev()
            .find(|op| op.contains(needle))
            .cloned()
            .unwrap_or_default()
    };
    assert!(find("ERROR [stage-1 1/1]").starts_with("\x1b[31m => ERROR"));
    assert!(find("CACHED [build 2/4]").starts_with("\x1b[34m => CACHED"));
    assert!(find("CANCELED [build 4/4]").starts_with("\x1b[33m"));
    assert!(find(" 1 warning found").starts_with("\x1b[33m"));
    assert!(find("(7/7) ERROR").starts_with("\x1b[31m[+] Building"));
}
