//! The build driver (`kiln build`'s machinery): from a context and a Dockerfile, through the
//! frontend and the solver, to images in the store and the outputs the exporters write.

pub mod assemble;
pub mod attest;
pub mod cache;
pub mod checks;
pub mod commit;
pub mod export_steps;
pub mod images;
pub mod interrupt;
pub mod multi;
pub mod oci_layout;
pub mod run;
pub mod session;
pub mod ssh_agent;
pub mod validate;

use crate::context::ContextSpec;
use crate::export::spec::OutputSpec;
use crate::progress::ProgressMode;
use crate::registry_opts::RegistryArgs;
use kiln_solver::executor::ExecutorKind;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a build needs from the command line.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// The context argument.
    pub context: ContextSpec,
    /// `-f`.
    pub file: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--platform`s (`local` is the host; none means the host).
    pub platforms: Vec<String>,
    /// `BUILDKIT_MULTI_PLATFORM=1`: an index even for one platform.
    pub multi_platform: bool,
    /// Outputs (from `-o`, `--push`, `--load`, `-t`).
    pub outputs: Vec<OutputSpec>,
    /// `--cache-to`s.
    pub cache_to: Vec<crate::remote_cache::spec::CacheTo>,
    /// `--cache-from`s, in order (a source's index is its position).
    pub cache_from: Vec<crate::remote_cache::spec::CacheFrom>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--pull`.
    pub pull: bool,
    /// `--progress`.
    pub progress: ProgressMode,
    /// `--jobs`.
    pub jobs: usize,
    /// `--executor`.
    pub executor: ExecutorKind,
    /// `--max-layer-size` in bytes.
    pub max_layer_size: Option<u64>,
    /// `--secret`s.
    pub secrets: Vec<String>,
    /// `--ssh`.
    pub ssh: Vec<String>,
    /// `--allow`.
    pub allow: Vec<String>,
    /// `--add-host`.
    pub add_hosts: Vec<String>,
    /// `--network`: the default network of RUN steps.
    pub network: kiln_solver::llb::NetworkMode,
    /// `--build-context name=value`.
    pub build_contexts: Vec<String>,
    /// `--annotation`s (`key=value`, for the manifest).
    pub annotations: Vec<(String, String)>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH.
    pub source_date_epoch: Option<u64>,
    /// `--print=graph`.
    pub print_graph: bool,
    /// Registry settings.
    pub registry: RegistryArgs,
    /// `--provenance`, `--sbom`, `--attest` (and buildx's default provenance).
    pub attest: crate::attest::options::Attestations,
}
