//! Build checks (`kiln build --check`): BuildKit's lint rules over the AST and the resolved stages.

mod build;
pub mod render;
pub mod rules;
mod stage;

use crate::directives::CheckConfig;
use crate::error::{ErrorKind, Location, SourceError};
use crate::parser::{Ast, Node};
use crate::stages::{self, Build, ResolveOptions};
use rules::Rule;

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// Rule name.
    pub rule_name: String,
    /// Rule description.
    pub description: String,
    /// Rule documentation URL.
    pub url: String,
    /// The message for this occurrence.
    pub detail: String,
    /// Where (line range in `location.line..=location.end_line`).
    pub location: Location,
}

/// Inputs of a check run.
pub struct CheckOptions<'a> {
    /// Build args, target and platforms, as for a build.
    pub resolve: ResolveOptions,
    /// Tells whether a context path is excluded by `.dockerignore` (for CopyIgnoredFile).
    pub ignored: Option<&'a dyn Fn(&str) -> bool>,
}

/// The outcome of a check run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// Violations in file order.
    pub warnings: Vec<Warning>,
    /// The check configuration in effect.
    #[serde(skip)]
    pub config: CheckConfig,
    /// True when `error=true` is configured and a rule fired: the check fails.
    pub failed: bool,
}

impl CheckReport {
    /// BuildKit's error text for a failing check.
    pub fn failure_message(&self) -> Option<String> {
        if !self.failed {
            return None;
        }
        let mut names: Vec<&str> = self.warnings.iter().map(|w| w.rule_name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        Some(format!(
            "lint violation found for rules: {}",
            names.join(", ")
        ))
    }
}

struct Linter<'a> {
    ast: &'a Ast,
    config: CheckConfig,
    warnings: Vec<Warning>,
}

impl Linter<'_> {
    fn enabled(&self, rule: &Rule) -> bool {
        if self.config.is_skipped(rule.name) {
            return false;
        }
        !rule.experimental
            || self.config.experimental_all
            || self.config.experimental.iter().any(|r| r == rule.name)
    }

    fn report(&mut self, rule: &Rule, node: &Node, detail: String) {
        if !self.enabled(rule) || skipped_by_comment(node, rule.name) {
            return;
        }
        let loc = Location::new(
            self.ast.file.clone(),
            node.span.start_line,
            node.span.column,
            0,
        )
        .with_end_line(node.span.end_line);
        self.push(rule, loc, detail);
    }

    fn report_line(&mut self, rule: &Rule, line: usize, detail: String) {
        if !self.enabled(rule) {
            return;
        }
        self.push(
            rule,
            Location::new(self.ast.file.clone(), line, 1, 0),
            detail,
        );
    }

    fn push(&mut self, rule: &Rule, location: Location, detail: String) {
        let w = Warning {
            rule_name: rule.name.into(),
            description: rule.description.into(),
            url: rule.url.into(),
            detail,
            location,
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

/// `# check=skip=A,B` in the comment right above an instruction skips those rules for it.
fn skipped_by_comment(node: &Node, rule: &str) -> bool {
    node.prev_comment.iter().any(|c| {
        let c = c.trim();
        let Some(v) = c.strip_prefix("check=") else {
            return false;
        };
        CheckConfig::parse(v).is_ok_and(|cfg| cfg.is_skipped(rule))
    })
}

/// The check configuration: the `# check=` directive, overridden by the
/// `BUILDKIT_DOCKERFILE_CHECK` build arg.
pub fn check_config(ast: &Ast, opts: &ResolveOptions) -> Result<CheckConfig, SourceError> {
    let bad = |line: usize, e: String| {
        SourceError::new(
            ErrorKind::Directive,
            e,
            Location::new(ast.file.clone(), line, 1, 0),
        )
        .with_hint("write # check=skip=<rules|all>;error=<true|false>")
    };
    if let Some(v) = opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        return CheckConfig::parse(v)
            .map_err(|e| bad(1, format!("invalid BUILDKIT_DOCKERFILE_CHECK: {e}")));
    }
    match ast.directives.check_config() {
        None => Ok(CheckConfig::default()),
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => {
            let line = ast.directives.check.as_ref().map_or(1, |d| d.line);
            Err(bad(line, e.to_string()))
        }
    }
}

/// Runs every enabled rule. Resolution errors (bad flags, unknown target, ...) are returned as errors.
pub fn check(ast: &Ast, opts: &CheckOptions) -> Result<CheckReport, SourceError> {
    let config = check_config(ast, &opts.resolve)?;
    let resolve_opts = ResolveOptions {
        all_stages: true,
        ..opts.resolve.clone()
    };
    let build = stages::resolve(ast, &resolve_opts)?;
    let mut l = Linter {
        ast,
        config,
        warnings: Vec::new(),
    };
    if !l.config.skip_all {
        syntax_rules(&mut l);
        stage_rules(&mut l, &build, opts);
    }
    let mut warnings = l.warnings;
    warnings.sort_by_key(|w| (w.location.line, w.location.column));
    let failed = l.config.error && !warnings.is_empty();
    Ok(CheckReport {
        warnings,
        config: l.config,
        failed,
    })
}

/// Rules that only need the AST.
fn syntax_rules(l: &mut Linter) {
    let ast = l.ast;
    for w in &ast.warnings {
        if w.rule == rules::NO_EMPTY_CONTINUATION.name {
            l.report_line(
                &rules::NO_EMPTY_CONTINUATION,
                w.line,
                "Empty continuation line".into(),
            );
        }
    }
    // ConsistentInstructionCasing: compare each keyword with the majority casing.
    let is_upper = |k: &str| k == k.to_uppercase();
    let is_lower = |k: &str| k == k.to_lowercase();
    let nodes: Vec<&Node> = ast.children.iter().collect();
    let upper = nodes.iter().filter(|n| is_upper(&n.keyword)).count();
    let lower = nodes.iter().filter(|n| is_lower(&n.keyword)).count();
    let majority_lower = lower > upper;
    for n in &nodes {
        let wrong = if majority_lower {
            !is_lower(&n.keyword)
        } else {
            !is_upper(&n.keyword)
        };
        if wrong {
            let casing = if majority_lower {
                "lowercase"
            } else {
                "uppercase"
            };
            l.report(
                &rules::CONSISTENT_INSTRUCTION_CASING,
                n,
                format!(
                    "Command '{}' should match the case of the command majority ({casing})",
                    n.keyword
                ),
            );
        }
    }
    for n in &nodes {
        match n.value.as_str() {
            "maintainer" => l.report(
                &rules::MAINTAINER_DEPRECATED,
                n,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            "env" | "label" if n.key_values().any(|(_, _, sep)| sep.is_empty()) => {
                let name = n.value.to_uppercase();
                l.report(
                    &rules::LEGACY_KEY_VALUE_FORMAT,
                    n,
                    format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                )
            }
            _ => {}
        }
    }
}

/// BuildKit's sensitive-name test: a `_`-separated word of the name is a secret-ish word, and
/// none is `public`.
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let parts: Vec<String> = name.split('_').map(str::to_lowercase).collect();
    parts.iter().any(|p| WORDS.contains(&p.as_str())) && !parts.iter().any(|p| p == "public")
}

/// Rules over the resolved stages.
fn stage_rules(l: &mut Linter, build: &Build, opts: &CheckOptions) {
    stage::resolution_rules(l, build);
    let mut walk = stage::StageWalk::default();
    for st in &build.stages {
        walk.stage(l, st, opts);
    }
}

fn is_windows_abs(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// A COPY source as a path relative to the context root (leading `/` and `./` removed).
fn clean_context_path(src: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in src.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}
