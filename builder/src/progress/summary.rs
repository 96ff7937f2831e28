//! What a display hands back to the CLI when the build ends: failed vertices with their last
//! log lines (for buildx's `------ > [stage 2/3] RUN …:` error block) and the warnings.
//! Collected in every mode, `quiet` included, so errors always reach the user.

use std::fmt;
use std::io;

use kiln_solver::llb::VertexDigest;
use kiln_solver::progress::Warning;

use super::state::{BuildState, Outcome, KEPT_LINES};

/// The outcome of a build as the display saw it.
#[derive(Debug, Default)]
pub struct BuildSummary {
    /// Vertices that failed, in the order they were first seen.
    pub failed: Vec<FailedVertex>,
    /// Every warning, in arrival order.
    pub warnings: Vec<Warning>,
    /// Writing the progress output failed (e.g. stderr closed); the build itself is unaffected.
    pub display_error: Option<io::Error>,
}

/// A vertex that ended with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedVertex {
    /// The vertex (to find its Dockerfile location in the definition).
    pub digest: VertexDigest,
    /// Display name (`[build 3/4] RUN make`).
    pub name: String,
    /// The error message.
    pub message: String,
    /// Its last log lines (at most [`KEPT_LINES`]), sanitized.
    pub log_tail: Vec<String>,
}

impl BuildSummary {
    /// Collects the summary from a folded build state.
    pub fn from_state(state: &BuildState) -> Self {
        let failed = state
            .vertices()
            .filter_map(|v| match &v.outcome {
                Some(Outcome::Error(message)) => Some(FailedVertex {
                    digest: v.digest,
                    name: v.name.clone(),
                    message: message.clone(),
                    log_tail: v.recent_lines(KEPT_LINES),
                }),
                _ => None,
            })
            .collect();
        BuildSummary {
            failed,
            warnings: state.warnings.iter().map(|(_, w)| w.clone()).collect(),
            display_error: None,
        }
    }
}

/// buildx's error block:
///
/// ```text
/// ------
///  > [build 3/4] RUN make:
/// last log lines
/// ------
/// ```
impl fmt::Display for FailedVertex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "------")?;
        writeln!(f, " > {}:", self.name)?;
        for line in &self.log_tail {
            writeln!(f, "{line}")?;
        }
        write!(f, "------")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::progress::{synthetic_digest, EventKind, LogStream, ProgressEvent};
    use std::time::UNIX_EPOCH;

    #[test]
    fn collects_failures_with_their_last_lines() {
        let mut s = BuildState::default();
        let v = synthetic_digest("v");
        let mut apply = |kind| {
            s.apply(&ProgressEvent {
                vertex: v,
                at: UNIX_EPOCH,
                kind,
            })
        };
        apply(EventKind::Registered {
            name: "[build 3/4] RUN make".into(),
            inputs: vec![],
        });
        apply(EventKind::Started);
        let text: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        apply(EventKind::Log {
            stream: LogStream::Stderr,
            data: text.into_bytes(),
        });
        apply(EventKind::Errored {
            message: "exit code: 2".into(),
        });
        let summary = BuildSummary::from_state(&s);
        assert_eq!(summary.failed.len(), 1);
        assert_eq!(summary.failed.first().map(|f| f.digest), Some(v));
        let block = summary.failed.first().map(|f| f.to_string());
        let expected: String = std::iter::once("------\n > [build 3/4] RUN make:\n".to_string())
            .chain((6..=15).map(|i| format!("line {i}\n")))
            .chain(std::iter::once("------".to_string()))
            .collect();
        assert_eq!(block, Some(expected));
        assert_eq!(
            summary.failed.first().map(|f| f.message.as_str()),
            Some("exit code: 2")
        );
    }
}
