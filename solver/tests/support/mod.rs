//! What the solver's integration tests share.
#![allow(dead_code)] // Each test file uses a different part of this module.

pub mod net;

use std::path::Path;

/// Mount points at or below `dir` in this process' mount namespace (the tests
/// run steps in it, so a leftover mount of a step shows here).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}
