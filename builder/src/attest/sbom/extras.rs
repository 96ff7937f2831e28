//! The SBOMs BuildKit adds beside the image's when the Dockerfile asks
//! (`BUILDKIT_SBOM_SCAN_CONTEXT`, `BUILDKIT_SBOM_SCAN_STAGE`): the build context and
//! the stages the target needs, each one more SPDX statement after the image's, named
//! as BuildKit names their scans (`sbom-context`, `sbom-<stage>`) and in that order.

use super::{scan, ScanOptions};
use crate::attest::options::{scan_extras, ScanExtras};
use kiln_solver::llb::VertexRef;
use kiln_solver::pattern::PatternMatcher;
use kiln_solver::snapshot::layers::LayerStore;
use kiln_solver::snapshot::view::SnapshotView;
use kiln_solver::snapshot::Snapshot;
use miette::{IntoDiagnostic, Result, WrapErr};
use std::collections::BTreeMap;
use std::path::Path;

/// One platform's extra scans, planned at lowering: the context, and each stage's final
/// vertex (`None`: an empty `FROM scratch` stage).
#[derive(Debug, Clone, Default)]
pub struct ExtraScans {
    /// Whether the build context is scanned.
    pub context: bool,
    /// Stages by BuildKit name, sorted.
    pub stages: Vec<(String, Option<VertexRef>)>,
}

impl ExtraScans {
    /// The extra scans of one platform's lowered build; none without `--sbom`.
    pub fn plan(
        sbom: bool,
        build: &kiln_frontend::stages::Build,
        stage_vertices: &BTreeMap<usize, Option<VertexRef>>,
    ) -> ExtraScans {
        if !sbom {
            return ExtraScans::default();
        }
        let ScanExtras { context, stages } = scan_extras(build);
        ExtraScans {
            context,
            stages: stages
                .into_iter()
                .filter_map(|(name, i)| stage_vertices.get(&i).map(|v| (name, *v)))
                .collect(),
        }
    }

    /// The vertices to solve beside the targets, in order.
    pub fn vertices(&self) -> impl Iterator<Item = Option<VertexRef>> + '_ {
        self.stages.iter().map(|(_, v)| *v)
    }

    /// Each platform's plan with its solved stages: `snapshots` are the results of every
    /// plan's [`Self::vertices`], plans in order.
    pub fn solved<'a>(
        plans: impl Iterator<Item = &'a ExtraScans>,
        snapshots: Vec<Snapshot>,
    ) -> Vec<SolvedScans> {
        let mut snapshots = snapshots.into_iter();
        plans
            .map(|p| SolvedScans {
                context: p.context,
                stages: p
                    .stages
                    .iter()
                    .map(|(name, _)| {
                        (
                            name.clone(),
                            snapshots.next().unwrap_or_else(Snapshot::scratch),
                        )
                    })
                    .collect(),
            })
            .collect()
    }
}

/// One platform's extra scans, with each stage's filesystem.
#[derive(Debug, Clone, Default)]
pub struct SolvedScans {
    /// Whether the build context is scanned.
    pub context: bool,
    /// Stages by BuildKit name, sorted.
    pub stages: Vec<(String, Snapshot)>,
}

/// The build context on disk and its `.dockerignore`.
#[derive(Debug, Clone, Copy)]
pub struct ContextDir<'a> {
    /// Its root directory.
    pub root: &'a Path,
    /// What `.dockerignore` leaves out (left out of the scan too, as BuildKit scans the
    /// context it would send).
    pub ignore: &'a PatternMatcher,
}

/// The extra SPDX documents of one platform, by scan name (`sbom-context`,
/// `sbom-<stage>`), sorted as BuildKit lists the scan files. `base` carries the creation
/// time and limits; each document is named after its scan.
pub fn documents(
    scans: &SolvedScans,
    context: Option<ContextDir<'_>>,
    layers: &LayerStore,
    base: &ScanOptions,
) -> Result<Vec<(String, serde_json::Value)>> {
    let mut out = Vec::new();
    if let (true, Some(ctx)) = (scans.context, context) {
        let opts = ScanOptions {
            name: "sbom-context".to_string(),
            exclude: Some(ctx.ignore.clone()),
            ..base.clone()
        };
        let doc = scan(ctx.root, &opts)
            .into_diagnostic()
            .wrap_err("scanning the build context for its SBOM")?;
        out.push((opts.name, doc.to_spdx_json()));
    }
    for (stage, snapshot) in &scans.stages {
        let name = format!("sbom-{stage}");
        let view = SnapshotView::mount(layers, snapshot)
            .into_diagnostic()
            .wrap_err_with(|| format!("mounting stage {stage} for its SBOM"))?;
        let opts = ScanOptions {
            name: name.clone(),
            ..base.clone()
        };
        let doc = scan(view.path(), &opts)
            .into_diagnostic()
            .wrap_err_with(|| format!("scanning stage {stage} for its SBOM"))?;
        out.push((name, doc.to_spdx_json()));
    }
    // BuildKit reads the scans from a directory: by file name (`sbom-<name>.spdx.json`).
    out.sort_by_cached_key(|(name, _)| format!("{name}.spdx.json"));
    Ok(out)
}
