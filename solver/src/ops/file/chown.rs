//! `--chown`: `user[:group]` with names looked up in the DESTINATION root's
//! `/etc/passwd` and `/etc/group`, numeric ids used as they are.

use std::path::Path;

use super::error::FileOpError;
use super::resolve::resolve_in_root;
use crate::llb::{ChownOpt, UserSpec};

/// Numeric owner of created files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn spec(text: &str) -> UserSpec {
    match text.parse::<u32>() {
        Ok(id) => UserSpec::Id(id),
        Err(_) => UserSpec::Name(text.to_string()),
    }
}

/// Parses `user`, `user:group`, `uid`, `uid:gid` (mixed forms too).
pub fn parse_chown(value: &str) -> Result<ChownOpt, FileOpError> {
    let bad = |reason| FileOpError::Chown {
        value: value.to_string(),
        reason,
    };
    let (user, group) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    if user.is_empty() {
        return Err(bad("the user is empty"));
    }
    if group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(bad("the group is empty or has a ':'"));
    }
    Ok(ChownOpt {
        user: spec(user),
        group: group.map(spec),
    })
}

/// One `name:x:id:...` line's name and numeric fields.
fn lookup(root: &Path, file: &str, name: &str) -> Option<Vec<u32>> {
    let path = resolve_in_root(root, file, true).ok()?.host;
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .map(|f| f.iter().skip(2).map_while(|x| x.parse().ok()).collect())
}

/// Resolves `opt` against `dest_root`: a user alone gets its primary group
/// (a numeric user alone, the same number as gid). As BuildKit (readUser), a
/// name missing from the files (or files missing) is not an error: an
/// unknown user is 0 with group 0, an unknown group keeps the user's group.
pub fn resolve_owner(dest_root: &Path, opt: &ChownOpt) -> Result<Owner, FileOpError> {
    let (uid, primary) = match &opt.user {
        UserSpec::Id(id) => (*id, *id),
        UserSpec::Name(name) => match name.parse::<u32>() {
            Ok(id) => (id, id),
            Err(_) => {
                let fields = lookup(dest_root, "/etc/passwd", name).unwrap_or_default();
                match (fields.first(), fields.get(1)) {
                    (Some(uid), Some(gid)) => (*uid, *gid),
                    _ => (0, 0),
                }
            }
        },
    };
    let gid = match &opt.group {
        None => primary,
        Some(UserSpec::Id(id)) => *id,
        Some(UserSpec::Name(name)) => match name.parse::<u32>() {
            Ok(id) => id,
            Err(_) => lookup(dest_root, "/etc/group", name)
                .and_then(|f| f.first().copied())
                .unwrap_or(primary),
        },
    };
    Ok(Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nstaff:x:50:app\n",
        )
        .unwrap();
        d
    }

    fn own(root: &Path, s: &str) -> Result<Owner, FileOpError> {
        resolve_owner(root, &parse_chown(s).unwrap())
    }

    #[test]
    fn names_ids_and_defaults() {
        let r = root();
        let r = r.path();
        assert_eq!(
            own(r, "app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(own(r, "app:staff").unwrap(), Owner { uid: 1000, gid: 50 });
        assert_eq!(own(r, "55").unwrap(), Owner { uid: 55, gid: 55 });
        assert_eq!(own(r, "55:staff").unwrap(), Owner { uid: 55, gid: 50 });
        assert_eq!(own(r, "app:7").unwrap(), Owner { uid: 1000, gid: 7 });
        assert_eq!(own(r, "10:11").unwrap(), Owner { uid: 10, gid: 11 });
        // Unknown names are not errors (BuildKit): user 0, or the user's group.
        assert_eq!(own(r, "nobody").unwrap(), Owner { uid: 0, gid: 0 });
        assert_eq!(own(r, "nobody:staff").unwrap(), Owner { uid: 0, gid: 50 });
        assert_eq!(
            own(r, "app:wheel").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(own(r, "9:wheel").unwrap(), Owner { uid: 9, gid: 9 });
        // Without /etc/passwd names are unknown, numeric ids work.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(own(empty.path(), "1:2").unwrap(), Owner { uid: 1, gid: 2 });
        assert_eq!(own(empty.path(), "app").unwrap(), Owner { uid: 0, gid: 0 });
    }

    #[test]
    fn parse_errors() {
        assert!(parse_chown("").is_err());
        assert!(parse_chown(":g").is_err());
        assert!(parse_chown("u:").is_err());
        assert!(parse_chown("u:g:h").is_err());
    }
}
