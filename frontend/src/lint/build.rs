//! The checks a build reports: BuildKit runs the rules about instructions
//! only while dispatching the stages the target needs; those about FROM
//! lines, global ARGs and the Dockerfile's text fire for every stage.

use super::{rules, CheckReport, Warning};
use crate::parser::Ast;
use crate::stages::Build;

/// Rules about instructions that BuildKit checks while parsing, so for
/// every stage (rules about FROM lines and global ARGs are kept anyway).
const EVERY_STAGE: [&str; 3] = [
    rules::NO_EMPTY_CONTINUATION.name,
    rules::CONSISTENT_INSTRUCTION_CASING.name,
    rules::MAINTAINER_DEPRECATED.name,
];

impl Warning {
    /// The one-line form BuildKit sends with a build (`Rule: message (line N)`).
    pub fn short(&self) -> String {
        format!(
            "{}: {} (line {})",
            self.rule_name, self.detail, self.location.line
        )
    }
}

impl CheckReport {
    /// The report as a build of `build`'s target shows it: warnings about
    /// instructions of stages the target does not need are dropped, except
    /// for the rules BuildKit checks everywhere.
    pub fn for_build(mut self, ast: &Ast, build: &Build) -> CheckReport {
        // The lines of each unneeded stage's instructions (after its FROM line).
        let skipped: Vec<(usize, usize)> = build
            .stages
            .iter()
            .filter(|s| !build.needed.contains(&s.index))
            .filter_map(|s| {
                let first = s.instructions.first()?;
                let last = s.instructions.last()?;
                let end = ast.children.get(last.node)?.span.end_line;
                Some((first.span.start_line, end))
            })
            .collect();
        self.warnings.retain(|w| {
            EVERY_STAGE.contains(&w.rule_name.as_str())
                || !skipped
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&w.location.line))
        });
        self.failed = self.config.error && !self.warnings.is_empty();
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::lint::{check, CheckOptions};
    use crate::stages::{resolve, ResolveOptions};

    #[test]
    fn a_build_reports_the_checks_of_the_stages_it_needs() {
        let src =
            "FROM scratch AS Unused\nCMD echo unused\n\nFROM scratch AS used\nCMD echo used\n";
        let ast = crate::parse_named("Dockerfile", src.as_bytes()).unwrap();
        let resolve_opts = ResolveOptions {
            target: Some("used".into()),
            ..Default::default()
        };
        let report = check(
            &ast,
            &CheckOptions {
                resolve: resolve_opts.clone(),
                ignored: None,
            },
        )
        .unwrap();
        assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
        let build = resolve(&ast, &resolve_opts).unwrap();
        let shorts: Vec<String> = report
            .for_build(&ast, &build)
            .warnings
            .iter()
            .map(|w| w.short())
            .collect();
        assert_eq!(
            shorts,
            [
                "StageNameCasing: Stage name 'Unused' should be lowercase (line 1)",
                "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 5)",
            ]
        );
    }
}
