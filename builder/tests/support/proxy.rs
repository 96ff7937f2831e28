//! The fault-injecting registry proxy of `testdata/faults/proxy.py`, started per test
//! in front of the test env's plain registry, and a bounded runner for `kiln`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One proxy process; it exits when dropped (its stdin closes).
pub struct FaultProxy {
    child: Child,
    _stdin: ChildStdin,
    addr: String,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`host:port`) on an ephemeral port.
    pub fn start(upstream: &str) -> FaultProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/faults/proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--upstream", upstream])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fault proxy");
        let stdin = child.stdin.take().expect("proxy stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("proxy stdout"))
            .read_line(&mut line)
            .expect("proxy says where it listens");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("proxy said {line:?}"))
            .to_string();
        FaultProxy {
            child,
            _stdin: stdin,
            addr,
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets the fault: `mode` on the next `times` requests (-1: all) that `what` matches.
    pub fn set(&self, mode: &str, times: i32, what: &str) {
        let reply = self.control("POST", &format!("mode={mode}&times={times}&match={what}"));
        assert_eq!(reply, "ok", "proxy control");
    }

    /// How many requests got the fault since it was set.
    pub fn injected(&self) -> u64 {
        let reply = self.control("GET", "");
        reply
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("proxy state {reply:?}"))
    }

    fn control(&self, method: &str, query: &str) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the proxy");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} /__fault?{query} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("proxy control reply");
        resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end, panicking (after killing it) when it outlives `limit`: a hang
/// is a failure of its own, never a stuck test run.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("output dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} hung for {limit:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}
