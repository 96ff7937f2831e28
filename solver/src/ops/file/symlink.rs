//! Symlink: creating a link (its target is stored as written).

use std::path::Path;

use super::chown::resolve_owner;
use super::error::FileOpError;
use super::meta::{lchown, lutimes, Time};
use super::resolve::{resolve_in_root, split_last};
use crate::llb::SymlinkAction;

/// Creates the link at `path` (its parent resolved inside the root).
pub(crate) fn apply_symlink(
    dest_root: &Path,
    users_root: &Path,
    a: &SymlinkAction,
) -> Result<(), FileOpError> {
    let shown = a.path.as_str();
    let owner = a
        .owner
        .as_ref()
        .map(|o| resolve_owner(users_root, o))
        .transpose()?;
    let (parent, base) = split_last(&a.path).ok_or_else(|| FileOpError::Io {
        op: "symlink",
        path: shown.to_string(),
        source: std::io::Error::from_raw_os_error(libc::EEXIST),
    })?;
    let dir =
        resolve_in_root(dest_root, &parent, true).map_err(FileOpError::io("symlink", shown))?;
    let link = dir.host.join(base);
    std::os::unix::fs::symlink(&a.target, &link).map_err(FileOpError::io("symlink", shown))?;
    if let Some(owner) = owner {
        lchown(&link, owner).map_err(FileOpError::io("chown", shown))?;
    }
    if let Some(t) = a.timestamp {
        lutimes(&link, Time::from_secs(t), Time::from_secs(t))
            .map_err(FileOpError::io("utimes", shown))?;
    }
    Ok(())
}
