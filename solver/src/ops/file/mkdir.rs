//! Mkdir: WORKDIR and explicit directories.

use std::fs;
use std::io;
use std::path::Path;

use super::chown::resolve_owner;
use super::error::FileOpError;
use super::meta::{chmod, lchown, lutimes, mkdir_all, Time};
use super::resolve::resolve_in_root;
use crate::llb::MkdirAction;

/// Creates the directory; an existing one is left as it is.
pub(crate) fn apply_mkdir(
    dest_root: &Path,
    users_root: &Path,
    a: &MkdirAction,
) -> Result<(), FileOpError> {
    let shown = a.path.as_str();
    let owner = a
        .owner
        .as_ref()
        .map(|o| resolve_owner(users_root, o))
        .transpose()?;
    let p = resolve_in_root(dest_root, &a.path, true).map_err(FileOpError::io("stat", shown))?;
    if a.make_parents {
        return mkdir_all(dest_root, &p.rel, a.mode & 0o7777, owner, a.timestamp);
    }
    match fs::create_dir(&p.host) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(FileOpError::io("mkdir", shown)(e)),
    }
    chmod(&p.host, a.mode).map_err(FileOpError::io("chmod", shown))?;
    if let Some(owner) = owner {
        lchown(&p.host, owner).map_err(FileOpError::io("chown", shown))?;
    }
    if let Some(t) = a.timestamp {
        lutimes(&p.host, Time::from_secs(t), Time::from_secs(t))
            .map_err(FileOpError::io("utimes", shown))?;
    }
    Ok(())
}
