//! Keys ahead of the solve: with a worker that [`Worker::looks_ahead`], every key is
//! computed before anything runs, so a step whose result the cache holds is loaded
//! without solving the steps below it that the cache does not hold (BuildKit finds a
//! `mode=min` cache's final stage without running the stages it copies from). Only keys
//! that need no result are computed here: an input keyed by the content of a result
//! other than a local context leaves its users to the normal path.

use std::collections::{HashMap, HashSet};

use super::Worker;
use crate::cache::Selector;
use crate::cache::{input_selectors, reads_only_users, vertex_cache_key, CacheKey, InputKey};
use crate::llb::{Definition, VertexRef};

/// A key computed ahead, with what it was made of.
#[derive(Debug, Clone)]
pub(super) struct Ahead {
    /// The vertex's pin.
    pub pin: Option<String>,
    /// What each input contributes.
    pub input_keys: Vec<InputKey>,
    /// The key.
    pub key: CacheKey,
}

/// What a solve runs.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// The vertices solved, in topological order.
    pub solve: Vec<VertexRef>,
    /// Those loaded from the cache without their inputs (some of which are not solved).
    pub alone: HashSet<VertexRef>,
    /// Keys computed ahead.
    pub ahead: HashMap<VertexRef, Ahead>,
}

impl Plan {
    /// Everything `needed` is solved, each vertex after its inputs.
    pub fn all(needed: Vec<VertexRef>) -> Plan {
        Plan {
            solve: needed,
            ..Plan::default()
        }
    }
}

/// The plan for `targets`: from each target down, a vertex the cache holds needs only the
/// inputs the cache holds too (loaded, so their results stay available); the others need
/// all their inputs.
pub(super) async fn plan<W: Worker>(
    worker: &W,
    def: &Definition,
    targets: &[VertexRef],
    needed: &[VertexRef],
) -> Plan {
    // A step the cache is off for changes what is above it: no shortcut then.
    let ignoring = needed
        .iter()
        .filter_map(|r| def.vertex(*r))
        .any(|v| v.metadata().ignore_cache);
    if ignoring {
        return Plan::all(needed.to_vec());
    }
    let ahead = keys(worker, def, needed).await;
    let recorded: HashSet<VertexRef> = ahead
        .iter()
        .filter(|(r, a)| {
            def.vertex(**r)
                .is_some_and(|v| worker.has_record(&a.key, v))
        })
        .map(|(r, _)| *r)
        .collect();
    let mut solve = HashSet::new();
    let mut alone = HashSet::new();
    let mut stack = targets.to_vec();
    while let Some(r) = stack.pop() {
        if !solve.insert(r) {
            continue;
        }
        let Some(v) = def.vertex(r) else { continue };
        let unrecorded = v.inputs().iter().any(|i| !recorded.contains(i));
        if recorded.contains(&r) && unrecorded {
            alone.insert(r);
            stack.extend(v.inputs().iter().filter(|i| recorded.contains(i)));
        } else {
            stack.extend(v.inputs());
        }
    }
    tracing::debug!(
        needed = needed.len(),
        solved = solve.len(),
        alone = alone.len(),
        "keys ahead"
    );
    Plan {
        solve: needed
            .iter()
            .copied()
            .filter(|r| solve.contains(r))
            .collect(),
        alone,
        ahead,
    }
}

/// The keys of `needed` (in topological order) that can be computed without solving
/// anything but local contexts. A failure (a pin, a checksum) leaves the key out: the
/// normal path meets it again and reports it.
async fn keys<W: Worker>(
    worker: &W,
    def: &Definition,
    needed: &[VertexRef],
) -> HashMap<VertexRef, Ahead> {
    let mut out: HashMap<VertexRef, Ahead> = HashMap::new();
    let mut loaded: HashMap<VertexRef, Option<W::Output>> = HashMap::new();
    for r in needed {
        let Some(v) = def.vertex(*r) else { continue };
        let Ok(pin) = worker.pin(v).await else {
            continue;
        };
        let mut input_keys = Vec::with_capacity(v.inputs().len());
        for (index, i) in v.inputs().iter().enumerate() {
            let (Some(iv), Some(ia)) = (def.vertex(*i), out.get(i)) else {
                break;
            };
            // As `input_keys` decides, with only a local context's content at hand.
            let content = worker.content_keyed(iv);
            let selectors = match input_selectors(v.op(), index) {
                Some(sel)
                    if worker.selects_by_content(iv)
                        || content
                        || reads_only_users(v.op(), index) =>
                {
                    Some(sel)
                }
                _ if content => Some(vec![Selector::path("")]),
                _ => None,
            };
            let ik = match selectors {
                None => InputKey::Key(ia.key),
                Some(sel) if content => {
                    if !loaded.contains_key(i) {
                        let output = worker.cache_load(&ia.key, iv).await.ok().flatten();
                        loaded.insert(*i, output);
                    }
                    let Some(Some(output)) = loaded.get(i) else {
                        break;
                    };
                    match worker.checksum(output, &sel).await {
                        Ok(c) => InputKey::Content(c),
                        Err(_) => break,
                    }
                }
                Some(_) => break,
            };
            input_keys.push(ik);
        }
        if input_keys.len() == v.inputs().len() {
            let key = vertex_cache_key(v, pin.as_deref(), &input_keys);
            out.insert(
                *r,
                Ahead {
                    pin,
                    input_keys,
                    key,
                },
            );
        }
    }
    out
}
