//! Per-case counts of the fault tests for `bench/faults.sh`. Each case runs caught, so one
//! bad case fails only itself (the test still fails at its end, listing every bad case).
//! With `KILN_FAULTS_REPORT` set, a test appends `plan CLASS N` to that file when it
//! starts and `done CLASS TRIED SURVIVED FAILED HANGS ABORTS` when it ends (also when it
//! dies between cases); unset, nothing is written.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The cases of one test in one class of the bench's table.
pub struct Tally {
    class: &'static str,
    tried: usize,
    survived: usize,
    hangs: usize,
    aborts: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Starts counting `planned` cases of `class` (what a run that dies early failed).
    pub fn new(class: &'static str, planned: usize) -> Tally {
        append(&format!("plan {class} {planned}"));
        Tally {
            class,
            tried: 0,
            survived: 0,
            hangs: 0,
            aborts: 0,
            failures: Vec::new(),
        }
    }

    /// Runs one case; a panic in it (a failed assertion) counts it as failed, and is
    /// classed as a hang (`run_bounded` gave up on kiln) or an abort (kiln panicked or
    /// died of SIGABRT) from its message.
    pub fn case<R>(&mut self, label: &str, f: impl FnOnce() -> R) -> Option<R> {
        self.tried += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => {
                self.survived += 1;
                Some(r)
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if msg.contains("hung for") {
                    self.hangs += 1;
                }
                if ["panicked at", "SIGABRT", "unix_wait_status(134)"]
                    .iter()
                    .any(|s| msg.contains(s))
                {
                    self.aborts += 1;
                }
                self.failures.push(format!("{label}: {msg}"));
                None
            }
        }
    }

    /// Ends the test: fails it when any case failed, naming them all.
    pub fn finish(self) {
        let failures = self.failures.join("\n---\n");
        let n = self.failures.len();
        let tried = self.tried;
        drop(self);
        assert!(n == 0, "{n} of {tried} cases failed:\n{failures}");
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        append(&format!(
            "done {} {} {} {} {} {}",
            self.class,
            self.tried,
            self.survived,
            self.failures.len(),
            self.hangs,
            self.aborts
        ));
    }
}

/// Appends one line to `$KILN_FAULTS_REPORT` when it is set (one write: tests of the same
/// binary run on parallel threads). Never panics (it runs in `drop` while unwinding); a
/// line lost leaves its cases uncounted, which the bench counts as failed.
fn append(line: &str) {
    let Ok(path) = std::env::var("KILN_FAULTS_REPORT") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("fault report {path}: {e}");
    }
}
