//! `--call outline` and `--call targets`: what a target takes and which targets exist.

use super::Build;
use crate::instructions::mount::MountType;
use crate::instructions::Instruction;

/// One build arg of the outline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutlineArg {
    /// Name.
    pub name: String,
    /// Value in effect (default or override).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Description from the comment above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A secret or ssh id a target uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutlineRequirement {
    /// The id.
    pub name: String,
    /// Whether the build fails without it.
    pub required: bool,
}

/// `--call outline`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outline {
    /// Target stage name (empty for an unnamed default stage).
    pub name: String,
    /// Target description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Build args the target uses.
    pub args: Vec<OutlineArg>,
    /// Secrets the target mounts.
    pub secrets: Vec<OutlineRequirement>,
    /// SSH ids the target mounts.
    pub ssh: Vec<OutlineRequirement>,
}

/// One stage in `--call targets`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Stage name.
    pub name: String,
    /// Description from the comment above FROM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The stage built without --target.
    pub default: bool,
    /// The base as written in FROM.
    pub base: String,
    /// Platform flag of the FROM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl Build {
    /// The outline of the target: the ARGs its stages use (global ones used in their FROM lines
    /// and the stages' own), secrets and ssh mounts.
    pub fn outline(&self) -> Outline {
        let mut args: Vec<OutlineArg> = Vec::new();
        let mut push = |a: &super::ResolvedArg| {
            if !args.iter().any(|x| x.name == a.name) {
                args.push(OutlineArg {
                    name: a.name.clone(),
                    value: a.value.clone(),
                    description: a.description.clone(),
                });
            }
        };
        for g in &self.global_args {
            let used = self.needed.iter().any(|&i| {
                self.stages[i].from_vars.contains(&g.name)
                    || self.stages[i].args.iter().any(|a| a.name == g.name)
            });
            if used {
                push(g);
            }
        }
        let mut secrets: Vec<OutlineRequirement> = Vec::new();
        let mut ssh: Vec<OutlineRequirement> = Vec::new();
        for st in self.needed_stages() {
            for a in &st.args {
                push(a);
            }
            for ri in &st.instructions {
                if let Instruction::Run(r) = &ri.instruction {
                    for m in &r.mounts {
                        let list = match m.kind {
                            MountType::Secret => &mut secrets,
                            MountType::Ssh => &mut ssh,
                            _ => continue,
                        };
                        let id = m.id.clone().unwrap_or_default();
                        match list.iter_mut().find(|x| x.name == id) {
                            Some(x) => x.required |= m.required,
                            None => list.push(OutlineRequirement {
                                name: id,
                                required: m.required,
                            }),
                        }
                    }
                }
            }
        }
        let t = &self.stages[self.target];
        Outline {
            name: t.name.clone().unwrap_or_default(),
            description: t.description.clone(),
            args,
            secrets,
            ssh,
        }
    }

    /// The named stages (and an unnamed last stage), for `--call targets`.
    pub fn targets(&self) -> Vec<Target> {
        let last = self.stages.len().saturating_sub(1);
        self.stages
            .iter()
            .filter(|s| s.name.is_some() || s.index == last)
            .map(|s| Target {
                name: s.name.clone().unwrap_or_default(),
                description: s.description.clone(),
                default: s.index == last,
                base: s.from.image.clone(),
                platform: s.from.platform.clone(),
            })
            .collect()
    }
}
