//! The phases of [`super::stage_rules`]: rules about what resolution found (undefined and
//! secret ARGs), then per stage the FROM line's rules and the instructions' rules.

use super::{clean_context_path, is_secret_name, is_windows_abs, rules, CheckOptions, Linter};
use crate::instructions::{CommandLine, Copy, Instruction, KeyValues};
use crate::parser::Node;
use crate::stages::{Base, Build, ResolvedInstruction, Stage};

/// Rules about what resolution found: undeclared or undefined variables, invalid default
/// base names, secret-like global ARGs.
pub(super) fn resolution_rules(l: &mut Linter, build: &Build) {
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
            secret_rule(l, n, "ARG", &g.name);
        }
    }
}

/// SecretsUsedInArgOrEnv for one ARG or ENV name.
fn secret_rule(l: &mut Linter, n: &Node, keyword: &str, name: &str) {
    if is_secret_name(name) {
        l.report(
            &rules::SECRETS_USED_IN_ARG_OR_ENV,
            n,
            format!("Do not use ARG or ENV instructions for sensitive data ({keyword} {name:?})"),
        );
    }
}

/// What the stage rules carry from one stage to the next.
#[derive(Default)]
pub(super) struct StageWalk {
    /// Stage names seen so far, lower-cased.
    seen_names: Vec<String>,
    /// Per stage: whether an absolute WORKDIR is set at its end (stages built on it inherit it).
    workdir_set: Vec<bool>,
    /// Per stage: whether SHELL is set at its end.
    shell_set: Vec<bool>,
}

impl StageWalk {
    /// Checks one stage (stages in order): its FROM line, then its instructions.
    pub(super) fn stage(&mut self, l: &mut Linter, st: &Stage, opts: &CheckOptions) {
        let ast = l.ast;
        let Some(from_node) = ast.children.get(st.node) else {
            self.workdir_set.push(false);
            self.shell_set.push(false);
            return;
        };
        self.name_rules(l, st, from_node);
        from_rules(l, st, from_node);
        let mut body = match st.base {
            Base::Stage(b) => StageBody {
                workdir_set: self.workdir_set.get(b).copied().unwrap_or(false),
                shell_set: self.shell_set.get(b).copied().unwrap_or(false),
                singles: Vec::new(),
            },
            _ => StageBody::default(),
        };
        for ri in &st.instructions {
            let Some(n) = ast.children.get(ri.node) else {
                continue;
            };
            body.instruction(l, ri, n, opts);
        }
        body.multiple_instructions(l);
        self.workdir_set.push(body.workdir_set);
        self.shell_set.push(body.shell_set);
    }

    /// StageNameCasing, DuplicateStageName, ReservedStageName.
    fn name_rules(&mut self, l: &mut Linter, st: &Stage, from_node: &Node) {
        let Some(name) = &st.name else {
            return;
        };
        if name != &name.to_lowercase() {
            l.report(
                &rules::STAGE_NAME_CASING,
                from_node,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let lower = name.to_lowercase();
        if self.seen_names.contains(&lower) {
            l.report(
                &rules::DUPLICATE_STAGE_NAME,
                from_node,
                format!("Duplicate stage name {lower:?}, stage names should be unique"),
            );
        }
        self.seen_names.push(lower.clone());
        if lower == "scratch" || lower == "context" {
            l.report(
                &rules::RESERVED_STAGE_NAME,
                from_node,
                format!("Stage name should not use the same name as reserved stage {lower:?}"),
            );
        }
    }
}

/// FromAsCasing, and the rules on the FROM `--platform` value as written (before expansion):
/// RedundantTargetPlatform, FromPlatformFlagConstDisallowed.
fn from_rules(l: &mut Linter, st: &Stage, from_node: &Node) {
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
    let Some(raw) = from_node.flag("platform") else {
        return;
    };
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

/// The state of one stage's instruction rules.
#[derive(Default)]
struct StageBody {
    /// An absolute WORKDIR is in effect.
    workdir_set: bool,
    /// SHELL is in effect.
    shell_set: bool,
    /// CMD, ENTRYPOINT and HEALTHCHECK seen: (keyword, node).
    singles: Vec<(&'static str, usize)>,
}

impl StageBody {
    /// The rules about one instruction.
    fn instruction(
        &mut self,
        l: &mut Linter,
        ri: &ResolvedInstruction,
        n: &Node,
        opts: &CheckOptions,
    ) {
        match &ri.instruction {
            Instruction::Workdir(w) => {
                let abs = w.starts_with('/') || is_windows_abs(w);
                if !abs && !self.workdir_set {
                    l.report(
                        &rules::WORKDIR_RELATIVE_PATH,
                        n,
                        format!("Relative workdir {w:?} can have unexpected results if the base image changes"),
                    );
                }
                self.workdir_set |= abs;
            }
            Instruction::Shell(_) => self.shell_set = true,
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                self.singles.push((ri.instruction.name(), ri.node));
                if matches!(c, CommandLine::Shell(_)) && !self.shell_set {
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
            Instruction::Healthcheck(_) => self.singles.push(("HEALTHCHECK", ri.node)),
            Instruction::Arg(decls) => {
                for d in decls {
                    secret_rule(l, n, "ARG", &d.name);
                }
            }
            Instruction::Env(kv) => env_rules(l, n, kv),
            Instruction::Expose(ports) => expose_rules(l, n, ports),
            Instruction::Copy(c) | Instruction::Add(c) if c.from.is_none() => {
                if let Some(ignored) = opts.ignored {
                    let is_copy = matches!(ri.instruction, Instruction::Copy(_));
                    copy_ignored_rule(l, n, c, is_copy, ignored);
                }
            }
            _ => {}
        }
    }

    /// MultipleInstructionsDisallowed: every CMD, ENTRYPOINT or HEALTHCHECK but the last.
    fn multiple_instructions(&self, l: &mut Linter) {
        let ast = l.ast;
        for name in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let occ: Vec<usize> = self
                .singles
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, i)| *i)
                .collect();
            if occ.len() > 1 {
                for &i in &occ[..occ.len() - 1] {
                    if let Some(n) = ast.children.get(i) {
                        l.report(
                            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            n,
                            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        );
                    }
                }
            }
        }
    }
}

/// SecretsUsedInArgOrEnv for each ENV key.
fn env_rules(l: &mut Linter, n: &Node, kv: &KeyValues) {
    for p in &kv.pairs {
        secret_rule(l, n, "ENV", &p.key);
    }
}

/// ExposeInvalidFormat and ExposeProtoCasing.
fn expose_rules(l: &mut Linter, n: &Node, ports: &[String]) {
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

/// CopyIgnoredFile: a COPY or ADD source from the context that `.dockerignore` excludes.
fn copy_ignored_rule(
    l: &mut Linter,
    n: &Node,
    c: &Copy,
    is_copy: bool,
    ignored: &dyn Fn(&str) -> bool,
) {
    let verb = if is_copy { "Copy" } else { "Add" };
    for src in &c.sources {
        if c.is_heredoc_source(src) || src.contains("://") || src.starts_with("git@") {
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
