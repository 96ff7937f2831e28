//! The order targets build in: a target after those its `target:` contexts name.

use super::error::{definition, BakeError};
use super::resolve::Definition;

/// Targets in waves: each wave's targets depend only on earlier waves (independent ones can
/// build together). A cycle of links is an error naming it.
pub fn build_order(def: &Definition) -> Result<Vec<Vec<String>>, BakeError> {
    let mut done: Vec<String> = Vec::new();
    let mut waves = Vec::new();
    while done.len() < def.targets.len() {
        let wave: Vec<String> = def
            .targets
            .iter()
            .filter(|(n, _)| !done.contains(n))
            .filter(|(_, t)| {
                t.linked_targets()
                    .all(|(_, dep)| done.iter().any(|d| d == dep))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if wave.is_empty() {
            let stuck: Vec<&String> = def.targets.keys().filter(|n| !done.contains(n)).collect();
            return Err(definition(format!(
                "infinite loop: the targets {} link to each other through target: contexts",
                stuck
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        done.extend(wave.iter().cloned());
        waves.push(wave);
    }
    Ok(waves)
}
