//! Build checks (`kiln build --check`): BuildKit's lint rules over the AST and the resolved stages.

mod build;
pub mod render;
pub mod rules;

use crate::directives::CheckConfig;
use crate::error::{ErrorKind, Location, SourceError};
use crate::instructions::{CommandLine, Instruction};
use crate::parser::{Ast, Node};
use crate::stages::{self, Base, Build, ResolveOptions};
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
    let ast = l.ast;
    let node = |i: usize| ast.children.get(i);

    for v in &build.undefined_in_from {
        if let Some(n) = node(v.node) {
            let mut msg = format!("FROM argument '{}' is not declared", v.name);
            if let Some(s) = &v.suggestion {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            l.report(&rules::UNDEFINED_ARG_IN_FROM, n, msg);
        }
    }
    for (i, base) in &build.invalid_default_from {
        if let Some(n) = node(*i) {
            l.report(
                &rules::INVALID_DEFAULT_ARG_IN_FROM,
                n,
                format!("Default value for ARG {base} results in empty or invalid base image name"),
            );
        }
    }
    for v in &build.undefined_vars {
        if let Some(n) = node(v.node) {
            let mut msg = format!("Usage of undefined variable '${}'", v.name);
            if let Some(s) = &v.suggestion {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            l.report(&rules::UNDEFINED_VAR, n, msg);
        }
    }
    for g in &build.global_args {
        if let Some(n) = node(g.node) {
            if is_secret_name(&g.name) {
                l.report(
                    &rules::SECRETS_USED_IN_ARG_OR_ENV,
                    n,
                    format!(
                        "Do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                        g.name
                    ),
                );
            }
        }
    }

    let mut seen_names: Vec<String> = Vec::new();
    let mut workdir_set: Vec<bool> = Vec::new();
    let mut shell_set: Vec<bool> = Vec::new();
    for st in &build.stages {
        let Some(from_node) = node(st.node) else {
            workdir_set.push(false);
            shell_set.push(false);
            continue;
        };
        if let Some(name) = &st.name {
            if name != &name.to_lowercase() {
                l.report(
                    &rules::STAGE_NAME_CASING,
                    from_node,
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
            let lower = name.to_lowercase();
            if seen_names.contains(&lower) {
                l.report(
                    &rules::DUPLICATE_STAGE_NAME,
                    from_node,
                    format!("Duplicate stage name {lower:?}, stage names should be unique"),
                );
            }
            seen_names.push(lower.clone());
            if lower == "scratch" || lower == "context" {
                l.report(
                    &rules::RESERVED_STAGE_NAME,
                    from_node,
                    format!("Stage name should not use the same name as reserved stage {lower:?}"),
                );
            }
        }
        if let Some(as_kw) = &st.from.as_keyword {
            let kw = &from_node.keyword;
            let from_upper = kw == &kw.to_uppercase();
            let from_lower = kw == &kw.to_lowercase();
            if (from_upper && as_kw != &as_kw.to_uppercase())
                || (from_lower && as_kw != &as_kw.to_lowercase())
            {
                l.report(
                    &rules::FROM_AS_CASING,
                    from_node,
                    format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
                );
            }
        }
        // The FROM --platform value as written (before expansion).
        if let Some(raw) = from_node.flag("platform") {
            if raw == "$TARGETPLATFORM" || raw == "${TARGETPLATFORM}" {
                l.report(
                    &rules::REDUNDANT_TARGET_PLATFORM,
                    from_node,
                    format!("Setting platform to predefined {raw} in FROM is redundant as this is the default behavior"),
                );
            } else if !raw.contains('$') {
                let name = st.name.as_deref().unwrap_or("").to_lowercase();
                let named_for_it = kiln_oci::Platform::parse(raw).is_ok_and(|p| {
                    !name.is_empty() && (name.contains(&p.architecture) || name.contains(&p.os))
                });
                if !named_for_it {
                    l.report(
                        &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                        from_node,
                        format!("FROM --platform flag should not use constant value {raw:?}"),
                    );
                }
            }
        }

        let (mut wd, mut sh) = match st.base {
            Base::Stage(b) => (
                workdir_set.get(b).copied().unwrap_or(false),
                shell_set.get(b).copied().unwrap_or(false),
            ),
            _ => (false, false),
        };
        let mut singles: Vec<(&str, usize)> = Vec::new();
        for ri in &st.instructions {
            let Some(n) = node(ri.node) else { continue };
            match &ri.instruction {
                Instruction::Workdir(w) => {
                    let abs = w.starts_with('/') || is_windows_abs(w);
                    if !abs && !wd {
                        l.report(
                            &rules::WORKDIR_RELATIVE_PATH,
                            n,
                            format!("Relative workdir {w:?} can have unexpected results if the base image changes"),
                        );
                    }
                    wd |= abs;
                }
                Instruction::Shell(_) => sh = true,
                Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                    singles.push((ri.instruction.name(), ri.node));
                    if matches!(c, CommandLine::Shell(_)) && !sh {
                        l.report(
                            &rules::JSON_ARGS_RECOMMENDED,
                            n,
                            format!(
                                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                                ri.instruction.name()
                            ),
                        );
                    }
                }
                Instruction::Healthcheck(_) => singles.push(("HEALTHCHECK", ri.node)),
                Instruction::Arg(decls) => {
                    for d in decls {
                        if is_secret_name(&d.name) {
                            l.report(
                                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                                n,
                                format!("Do not use ARG or ENV instructions for sensitive data (ARG {:?})", d.name),
                            );
                        }
                    }
                }
                Instruction::Env(kv) => {
                    for p in &kv.pairs {
                        if is_secret_name(&p.key) {
                            l.report(
                                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                                n,
                                format!("Do not use ARG or ENV instructions for sensitive data (ENV {:?})", p.key),
                            );
                        }
                    }
                }
                Instruction::Expose(ports) => {
                    for p in ports {
                        if p.contains(':') {
                            l.report(
                                &rules::EXPOSE_INVALID_FORMAT,
                                n,
                                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'"),
                            );
                        }
                        if let Some((_, proto)) = p.rsplit_once('/') {
                            if proto != proto.to_lowercase() {
                                l.report(
                                    &rules::EXPOSE_PROTO_CASING,
                                    n,
                                    format!("Defined protocol '{p}' in EXPOSE instruction should be lowercase"),
                                );
                            }
                        }
                    }
                }
                Instruction::Copy(c) | Instruction::Add(c) if c.from.is_none() => {
                    if let Some(ignored) = opts.ignored {
                        let verb = if matches!(ri.instruction, Instruction::Copy(_)) {
                            "Copy"
                        } else {
                            "Add"
                        };
                        for src in &c.sources {
                            if c.is_heredoc_source(src)
                                || src.contains("://")
                                || src.starts_with("git@")
                            {
                                continue;
                            }
                            let rel = clean_context_path(src);
                            // `.` copies what is left of the context; it is never "ignored" as a whole.
                            if rel.is_empty() || rel == "." {
                                continue;
                            }
                            if ignored(&rel) {
                                l.report(
                                    &rules::COPY_IGNORED_FILE,
                                    n,
                                    format!("Attempting to {verb} file {src:?} that is excluded by .dockerignore"),
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for name in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let occ: Vec<usize> = singles
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, i)| *i)
                .collect();
            if occ.len() > 1 {
                for &i in &occ[..occ.len() - 1] {
                    if let Some(n) = node(i) {
                        l.report(
                            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            n,
                            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        );
                    }
                }
            }
        }
        workdir_set.push(wd);
        shell_set.push(sh);
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
