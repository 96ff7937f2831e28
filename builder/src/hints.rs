//! Hints that name kiln's own commands and flags (`kiln setup-binfmt`, `kiln login`,
//! `--allow`, `--secret`, ...), chosen by the kind of error. The library crates say
//! what went wrong; only the CLI knows how its user fixes it.

use std::fmt;

use kiln_registry::error::NetCause;
use kiln_solver::executor::emulation::EmulationError;
use kiln_solver::executor::ExecError;
use kiln_solver::scheduler::WorkerError;
use kiln_solver::state::{StateError, ROOT_ENV};

/// The hint for a failed build step, if one fits.
pub fn for_worker(e: &WorkerError) -> Option<String> {
    Some(match e {
        WorkerError::StepFailed(_) => "the command failed inside the build container; \
             `--progress plain` shows its whole output"
            .into(),
        WorkerError::Executor(e) if masked_proc(e) => PROC_UNMASK.into(),
        WorkerError::Emulation(e) => for_emulation(e)?.into(),
        WorkerError::NotEntitled { entitlement, .. } => format!("pass --allow {entitlement}"),
        WorkerError::SecretNotFound { id, env: false } => {
            format!("pass it with --secret id={id},src=<file> or --secret id={id},env=<VAR>")
        }
        WorkerError::SecretNotFound { id, env: true } => format!("pass it with --secret id={id}"),
        WorkerError::SshNotFound { id } => format!("pass it with --ssh {id}=<socket or key>"),
        WorkerError::SourceNotFound(_) | WorkerError::MountSourceNotFound { .. } => {
            "check the path against the build context and .dockerignore".into()
        }
        WorkerError::LayerTooLarge(_) => {
            "--max-layer-size sets the limit; leave it out for none".into()
        }
        WorkerError::ImageFetch(e) => for_registry(e.downcast_ref()?)?,
        WorkerError::CacheBlob { .. } => "a --cache-from source holds a blob that cannot be \
             fetched or is corrupt: add ignore-error=true to its value to build without it, or \
             export that cache again"
            .into(),
        _ => return None,
    })
}

/// The hint for a platform that cannot run here, if `kiln setup-binfmt` fixes it.
pub fn for_emulation(e: &EmulationError) -> Option<&'static str> {
    match e {
        EmulationError::NotRegistered { .. } => Some(
            "run `kiln setup-binfmt` (after `apt-get install qemu-user-static` if it is not installed)",
        ),
        EmulationError::NoFixBinary { .. } => Some("run `kiln setup-binfmt` to re-register it"),
        EmulationError::Disabled { .. } => Some("run `kiln setup-binfmt`"),
        _ => None,
    }
}

/// The hint for a registry error, if one fits.
pub fn for_registry(error: &kiln_registry::Error) -> Option<String> {
    match error {
        kiln_registry::Error::Auth {
            registry,
            anonymous: true,
            ..
        } => Some(format!("run `kiln login {registry}`")),
        kiln_registry::Error::Http { cause, source, .. } => {
            let host = source
                .url()
                .map(kiln_registry::transport::host_port)
                .unwrap_or_else(|| "<registry>".into());
            match cause {
                NetCause::Certificate(_) => Some(format!(
                    "trust the registry's CA by saving it as {}/certs.d/{host}/ca.crt \
                     (or /etc/docker/certs.d/{host}/ca.crt), or skip verification with \
                     --insecure-registry {host}",
                    kiln_registry::auth::config::config_dir().display()
                )),
                NetCause::NotTls(_) => Some(format!(
                    "to reach it over plain HTTP, pass --insecure-registry {host}"
                )),
                _ => None,
            }
        }
        // A push of an index whose images were not all pulled (a pull keeps the whole index).
        kiln_registry::Error::Oci(kiln_oci::Error::Missing { what, .. })
            if kiln_oci::media_type::is_manifest(what) =>
        {
            Some(
                "the index lists images that are not in the local store: pull it with \
                 --all-platforms first"
                    .to_string(),
            )
        }
        kiln_registry::Error::Stalled { .. } => Some(format!(
            "if the registry is only slow, allow it more time with --registry-idle-timeout \
             or {}",
            kiln_registry::transport::IDLE_TIMEOUT_ENV
        )),
        _ => None,
    }
}

/// The hint for a state directory that cannot be chosen or opened, if one fits.
pub fn for_state(e: &StateError) -> Option<String> {
    match e {
        StateError::NoDefault => Some(format!("choose one with --root DIR or {ROOT_ENV}=DIR")),
        _ => None,
    }
}

/// A state directory error as the terminal shows it, with its hint, for `map_err`.
pub fn state_failure(e: StateError) -> miette::Report {
    let help = for_state(&e);
    with_help(miette::Report::from_err(e), help)
}

/// The hint for an error the command left without one: the first error in its chain
/// that [`for_registry`] or [`for_emulation`] knows.
pub fn for_chain(report: &miette::Report) -> Option<String> {
    report.chain().find_map(|e| {
        if let Some(e) = e.downcast_ref::<kiln_registry::Error>() {
            for_registry(e)
        } else if let Some(e) = e.downcast_ref::<EmulationError>() {
            for_emulation(e).map(str::to_string)
        } else {
            None
        }
    })
}

/// `report` with the hint [`for_chain`] finds, when it has none of its own.
pub fn with_fallback(report: miette::Report) -> miette::Report {
    if report.help().is_some() {
        return report;
    }
    let help = for_chain(&report);
    with_help(report, help)
}

/// `report` with `help` as its hint (when there is one).
pub fn with_help(report: miette::Report, help: Option<String>) -> miette::Report {
    match help {
        Some(help) => miette::Report::new(Hinted {
            inner: report,
            help,
        }),
        None => report,
    }
}

/// A report with a hint added; everything else is the inner report's.
struct Hinted {
    inner: miette::Report,
    help: String,
}

impl fmt::Debug for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl miette::Diagnostic for Hinted {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.help))
    }
    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.url()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.inner.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        self.inner.related()
    }
    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.inner.diagnostic_source()
    }
}

/// The hint for a RUN whose fresh /proc the kernel refused.
const PROC_UNMASK: &str = "RUN mounts a fresh /proc, which the kernel refuses while paths of \
     kiln's own /proc are masked (a container's default): run kiln's container with procMount: \
     Unmasked (docker run --security-opt systempaths=unconfined); see docs/rootless.md";

/// Whether an executor failed to mount a step's /proc for lack of permission. The
/// native executor says so in its own words; crun and runc only in their messages.
fn masked_proc(e: &ExecError) -> bool {
    let refused = |text: &str| {
        let t = text.to_lowercase();
        t.contains("operation not permitted")
            && ["mounting proc", "mount `proc`", "mounting \"proc\""]
                .iter()
                .any(|p| t.contains(p))
    };
    match e {
        ExecError::Setup { step, source } => {
            source.raw_os_error() == Some(libc::EPERM) && step.starts_with("mounting proc (proc)")
        }
        ExecError::Runtime { message, .. } | ExecError::Unavailable(message) => refused(message),
        _ => false,
    }
}

/// The hint for a bad `--cache-to` / `--cache-from` value: the forms the flag takes.
pub fn for_cache_spec(e: &crate::remote_cache::spec::CacheSpecError) -> Option<String> {
    Some(match e.flag {
        "--cache-to" => "e.g. --cache-to type=registry,ref=registry:5000/app:cache,mode=max, \
             --cache-to type=local,dest=DIR, or --cache-to type=inline"
            .into(),
        _ => "e.g. --cache-from registry:5000/app:cache, or --cache-from type=local,src=DIR".into(),
    })
}

/// The hint for a `--cache-from` source that could not be read.
pub fn for_cache_import(e: &crate::remote_cache::import::ImportError) -> String {
    let skip = "add ignore-error=true to the --cache-from value to build without this cache \
                when it cannot be read";
    if let crate::remote_cache::import::ImportError::Config { .. } = e {
        return format!(
            "kiln reads caches kiln exported (a BuildKit cache holds BuildKit's records, not \
             kiln's): export one with kiln build --cache-to, or {skip}"
        );
    }
    match e.registry().and_then(for_registry) {
        Some(h) => format!("{h}; or {skip}"),
        None => skip.to_string(),
    }
}

/// The hint for a `--cache-to` export that failed.
pub fn for_cache_export(e: &crate::remote_cache::export::ExportError) -> String {
    let skip = "add ignore-error=true to the --cache-to value to keep the build when the \
                cache cannot be exported";
    match e.registry().and_then(for_registry) {
        Some(h) => format!("{h}; or {skip}"),
        None => skip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_executors_proc_refusal_gets_the_unmask_hint() {
        let native = ExecError::Setup {
            step: "mounting proc (proc) at /r/proc".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let crun = ExecError::Unavailable(
            "crun cannot start containers here: mount `proc` to `proc`: Operation not permitted"
                .into(),
        );
        let runc = ExecError::Runtime {
            runtime: "runc".into(),
            message: "error mounting \"proc\" to rootfs at \"/proc\": mount proc:/proc (via \
                      /proc/self/fd/6), flags: 0xe: operation not permitted"
                .into(),
        };
        for e in [native, crun, runc] {
            let hint = for_worker(&WorkerError::from(e));
            assert!(hint.is_some_and(|h| h.contains("procMount")));
        }
        let enodev = ExecError::Setup {
            step: "mounting proc (proc) at /r/proc".into(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert!(for_worker(&WorkerError::from(enodev)).is_none());
    }

    #[test]
    fn a_push_missing_an_index_image_names_all_platforms() {
        let missing = |what: &str| {
            kiln_registry::Error::Oci(kiln_oci::Error::Missing {
                digest: kiln_oci::Digest::of(b"x"),
                what: what.into(),
            })
        };
        let hint = for_registry(&missing(kiln_oci::media_type::OCI_MANIFEST));
        assert!(hint.is_some_and(|h| h.contains("--all-platforms")));
        assert_eq!(
            for_registry(&missing(kiln_oci::media_type::OCI_LAYER_GZIP)),
            None
        );
    }

    #[test]
    fn kinds_get_the_hint_naming_the_flag() {
        let e = WorkerError::NotEntitled {
            entitlement: "network.host",
            option: "--network=host",
        };
        assert_eq!(for_worker(&e).as_deref(), Some("pass --allow network.host"));
        let e = WorkerError::SecretNotFound {
            id: "tok".into(),
            env: true,
        };
        assert_eq!(
            for_worker(&e).as_deref(),
            Some("pass it with --secret id=tok")
        );
        let e = WorkerError::image_fetch(kiln_registry::Error::Auth {
            reference: "r/x".into(),
            registry: "r:5001".into(),
            code: "UNAUTHORIZED".into(),
            message: "authentication required".into(),
            scope: "repository:x:pull".into(),
            anonymous: true,
        });
        assert_eq!(for_worker(&e).as_deref(), Some("run `kiln login r:5001`"));
        // A message that merely says "not found" gets no path hint.
        assert!(for_worker(&WorkerError::other("manifest not found")).is_none());
    }
}
