//! Mkfile: a file with given contents (heredocs, generated files).

use std::fs;
use std::path::Path;

use super::chown::resolve_owner;
use super::error::FileOpError;
use super::meta::{chmod, lchown, lutimes, Time};
use super::resolve::resolve_in_root;
use crate::llb::MkfileAction;

/// Writes the file (following a symlink at `path` inside the root); its
/// parent must exist.
pub(crate) fn apply_mkfile(
    dest_root: &Path,
    users_root: &Path,
    a: &MkfileAction,
) -> Result<(), FileOpError> {
    let shown = a.path.as_str();
    let owner = a
        .owner
        .as_ref()
        .map(|o| resolve_owner(users_root, o))
        .transpose()?;
    let p = resolve_in_root(dest_root, &a.path, true).map_err(FileOpError::io("stat", shown))?;
    fs::write(&p.host, &a.data).map_err(FileOpError::io("mkfile", shown))?;
    if let Some(owner) = owner {
        lchown(&p.host, owner).map_err(FileOpError::io("chown", shown))?;
    }
    chmod(&p.host, a.mode).map_err(FileOpError::io("chmod", shown))?;
    if let Some(t) = a.timestamp {
        lutimes(&p.host, Time::from_secs(t), Time::from_secs(t))
            .map_err(FileOpError::io("utimes", shown))?;
    }
    Ok(())
}
