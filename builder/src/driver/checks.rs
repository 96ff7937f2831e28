//! Build checks during `kiln build`, as buildx shows them: BuildKit's lint
//! rules run on the Dockerfile, their warnings are attached to the
//! `[internal] load build definition` step (the display lists them after the
//! build), and `# check=error=true` fails the build before anything runs.

use crate::context::BuildContext;
use kiln_frontend::lint::{self, CheckOptions, CheckReport};
use kiln_frontend::parser::Ast;
use kiln_frontend::stages::{Build, ResolveOptions};
use kiln_solver::progress::{
    synthetic_digest, ProgressSender, SourceRange, Warning, WarningLocation,
};

/// The checks of one build.
pub struct BuildChecks {
    report: Option<CheckReport>,
}

impl BuildChecks {
    /// Runs the checks for `build` (resolved with `resolve`). A Dockerfile the
    /// checks cannot resolve gets none: the build reports its own errors.
    pub fn run(
        ast: &Ast,
        ctx: &BuildContext,
        resolve: &ResolveOptions,
        build: &Build,
    ) -> BuildChecks {
        let is_ignored = |p: &str| ctx.ignore.excludes(p);
        let report = lint::check(
            ast,
            &CheckOptions {
                resolve: resolve.clone(),
                ignored: Some(&is_ignored),
            },
        )
        .ok()
        .map(|r| r.for_build(ast, build));
        BuildChecks { report }
    }

    /// Sends the warnings to the display, attached to the step that loads `dockerfile`.
    pub fn report(&self, tx: &ProgressSender, dockerfile: &str) {
        let Some(report) = self.report.as_ref().filter(|r| !r.warnings.is_empty()) else {
            return;
        };
        let name = format!("[internal] load build definition from {dockerfile}");
        let step = tx.vertex(synthetic_digest(&name), name);
        step.start();
        for w in &report.warnings {
            step.warn(progress_warning(w));
        }
        step.done();
    }

    /// BuildKit's error when `error=true` and a check fired.
    pub fn failure(&self) -> Option<miette::Report> {
        let message = self.report.as_ref()?.failure_message()?;
        Some(miette::miette!(
            help = "fix the warnings above (kiln build --check explains each), or skip rules with # check=skip=<rules>",
            "{message}"
        ))
    }
}

/// A check warning as the progress display carries it (BuildKit's `VertexWarning`).
fn progress_warning(w: &lint::Warning) -> Warning {
    let line = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Warning {
        level: 1,
        short: w.short(),
        detail: vec![w.description.clone()],
        url: (!w.url.is_empty()).then(|| w.url.clone()),
        location: Some(WarningLocation {
            file: w.location.file.clone(),
            ranges: vec![SourceRange {
                start_line: line(w.location.line),
                start_column: 0,
                end_line: line(w.location.end_line),
                end_column: 0,
            }],
        }),
    }
}
