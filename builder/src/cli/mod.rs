//! Command-line interface: one module per verb.

mod bake;
pub mod build;
mod copy;
pub mod dockerfile;
mod du;
mod history;
mod images;
mod imagetools;
mod inspect;
mod keygen;
mod legacy;
mod load;
mod login;
mod logout;
mod prune;
mod pull;
mod push;
mod rmi;
mod save;
mod setup_binfmt;
mod sign;
mod tag;
mod verify;
mod version;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// kiln builds container images from Dockerfiles and moves them between registries.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory (content store, layers, cache). Default: $XDG_DATA_HOME/kiln, /var/lib/kiln for root.
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Print kiln's internal steps on stderr (context, frontend, each step's cache key and
    /// hit or miss, export, push). Also KILN_DEBUG=1.
    #[arg(
        short = 'D',
        long,
        global = true,
        env = "KILN_DEBUG",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_bool,
        value_name = "BOOL"
    )]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and git commit.
    Version(version::Args),
    /// Build an image from a Dockerfile.
    Build(Box<build::Args>),
    /// Build several targets from a bake file (HCL, JSON or compose).
    Bake(Box<bake::Args>),
    /// Save images to a tar archive (docker-archive or OCI).
    Save(save::Args),
    /// Load images from a tar archive.
    Load(load::Args),
    /// Copy images between registries, OCI layouts and archives.
    Copy(copy::Args),
    /// Pull an image or a repository from a registry.
    Pull(pull::Args),
    /// Upload an image to a registry.
    Push(push::Args),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(tag::Args),
    /// List images.
    #[command(alias = "ls")]
    Images(images::Args),
    /// Remove one or more images.
    Rmi(rmi::Args),
    /// Display detailed information on images.
    Inspect(inspect::Args),
    /// Show the history of an image.
    History(history::Args),
    /// Log in to a registry.
    Login(login::Args),
    /// Log out from a registry.
    Logout(logout::Args),
    /// Commands to work on images in registries.
    Imagetools(imagetools::Args),
    /// Show disk usage of the build cache and the store.
    Du(du::Args),
    /// Remove build cache.
    Prune(prune::Args),
    /// Register QEMU user emulation (binfmt_misc, fix-binary) for foreign-platform RUN steps.
    SetupBinfmt(setup_binfmt::Args),
    /// Inspect Dockerfiles (`kiln dockerfile parse FILE|-`).
    Dockerfile(dockerfile::Args),
    /// Generate an ECDSA P-256 key pair for signing images (PREFIX.key, PREFIX.pub).
    Keygen(keygen::Args),
    /// Sign an image in a registry (cosign-compatible signature).
    Sign(sign::Args),
    /// Verify an image's signatures with a public key.
    Verify(verify::Args),
}

/// Sends kiln's own `tracing` events (not those of the HTTP and TLS
/// libraries underneath) at debug level to stderr, timed from the start.
fn install_debug_log() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = Targets::new()
        .with_target("kiln", LevelFilter::DEBUG)
        .with_target("kiln_solver", LevelFilter::DEBUG)
        .with_target("kiln_frontend", LevelFilter::DEBUG)
        .with_target("kiln_registry", LevelFilter::DEBUG)
        .with_default(LevelFilter::WARN);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime());
    // A second subscriber cannot happen (one call, at start); ignore rather than panic.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(targets)
        .try_init();
}

/// Whether a verb runs in kiln's user namespace when unprivileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    /// It works on registries, archives and the content store only: as the user.
    No,
    /// It deletes or measures layer trees, which may hold files of the subordinate
    /// ids: in the namespace when the user has one, else as the user (whose layers
    /// then hold no such files).
    Preferred,
    /// It unpacks layers with their owners and mounts overlays (`build`).
    Required,
}

impl Command {
    fn namespace(&self) -> Namespace {
        match self {
            Command::Build(_) => Namespace::Required,
            Command::Rmi(_) | Command::Du(_) | Command::Prune(_) => Namespace::Preferred,
            _ => Namespace::No,
        }
    }
}

/// Re-runs kiln in a user namespace when unprivileged (see [`crate::rootless`]);
/// `Some(exit code)` of that run, or `None` to go on here.
fn enter_rootless(root: Option<&std::path::Path>) -> miette::Result<Option<ExitCode>> {
    use crate::rootless::RootlessError;
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(None);
    }
    let state =
        kiln_solver::state::StateDir::choose_root(root).map_err(crate::hints::state_failure)?;
    crate::rootless::reexec_if_unprivileged(&state).map_err(|err| {
        let help = match &err {
            RootlessError::Missing { missing, .. } => missing_help(missing),
            RootlessError::Unshare { .. } => {
                "a seccomp or AppArmor profile (a container's default \
                 one), or a chroot, forbids unshare(2): run kiln's container with seccomp and \
                 AppArmor Unconfined, outside a chroot (see docs/rootless.md), or run kiln as root"
                    .into()
            }
            RootlessError::Map { .. } => "newuidmap/newgidmap must be set-uid root (or have \
                 cap_setuid/cap_setgid), and the ranges in /etc/subuid and /etc/subgid must not \
                 include the user's own id"
                .into(),
            RootlessError::Io { .. } => String::new(),
        };
        miette::Report::new(Hinted {
            help: (!help.is_empty()).then_some(help),
            inner: err,
        })
    })
}

/// How to fix each missing prerequisite, or run kiln as root.
fn missing_help(missing: &[crate::rootless::Missing]) -> String {
    use crate::rootless::Missing;
    let mut fixes: Vec<String> = Vec::new();
    for m in missing {
        let fix = match m {
            Missing::SubordinateRange { user, .. } => format!(
                "as root, `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \
                 {user}` (a range no other user has)"
            ),
            Missing::MapTool(_) => "as root, `apt-get install uidmap`".into(),
            Missing::NoNewPrivs => "start kiln without no_new_privs (Kubernetes: \
                 `allowPrivilegeEscalation: true`)"
                .into(),
            Missing::Sysctl { name, .. } if name.contains("apparmor") => {
                format!("as root, `sysctl -w {name}=0`")
            }
            Missing::Sysctl { name, .. } if name.contains("max_user") => {
                format!("as root, `sysctl -w {name}=15000`")
            }
            Missing::Sysctl { name, .. } => format!("as root, `sysctl -w {name}=1`"),
        };
        if !fixes.contains(&fix) {
            fixes.push(fix);
        }
    }
    format!("{}; or run kiln as root", fixes.join("; "))
}

/// Whether `err` is a [`crate::rootless::RootlessError::Missing`] (nothing tried yet).
fn is_missing(err: &miette::Report) -> bool {
    err.downcast_ref::<Hinted>()
        .is_some_and(|h| matches!(h.inner, crate::rootless::RootlessError::Missing { .. }))
}

/// A rootless error with the CLI's hint on fixing it.
#[derive(Debug, miette::Diagnostic)]
struct Hinted {
    inner: crate::rootless::RootlessError,
    #[help]
    help: Option<String>,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.inner)
    }
}

/// A boolean flag's value as Go's `strconv.ParseBool` reads it (buildx's
/// `--push=true`, `--no-cache=0`, `--pull=False`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "{s:?} is not a boolean (expected true or false, 1 or 0, t or f)"
        )),
    }
}

/// The environment variables the flags read: an empty one counts as unset, as docker treats
/// `DOCKER_HOST=` (clap would take it as a flag given without a value).
const FLAG_ENV: [&str; 5] = [
    "KILN_ROOT",
    "KILN_DEBUG",
    "KILN_EXECUTOR",
    "KILN_MAX_LAYER_SIZE",
    "BUILDKIT_PROGRESS",
];

/// Removes the empty [`FLAG_ENV`] variables; called before any thread starts.
fn forget_empty_env() {
    for name in FLAG_ENV {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
}

/// Parses the command line, runs the verb and renders any error.
pub fn run() -> ExitCode {
    forget_empty_env();
    let cli = Cli::parse();
    if cli.debug {
        install_debug_log();
    }
    let namespace = cli.command.namespace();
    if namespace != Namespace::No {
        match enter_rootless(cli.root.as_deref()) {
            Ok(None) => {}
            Ok(Some(code)) => return code,
            Err(err) if namespace == Namespace::Preferred && is_missing(&err) => {
                tracing::debug!("no user namespace ({err}): running as the user")
            }
            Err(err) => {
                eprintln!("{:?}", err);
                return ExitCode::FAILURE;
            }
        }
    }
    let result = match cli.command {
        Command::Version(args) => version::run(args),
        Command::Build(args) => build::run(*args, cli.root),
        Command::Bake(args) => bake::run(*args, cli.root),
        Command::Save(args) => save::run(args, cli.root.as_deref()),
        Command::Load(args) => load::run(args, cli.root.as_deref()),
        Command::Copy(args) => copy::run(args, cli.root.as_deref()),
        Command::Pull(args) => pull::run(args, cli.root.as_deref()),
        Command::Push(args) => push::run(args, cli.root.as_deref()),
        Command::Tag(args) => tag::run(args, cli.root.as_deref()),
        Command::Images(args) => images::run(args, cli.root.as_deref()),
        Command::Rmi(args) => rmi::run(args, cli.root.as_deref()),
        Command::Inspect(args) => inspect::run(args, cli.root.as_deref()),
        Command::History(args) => history::run(args, cli.root.as_deref()),
        Command::Login(args) => login::run(args, cli.root.as_deref()),
        Command::Logout(args) => logout::run(args, cli.root.as_deref()),
        Command::Imagetools(args) => imagetools::run(args, cli.root.as_deref()),
        Command::Du(args) => du::run(args, cli.root.as_deref()),
        Command::Prune(args) => prune::run(args, cli.root.as_deref()),
        Command::SetupBinfmt(args) => setup_binfmt::run(args),
        Command::Dockerfile(args) => dockerfile::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{:?}", crate::hints::with_fallback(err));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn each_missing_prerequisite_gets_its_fix() {
        use crate::rootless::Missing;
        let help = super::missing_help(&[
            Missing::SubordinateRange {
                file: "/etc/subuid",
                user: "ci".into(),
            },
            Missing::SubordinateRange {
                file: "/etc/subgid",
                user: "ci".into(),
            },
            Missing::MapTool("newuidmap"),
            Missing::MapTool("newgidmap"),
            Missing::Sysctl {
                name: "user.max_user_namespaces",
                value: "0".into(),
            },
            Missing::Sysctl {
                name: "kernel.unprivileged_userns_clone",
                value: "0".into(),
            },
            Missing::NoNewPrivs,
        ]);
        for fix in [
            "--add-subgids 100000-165535 ci`",
            "`apt-get install uidmap`",
            "`sysctl -w user.max_user_namespaces=15000`",
            "`sysctl -w kernel.unprivileged_userns_clone=1`",
            "allowPrivilegeEscalation: true",
        ] {
            assert_eq!(help.matches(fix).count(), 1, "{fix} once in: {help}");
        }
    }

    #[test]
    fn booleans_read_as_go_reads_them() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "2", "on"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }
}
