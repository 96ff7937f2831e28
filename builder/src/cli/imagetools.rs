//! `kiln imagetools inspect|create`: look at remote manifests and merge them into indexes.

use crate::registry_opts::registry_failure;
use crate::registry_opts::{runtime, RegistryArgs};
use crate::template::{GoTemplate, JsonStyle};
use kiln_oci::media_type::{is_index, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX};
use kiln_oci::{Descriptor, ImageIndex, Manifest, Platform};
use kiln_oci::{Digest, Reference};
use kiln_registry::progress::NoProgress;
use kiln_registry::remote::Remote;
use kiln_registry::RegistryClient;
use miette::{miette, IntoDiagnostic, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

mod load;

/// Arguments of `kiln imagetools`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

/// The imagetools verbs.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Show a remote image or index.
    Inspect(InspectArgs),
    /// Create (or extend) an index from images and indexes, copying blobs where needed.
    Create(CreateArgs),
}

/// Arguments of `kiln imagetools inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Remote reference.
    pub reference: String,
    /// Print the manifest bytes as served.
    #[arg(long, conflicts_with = "format")]
    pub raw: bool,
    /// A Go template as buildx's: `{{json .Manifest}}`, `{{json .Image}}`,
    /// `{{json .Provenance}}`, `{{json .SBOM}}` (per platform for an index of several
    /// images), `{{.Name}}`; `json` (or `{{json .}}`) for the whole document; `{{.Manifest}}`
    /// for the summary.
    #[arg(long)]
    pub format: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Arguments of `kiln imagetools create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Sources: images or indexes (any repository or registry).
    pub sources: Vec<String>,
    /// Name of the index to push. Repeatable.
    #[arg(short, long = "tag", required = true)]
    pub tags: Vec<String>,
    /// Add the manifests already at the first tag.
    #[arg(long)]
    pub append: bool,
    /// Annotation `KEY=VALUE` (or `index:KEY=VALUE`) for the index. Repeatable.
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Print the index instead of pushing it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `kiln imagetools`.
pub fn run(args: Args, _root: Option<&Path>) -> Result<ExitCode> {
    match args.command {
        Sub::Inspect(a) => inspect(a),
        Sub::Create(a) => create(a),
    }
}

fn parse_ref(s: &str) -> Result<Reference> {
    Reference::parse(s).into_diagnostic()
}

fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let r = parse_ref(&args.reference)?;
    let client = args.registry.client();
    let rt = runtime()?;
    let fetched = rt
        .block_on(client.get_manifest(&r))
        .map_err(registry_failure)?;
    if args.raw {
        use std::io::Write;
        let mut out = std::io::stdout();
        out.write_all(&fetched.bytes).into_diagnostic()?;
        let _ = out.flush();
        return Ok(ExitCode::SUCCESS);
    }
    let (m, mt) = Manifest::parse(
        &r.to_string(),
        &fetched.bytes,
        fetched.content_type.as_deref(),
    )
    .into_diagnostic()?;
    match args.format.as_deref().map(str::trim) {
        // buildx's default format prints the summary.
        None | Some("") => {}
        Some(f) if is_whole_manifest(f) => {}
        Some(f) => {
            let root = Descriptor::new(&mt, fetched.digest.clone(), fetched.bytes.len() as u64);
            let fields = template_fields(&args.reference, &root, &m);
            let whole = matches!(f, "json" | "{{json .}}");
            let want = load::Wanted {
                config: whole || f.contains("Image"),
                attestations: f.contains("Provenance") || f.contains("SBOM"),
            };
            let loaded = if want.config || want.attestations {
                rt.block_on(load::load(&client, &r, root, fetched.bytes, want))?
            } else {
                load::Loaded::default()
            };
            let text = render_format(f, fields, &loaded, want)?;
            println!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    print_summary(&r, &fetched.digest, &mt, m);
    Ok(ExitCode::SUCCESS)
}

/// Whether a format is buildx's default, `{{.Manifest}}`: the summary.
fn is_whole_manifest(format: &str) -> bool {
    format
        .strip_prefix("{{")
        .and_then(|f| f.strip_suffix("}}"))
        .is_some_and(|f| f.trim() == ".Manifest")
}

/// The fields every template gets, as buildx names them: `Name` (the reference as given),
/// `Manifest` (the descriptor of an image; an index with its own digest and size); kiln adds
/// `MediaType`, `Digest` and `Size`.
fn template_fields(name: &str, root: &Descriptor, m: &Manifest) -> serde_json::Map<String, Value> {
    let manifest = match m {
        Manifest::Image(_) => json!({
            "mediaType": root.media_type,
            "digest": root.digest.to_string(),
            "size": root.size,
        }),
        Manifest::Index(idx) => {
            let mut v = json!({
                "schemaVersion": idx.schema_version,
                "digest": root.digest.to_string(),
                "size": root.size,
                "manifests": idx.manifests,
            });
            if let Some(t) = &idx.media_type {
                v["mediaType"] = json!(t);
            }
            if let Some(a) = &idx.annotations {
                v["annotations"] = json!(a);
            }
            v
        }
    };
    let mut fields = serde_json::Map::new();
    fields.insert("Name".into(), json!(name));
    fields.insert("Manifest".into(), manifest);
    fields.insert("MediaType".into(), json!(root.media_type));
    fields.insert("Digest".into(), json!(root.digest.to_string()));
    fields.insert("Size".into(), json!(root.size));
    fields
}

/// Renders a `--format`: `json` and `{{json .}}` print buildx's document (`name`, `manifest`,
/// `image`); anything else is a Go template over the fields, `.Image`, `.Provenance` and
/// `.SBOM` (per platform for an index of several images), with buildx's indented `json`.
fn render_format(
    format: &str,
    mut fields: serde_json::Map<String, Value>,
    loaded: &load::Loaded,
    want: load::Wanted,
) -> Result<String> {
    if want.config {
        fields.insert("Image".into(), loaded.image());
    }
    if matches!(format, "json" | "{{json .}}") {
        let mut doc = serde_json::Map::new();
        doc.insert("name".into(), fields["Name"].clone());
        doc.insert("manifest".into(), fields["Manifest"].clone());
        if !loaded.images.is_empty() {
            doc.insert("image".into(), fields["Image"].clone());
        }
        return Ok(crate::template::go_json_indented(&Value::Object(doc)));
    }
    if want.attestations {
        fields.insert("Provenance".into(), loaded.provenance());
        fields.insert("SBOM".into(), loaded.sbom());
    }
    let template = GoTemplate::parse(format, JsonStyle::Indented)?;
    Ok(template.render(&Value::Object(fields))?)
}

/// The summary (no `--format`): the reference, and an index's entries with their platform
/// and annotations (attestation manifests show as `unknown/unknown` naming their image).
fn print_summary(r: &Reference, digest: &Digest, mt: &str, m: Manifest) {
    println!("{:<10} {}", "Name:", r);
    println!("{:<10} {}", "MediaType:", mt);
    println!("{:<10} {}", "Digest:", digest);
    match m {
        Manifest::Index(idx) => {
            println!();
            println!("Manifests:");
            for d in &idx.manifests {
                println!("  {:<10} {}@{}", "Name:", r.name(), d.digest);
                println!("  {:<10} {}", "MediaType:", d.media_type);
                if let Some(p) = &d.platform {
                    println!("  {:<10} {}", "Platform:", p);
                }
                if let Some(a) = &d.annotations {
                    println!("  Annotations:");
                    for (k, v) in a {
                        println!("    {k}: {v}");
                    }
                }
                println!();
            }
        }
        Manifest::Image(m) => {
            println!();
            println!(
                "{:<10} {} ({})",
                "Config:", m.config.digest, m.config.media_type
            );
            println!("Layers:");
            for l in &m.layers {
                println!("  {} {} {}", l.digest, l.size, l.media_type);
            }
        }
    }
}

/// The platform of a single-image manifest, from its config.
async fn platform_of(
    client: &RegistryClient,
    r: &Reference,
    m: &kiln_oci::ImageManifest,
) -> Result<Option<Platform>> {
    let tmp = tempfile::tempdir().into_diagnostic()?;
    let path = tmp.path().join("config");
    client
        .fetch_blob(r, &m.config, &path, &|_| {})
        .await
        .into_diagnostic()?;
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).into_diagnostic()?).into_diagnostic()?;
    let (Some(os), Some(arch)) = (cfg["os"].as_str(), cfg["architecture"].as_str()) else {
        return Ok(None);
    };
    Ok(Some(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant: cfg["variant"].as_str().map(str::to_string),
        ..Default::default()
    }))
}

/// One manifest that goes into the new index, with where it comes from.
struct Entry {
    source: Reference,
    descriptor: Descriptor,
    bytes: Vec<u8>,
}

async fn collect(client: &RegistryClient, r: &Reference, out: &mut Vec<Entry>) -> Result<()> {
    let f = client.get_manifest(r).await.map_err(registry_failure)?;
    let (m, mt) =
        Manifest::parse(&r.to_string(), &f.bytes, f.content_type.as_deref()).into_diagnostic()?;
    match m {
        Manifest::Index(idx) => {
            for d in idx.manifests {
                let c = client
                    .get_manifest_as(r, d.digest.as_ref())
                    .await
                    .map_err(registry_failure)?;
                out.push(Entry {
                    source: r.clone(),
                    descriptor: d,
                    bytes: c.bytes,
                });
            }
        }
        Manifest::Image(m) => {
            let mut d = Descriptor::of(&mt, &f.bytes);
            d.platform = platform_of(client, r, &m).await?;
            out.push(Entry {
                source: r.clone(),
                descriptor: d,
                bytes: f.bytes,
            });
        }
    }
    Ok(())
}

/// Makes sure `target`'s repository has the manifest of `e` and its blobs: a copy of that
/// image (the one walk of its source repository), mounting blobs within one registry, with
/// the referrers and cosign signatures of that manifest.
async fn copy_into(
    client: &RegistryClient,
    e: &Entry,
    target: &Reference,
    staging: &Path,
    concurrency: usize,
) -> Result<()> {
    if e.source.registry() == target.registry() && e.source.repository() == target.repository() {
        return Ok(());
    }
    if is_index(&e.descriptor.media_type) {
        return Err(miette!("{}: nested indexes are not supported", e.source));
    }
    let source = Remote::new(client.clone(), &e.source, tokio::runtime::Handle::current());
    source
        .remember(&e.descriptor.digest, &e.bytes)
        .map_err(registry_failure)?;
    kiln_registry::copy::copy_root(
        &source,
        &e.descriptor,
        &target.with_digest(e.descriptor.digest.clone()),
        staging,
        concurrency,
        &NoProgress,
    )
    .await
    .map_err(registry_failure)?;
    // Attestations pushed as referrers (`referrers=true`) and signatures refer to the image
    // by digest, which the copy keeps: they still hold in the new repository.
    kiln_registry::copy::copy_referrers(
        client,
        &e.source,
        target,
        &e.descriptor.digest,
        &staging.join("referrers"),
    )
    .await
    .map_err(registry_failure)?;
    crate::signature::transfer::copy_signatures(client, &e.source, target, &e.descriptor.digest)
        .await
        .map_err(registry_failure)?;
    Ok(())
}

/// Refuses two entries for one platform: a client pulling the index would only ever get the first.
fn check_unique_platforms(entries: &[Entry]) -> Result<()> {
    // Attestation manifests (`unknown/unknown`, one per image) name their image instead.
    let is_attestation = |e: &&Entry| {
        e.descriptor
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::attest::store::REFERENCE_TYPE))
            .is_some_and(|t| t == crate::attest::store::ATTESTATION_MANIFEST)
    };
    let Some(dup) = kiln_oci::manifest::duplicate_platform(
        entries
            .iter()
            .filter(|e| !is_attestation(e))
            .filter_map(|e| e.descriptor.platform.as_ref()),
    ) else {
        return Ok(());
    };
    let from: Vec<String> = entries
        .iter()
        .filter(|e| {
            e.descriptor
                .platform
                .as_ref()
                .is_some_and(|p| dup.matches(p))
        })
        .map(|e| format!("{} ({})", e.source, e.descriptor.digest))
        .collect();
    Err(miette!(
        "two images for platform {dup}: {}; an index lists each platform once",
        from.join(" and ")
    ))
}

fn create(args: CreateArgs) -> Result<ExitCode> {
    let targets: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| parse_ref(t))
        .collect::<Result<_>>()?;
    let first = targets
        .first()
        .ok_or_else(|| miette!("at least one --tag is required"))?
        .clone();
    let mut sources: Vec<Reference> = args
        .sources
        .iter()
        .map(|s| parse_ref(s))
        .collect::<Result<_>>()?;
    if args.append {
        sources.insert(0, first.clone());
    }
    if sources.is_empty() {
        return Err(miette!("no source images given"));
    }
    let mut index_annotations = BTreeMap::new();
    for a in &args.annotations {
        let a = a.strip_prefix("index:").unwrap_or(a);
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| miette!("bad --annotation {a:?}: expected KEY=VALUE"))?;
        if k.contains(':') && !k.contains('.') {
            return Err(miette!(
                "unsupported annotation target in {a:?} (only index annotations are supported)"
            ));
        }
        index_annotations.insert(k.to_string(), v.to_string());
    }
    let client = args.registry.client();
    let rt = runtime()?;
    let mut entries = Vec::new();
    for s in &sources {
        rt.block_on(collect(&client, s, &mut entries))?;
    }
    // One entry per digest, first wins.
    let mut seen = std::collections::BTreeSet::<Digest>::new();
    entries.retain(|e| seen.insert(e.descriptor.digest.clone()));
    check_unique_platforms(&entries)?;
    let all_docker = entries
        .iter()
        .all(|e| e.descriptor.media_type == DOCKER_MANIFEST);
    let index_type = if all_docker && index_annotations.is_empty() {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let index = ImageIndex {
        annotations: (!index_annotations.is_empty()).then_some(index_annotations),
        ..ImageIndex::new(
            index_type,
            entries.iter().map(|e| e.descriptor.clone()).collect(),
        )
    };
    let media_type = index
        .media_type
        .clone()
        .unwrap_or_else(|| OCI_INDEX.to_string());
    let bytes = serde_json::to_vec_pretty(&index).into_diagnostic()?;
    if args.dry_run {
        println!("{}", String::from_utf8_lossy(&bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let staging = tempfile::tempdir().into_diagnostic()?;
    for t in &targets {
        for (i, e) in entries.iter().enumerate() {
            let dir = staging.path().join(format!("{i}"));
            rt.block_on(copy_into(&client, e, t, &dir, args.registry.concurrency()))?;
        }
        let d = rt
            .block_on(client.put_manifest(t, &bytes, &media_type))
            .into_diagnostic()?;
        println!("{t}@{d}");
    }
    debug_assert!(is_index(&media_type));
    Ok(ExitCode::SUCCESS)
}
