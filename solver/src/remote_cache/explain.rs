//! Why a step missed an imported cache: which part of its key differs from the imported
//! record of the same step (same description, else same op). The wording names what a
//! Dockerfile author changes: the command, the environment or build args, the base image,
//! the files a COPY reads, an earlier step.

use super::import::ImportedCache;
use crate::cache::{InputKey, KeyParts};
use crate::llb::Op;

/// The step that missed.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Its description (`[build 3/5] COPY src/ /src`).
    pub description: &'a str,
    /// Its op.
    pub op: &'a Op,
    /// What its key was made of in this build.
    pub parts: &'a KeyParts,
    /// Its inputs' descriptions, in input order.
    pub inputs: &'a [String],
}

/// Why `step` found no record in `imported`: the differences from the closest imported
/// record of the same step, or that there is none.
pub fn explain_miss(step: &Step<'_>, imported: &ImportedCache) -> String {
    let candidates = imported.candidates(step.description, step.parts);
    let closest = candidates
        .iter()
        .filter_map(|r| r.parts.as_ref())
        .map(|old| differences(step, old))
        .min_by_key(Vec::len);
    match closest {
        None if candidates.is_empty() => "no record of this step in the imported cache".into(),
        None => "the imported record of this step does not say what its key was made of".into(),
        Some(d) if d.is_empty() => {
            "its cache key differs from the imported record's (another kiln version?)".into()
        }
        Some(d) => d.join("; "),
    }
}

/// Each part of `step`'s key that differs from `old`, most telling first.
fn differences(step: &Step<'_>, old: &KeyParts) -> Vec<String> {
    let new = step.parts;
    let mut out = Vec::new();
    if new.pin != old.pin {
        out.push(match (&old.pin, &new.pin) {
            (Some(o), Some(n)) => format!("the base image changed from {o} to {n}"),
            _ => "the source's pinned version changed".into(),
        });
    }
    if new.op != old.op {
        let args = new.args != old.args;
        let env = new.env != old.env;
        if args {
            out.push("the command changed".into());
        }
        if env {
            out.push("the environment (ENV or build args) changed".into());
        }
        // A changed pin is a changed source identifier: said already.
        if !args && !env && new.pin == old.pin {
            out.push("the step's definition changed".into());
        }
    }
    if new.inputs.len() != old.inputs.len() {
        out.push(format!(
            "it has {} inputs, the imported record {}",
            new.inputs.len(),
            old.inputs.len()
        ));
        return out;
    }
    for (i, (n, o)) in new.inputs.iter().zip(&old.inputs).enumerate() {
        if n == o {
            continue;
        }
        let input = step
            .inputs
            .get(i)
            .map_or_else(|| format!("input {i}"), |d| input_name(d));
        out.push(match (n, o) {
            (InputKey::Content(_), InputKey::Content(_)) => {
                format!("the files {} reads from {input} changed", reader(step.op))
            }
            (InputKey::Key(_), InputKey::Key(_)) => format!("{input} was rebuilt"),
            _ => format!("{input} is keyed otherwise than in the imported record"),
        });
    }
    out
}

/// An input as a sentence names it: the build context by that name, a step by its
/// description.
fn input_name(description: &str) -> String {
    match description.strip_prefix("[internal] load build context") {
        Some("") => "the build context".into(),
        Some(name) => format!("the build context{name}"),
        None => description.to_string(),
    }
}

/// What reads selected files of an input, as the Dockerfile says it.
fn reader(op: &Op) -> &'static str {
    match op {
        Op::Exec(_) => "RUN --mount",
        _ => "COPY",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheKey, ContentChecksum};
    use crate::llb::{ExecMeta, ExecOp, FileOp, Mount, NetworkMode, SecurityMode};
    use crate::remote_cache::format::{CacheConfig, CacheRecord, KilnCache, FORMAT_VERSION};

    fn parts(op: u8, args: u8, env: u8, pin: Option<&str>, inputs: Vec<InputKey>) -> KeyParts {
        KeyParts {
            op: op.to_string(),
            args: Some(args.to_string()),
            env: Some(env.to_string()),
            pin: pin.map(str::to_string),
            inputs,
        }
    }

    fn imported(records: Vec<(&str, KeyParts)>) -> ImportedCache {
        let mut c = ImportedCache::default();
        c.add(
            0,
            &CacheConfig::new(KilnCache {
                version: FORMAT_VERSION,
                blobs: vec![],
                records: records
                    .into_iter()
                    .enumerate()
                    .map(|(i, (d, p))| CacheRecord {
                        key: CacheKey([i as u8; 32]),
                        layers: vec![],
                        description: d.into(),
                        created_at: 0,
                        checksums: vec![],
                        parts: Some(p),
                    })
                    .collect(),
                mounts: vec![],
            }),
        );
        c
    }

    fn explain(description: &str, op: &Op, now: &KeyParts, cache: &ImportedCache) -> String {
        let inputs = [
            "[base 1/1] FROM alpine".to_string(),
            "[internal] load build context".to_string(),
        ];
        let step = Step {
            description,
            op,
            parts: now,
            inputs: &inputs,
        };
        explain_miss(&step, cache)
    }

    fn run() -> Op {
        Op::Exec(ExecOp {
            meta: ExecMeta::default(),
            mounts: vec![Mount::root()],
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            secret_env: vec![],
        })
    }

    fn copy() -> Op {
        Op::File(FileOp {
            base: Some(0),
            users: None,
            actions: vec![],
        })
    }

    const K1: InputKey = InputKey::Key(CacheKey([1; 32]));
    const K2: InputKey = InputKey::Key(CacheKey([2; 32]));
    const C1: InputKey = InputKey::Content(ContentChecksum([1; 32]));
    const C2: InputKey = InputKey::Content(ContentChecksum([2; 32]));

    #[test]
    fn each_part_that_differs_is_named() {
        let (run, copy) = (run(), copy());
        let cache = imported(vec![
            ("RUN make", parts(1, 1, 1, None, vec![K1])),
            ("COPY src /src", parts(2, 0, 0, None, vec![K1, C1])),
            ("FROM alpine", parts(3, 0, 0, Some("sha256:aaa"), vec![])),
        ]);
        let e = |d: &str, op: &Op, p: KeyParts| explain(d, op, &p, &cache);
        assert_eq!(
            e("RUN make", &run, parts(9, 2, 1, None, vec![K1])),
            "the command changed"
        );
        assert_eq!(
            e("RUN make", &run, parts(9, 1, 2, None, vec![K1])),
            "the environment (ENV or build args) changed"
        );
        assert_eq!(
            e("RUN make", &run, parts(1, 1, 1, None, vec![K2])),
            "[base 1/1] FROM alpine was rebuilt"
        );
        assert_eq!(
            e("COPY src /src", &copy, parts(2, 0, 0, None, vec![K1, C2])),
            "the files COPY reads from the build context changed"
        );
        assert_eq!(
            e(
                "FROM alpine",
                &copy,
                parts(8, 0, 0, Some("sha256:bbb"), vec![])
            ),
            "the base image changed from sha256:aaa to sha256:bbb"
        );
        assert_eq!(
            e("RUN other", &run, parts(7, 1, 1, None, vec![K2])),
            "no record of this step in the imported cache"
        );
        // A new step where the imported build had another: compared with that one.
        assert_eq!(
            e("RUN other", &run, parts(7, 3, 1, None, vec![K1])),
            "the command changed"
        );
        // A RUN whose command changed is described otherwise: found by its inputs.
        assert_eq!(
            e("RUN make -j4", &run, parts(9, 2, 1, None, vec![K1])),
            "the command changed"
        );
        // Another description but the same op: compared all the same.
        assert_eq!(
            e("[stage 2/3] RUN make", &run, parts(1, 1, 1, None, vec![K2])),
            "[base 1/1] FROM alpine was rebuilt"
        );
        assert_eq!(
            e("RUN make", &run, parts(9, 2, 2, None, vec![K2])),
            "the command changed; the environment (ENV or build args) changed; \
             [base 1/1] FROM alpine was rebuilt"
        );
    }

    #[test]
    fn the_closest_imported_record_is_the_one_explained() {
        let run = run();
        // Two records of the step (two sources, or a max cache of several builds).
        let cache = imported(vec![
            ("RUN make", parts(5, 5, 5, None, vec![K2])),
            ("RUN make", parts(1, 1, 1, None, vec![K1])),
        ]);
        assert_eq!(
            explain("RUN make", &run, &parts(1, 1, 1, None, vec![K2]), &cache),
            "[base 1/1] FROM alpine was rebuilt"
        );
    }
}
