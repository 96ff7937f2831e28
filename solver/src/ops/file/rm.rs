//! Rm: removing paths (never following a symlink in the last component).

use std::fs;
use std::io;
use std::path::Path;

use super::error::FileOpError;
use super::resolve::{resolve_in_root, split_last};
use super::wildcard::expand;
use crate::llb::RmAction;

/// Removes the path (recursively for directories), or each wildcard match.
pub(crate) fn apply_rm(dest_root: &Path, a: &RmAction) -> Result<(), FileOpError> {
    let paths = if a.allow_wildcard {
        expand(dest_root, &a.path, None)?
    } else {
        vec![a.path.clone()]
    };
    if paths.is_empty() && !a.allow_not_found {
        return Err(FileOpError::RmNotFound {
            path: a.path.clone(),
        });
    }
    for path in paths {
        let Some((parent, base)) = split_last(&path) else {
            return Err(FileOpError::RmRoot { path });
        };
        let dir =
            resolve_in_root(dest_root, &parent, true).map_err(FileOpError::io("rm", &path))?;
        let target = dir.host.join(&base);
        let result = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&target),
            Ok(_) => fs::remove_file(&target),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && a.allow_not_found => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FileOpError::RmNotFound { path })
            }
            Err(e) => return Err(FileOpError::io("rm", path)(e)),
        }
    }
    Ok(())
}
