//! Metadata instructions: how ENV, LABEL, CMD, ... change the image config.

use crate::instructions::expose::exposed_ports;
use crate::instructions::{CommandLine, Healthcheck, Instruction};
use kiln_oci::config::{Empty, HealthConfig, ImageConfig};

/// The shell of shell-form commands when SHELL was never set.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The stage's shell (SHELL, else `/bin/sh -c`).
pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .shell
        .clone()
        .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
}

/// argv of a command line: exec form as is, shell form through the shell.
pub fn argv(config: &ImageConfig, command: &CommandLine) -> Vec<String> {
    match command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(cmd) => {
            let mut v = shell_of(config);
            v.push(cmd.clone());
            v
        }
    }
}

/// WORKDIR `dir` relative to the current one (`/` when unset).
pub fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{}/{}", base.trim_end_matches('/'), dir)
    };
    let cleaned = kiln_solver::pattern::clean_path(&joined);
    if cleaned.starts_with('/') {
        cleaned
    } else {
        format!("/{cleaned}")
    }
}

/// The working directory after `WORKDIR dir`, as BuildKit records it: an
/// absolute `dir` is kept as written (`/tmp/` stays `/tmp/`), a relative one
/// is joined to the current directory (`/` when unset) and cleaned, an empty
/// one keeps the current directory.
pub fn normalize_workdir(current: &str, dir: &str) -> String {
    let current = if current.is_empty() { "/" } else { current };
    if dir.is_empty() {
        return current.to_string();
    }
    if dir.starts_with('/') {
        return dir.to_string();
    }
    join_workdir(current, dir)
}

fn nanos(d: Option<std::time::Duration>) -> u64 {
    d.map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

/// Applies a metadata instruction to the config; `cmd_set` says whether the
/// stage itself set CMD before (an ENTRYPOINT then keeps it).
pub fn apply(config: &mut ImageConfig, instruction: &Instruction, cmd_set: bool) {
    let c = &mut config.config;
    match instruction {
        Instruction::Env(kv) => {
            for p in &kv.pairs {
                c.set_env(&p.key, &p.value);
            }
        }
        Instruction::Label(kv) => {
            for p in &kv.pairs {
                c.labels.insert(p.key.clone(), p.value.clone());
            }
        }
        Instruction::Expose(ports) => {
            // Validated when the instruction was expanded.
            for p in ports {
                for key in exposed_ports(p).unwrap_or_default() {
                    c.exposed_ports.insert(key, Empty {});
                }
            }
        }
        Instruction::Volume(paths) => {
            for p in paths {
                c.volumes.insert(p.clone(), Empty {});
            }
        }
        Instruction::User(u) => c.user = u.clone(),
        Instruction::Stopsignal(s) => c.stop_signal = s.clone(),
        Instruction::Shell(sh) => c.shell = Some(sh.clone()),
        Instruction::Maintainer(m) => config.author = Some(m.clone()),
        Instruction::Onbuild(o) => c.on_build.push(o.expression.clone()),
        Instruction::Cmd(cmd) => {
            let args = argv(config, cmd);
            config.config.cmd = Some(args);
            // As BuildKit's CMD (Docker's image spec field; OCI deprecates it).
            config
                .config
                .extra
                .insert("ArgsEscaped".to_string(), serde_json::Value::Bool(true));
        }
        Instruction::Entrypoint(ep) => {
            let args = argv(config, ep);
            config.config.entrypoint = Some(args);
            // As BuildKit: a new ENTRYPOINT resets only a CMD inherited from
            // the base (image or stage), not one this stage set.
            if !cmd_set {
                config.config.cmd = None;
            }
        }
        Instruction::Healthcheck(h) => {
            c.healthcheck = Some(match h {
                Healthcheck::None => HealthConfig {
                    test: vec!["NONE".to_string()],
                    ..Default::default()
                },
                Healthcheck::Cmd {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => HealthConfig {
                    test: match command {
                        CommandLine::Exec(args) => std::iter::once("CMD".to_string())
                            .chain(args.iter().cloned())
                            .collect(),
                        CommandLine::Shell(cmd) => vec!["CMD-SHELL".to_string(), cmd.clone()],
                    },
                    interval: nanos(*interval),
                    timeout: nanos(*timeout),
                    start_period: nanos(*start_period),
                    start_interval: nanos(*start_interval),
                    retries: retries.unwrap_or(0),
                },
            });
        }
        Instruction::Arg(_)
        | Instruction::From(_)
        | Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::Workdir(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_joins_and_cleans() {
        assert_eq!(join_workdir("", "app"), "/app");
        assert_eq!(join_workdir("/app", "src/../lib"), "/app/lib");
        assert_eq!(join_workdir("/app", "/x/"), "/x");
        assert_eq!(join_workdir("/a", ".."), "/");
    }

    #[test]
    fn workdir_keeps_absolute_paths_as_written_and_cleans_joined_ones() {
        assert_eq!(normalize_workdir("", "/tmp/"), "/tmp/");
        assert_eq!(normalize_workdir("/a", "/x/../y"), "/x/../y");
        assert_eq!(normalize_workdir("", "app/"), "/app");
        assert_eq!(normalize_workdir("/tmp/", "a/./b/.."), "/tmp/a");
        assert_eq!(normalize_workdir("/a", "../../.."), "/");
        assert_eq!(normalize_workdir("/w/", ""), "/w/");
        assert_eq!(normalize_workdir("", ""), "/");
    }
}
