//! Resolving `USER name[:group]` through the rootfs' `/etc/passwd` and `/etc/group`.

use std::path::Path;

use crate::rootfs_path::resolve_in_root;

/// The credentials a step runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Numeric user ID.
    pub uid: u32,
    /// Numeric primary group ID.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership), without `gid`.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, used for `HOME` when unset.
    pub home: String,
}

/// Why a user spec could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// A user name that `/etc/passwd` does not list.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name that `/etc/group` does not list.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// An empty user or group part such as `:1000`.
    #[error("invalid user spec {0:?}")]
    Invalid(String),
}

/// One `/etc/passwd` line.
#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The two databases as read from a rootfs (missing files are empty).
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    passwd: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` from a rootfs, following symlinks inside it.
    pub fn read(rootfs: &Path) -> Self {
        let read = |p: &str| {
            resolve_in_root(rootfs, p, true)
                .ok()
                .and_then(|r| std::fs::read(r.host).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Self::parse(&read("/etc/passwd"), &read("/etc/group"))
    }

    /// Parses the text of the two files; malformed lines are skipped like libc does.
    pub fn parse(passwd: &str, group: &str) -> Self {
        let passwd = passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(PasswdEntry {
                    name: f.first()?.to_string(),
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                    home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(GroupEntry {
                    name: f.first()?.to_string(),
                    gid: f.get(2)?.parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| {
                            m.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect();
        UserDb { passwd, groups }
    }

    /// Resolves `user[:group]` as Docker does: names through the databases,
    /// numeric IDs used as they are (with the passwd entry's group and home when
    /// one exists), an empty spec meaning root.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedUser, UserError> {
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if group_part == Some("") || (user_part.is_empty() && group_part.is_some()) {
            return Err(UserError::Invalid(spec.to_string()));
        }
        let user_part = if user_part.is_empty() { "0" } else { user_part };
        let entry = match user_part.parse::<u32>() {
            Ok(uid) => self
                .passwd
                .iter()
                .find(|e| e.uid == uid)
                .cloned()
                .or(Some(PasswdEntry {
                    name: String::new(),
                    uid,
                    gid: 0,
                    home: "/".to_string(),
                })),
            Err(_) => self.passwd.iter().find(|e| e.name == user_part).cloned(),
        }
        .ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?;

        let gid = match group_part {
            None => entry.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
            },
        };
        let mut additional_gids: Vec<u32> = if entry.name.is_empty() || group_part.is_some() {
            Vec::new()
        } else {
            self.groups
                .iter()
                .filter(|g| g.members.contains(&entry.name))
                .map(|g| g.gid)
                .filter(|g| *g != gid)
                .collect()
        };
        additional_gids.sort_unstable();
        additional_gids.dedup();
        let home = if entry.home.is_empty() {
            "/".to_string()
        } else {
            entry.home
        };
        Ok(ResolvedUser {
            uid: entry.uid,
            gid,
            additional_gids,
            home,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\n";

    fn db() -> UserDb {
        UserDb::parse(PASSWD, GROUP)
    }

    #[test]
    fn names_resolve_with_groups_and_home() {
        let u = db().resolve("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10]);
        assert_eq!(u.home, "/home/app");
        assert_eq!(db().resolve("").unwrap().uid, 0);
        assert_eq!(db().resolve("root").unwrap().home, "/root");
    }

    #[test]
    fn numeric_ids_work_without_entries() {
        let u = UserDb::default().resolve("4242:77").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 77, "/"));
        let u = db().resolve("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
    }

    #[test]
    fn group_by_name_and_unknowns_are_errors() {
        assert_eq!(db().resolve("app:wheel").unwrap().gid, 10);
        assert_eq!(
            db().resolve("nobody"),
            Err(UserError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            db().resolve("app:staff"),
            Err(UserError::UnknownGroup("staff".into()))
        );
        assert!(db().resolve("app:").is_err());
    }
}
