//! Which bake files to read (buildx's default names, or `-f`) and how each is read.

use super::error::{definition, BakeError};
use super::eval::{self, HclFile, Inputs};
use super::target::Config;
use std::path::Path;

/// The files looked for when no `-f` is given, in buildx's order (compose's default names,
/// then bake's); all that exist are read and merged, later ones overriding.
pub const DEFAULT_FILES: [&str; 8] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// The largest bake file read.
const MAX_FILE: u64 = 16 << 20;

/// Every file's targets and groups, merged, and the variables of the HCL and JSON files.
pub struct Loaded {
    /// The merged definition.
    pub config: Config,
    /// Variables, for `--list=variables`.
    pub variables: Vec<eval::VariableInfo>,
}

/// `dir/.env` as compose reads it (none when there is no such file).
fn read_dotenv(dir: &Path) -> Result<std::collections::HashMap<String, String>, BakeError> {
    let path = dir.join(".env");
    if !path.is_file() {
        return Ok(Default::default());
    }
    let bad = |e: dotenvy::Error| BakeError::Read {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    };
    dotenvy::from_path_iter(&path)
        .map_err(bad)?
        .map(|item| item.map_err(bad))
        .collect()
}

/// Reads the named files (`-` is stdin), or the default ones found in `dir`.
pub fn load(names: &[String], dir: &Path, inputs: &Inputs<'_>) -> Result<Loaded, BakeError> {
    let mut files: Vec<(String, String)> = Vec::new();
    if names.is_empty() {
        for n in DEFAULT_FILES {
            let p = dir.join(n);
            if p.is_file() {
                files.push((n.to_string(), read(&p, n)?));
            }
        }
        if files.is_empty() {
            return Err(BakeError::NoFiles(DEFAULT_FILES.join(", ")));
        }
    } else {
        for n in names {
            let text = if n == "-" {
                let mut s = String::new();
                use std::io::Read;
                std::io::stdin()
                    .take(MAX_FILE)
                    .read_to_string(&mut s)
                    .map_err(|source| BakeError::Read {
                        path: n.clone(),
                        source,
                    })?;
                s
            } else {
                read(&dir.join(n), n)?
            };
            files.push((n.clone(), text));
        }
    }
    let mut config = Config::default();
    let mut hcl = Vec::new();
    for (name, text) in files {
        match format_of(&name, &text) {
            Format::Compose => {
                // Compose files also see `.env` of the working directory; the environment
                // wins (buildx's `composeEnv`).
                let dotenv = read_dotenv(dir)?;
                let env = |k: &str| (inputs.env)(k).or_else(|| dotenv.get(k).cloned());
                merge(&mut config, super::compose::parse(&name, &text, &env)?)
            }
            Format::Json => hcl.push(HclFile::from_json(&name, text)?),
            Format::Hcl => hcl.push(HclFile::parse(&name, text)?),
        }
    }
    let evaluated = eval::evaluate(&hcl, inputs)?;
    merge(&mut config, evaluated.config);
    Ok(Loaded {
        config,
        variables: evaluated.variables,
    })
}

fn read(p: &Path, name: &str) -> Result<String, BakeError> {
    let meta = std::fs::metadata(p).map_err(|source| BakeError::Read {
        path: name.into(),
        source,
    })?;
    if meta.len() > MAX_FILE {
        return Err(definition(format!(
            "{name}: larger than {} MiB",
            MAX_FILE >> 20
        )));
    }
    std::fs::read_to_string(p).map_err(|source| BakeError::Read {
        path: name.into(),
        source,
    })
}

enum Format {
    Compose,
    Json,
    Hcl,
}

/// By extension as buildx does; else JSON when it looks like JSON, compose when it has
/// `services:`, else HCL.
fn format_of(name: &str, text: &str) -> Format {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        Format::Compose
    } else if lower.ends_with(".json") {
        Format::Json
    } else if lower.ends_with(".hcl") {
        Format::Hcl
    } else if text.trim_start().starts_with('{') {
        Format::Json
    } else if text.lines().any(|l| l.starts_with("services:")) {
        Format::Compose
    } else {
        Format::Hcl
    }
}

fn merge(into: &mut Config, from: Config) {
    for (name, g) in from.groups {
        into.add_group(name, g);
    }
    for (name, t) in from.targets {
        into.add_target(name, t);
    }
}
