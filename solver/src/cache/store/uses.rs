//! The use journal: cache hits of a build that writes nothing else to `meta.redb`. Writing
//! them there would open the database for writing (a durable header write, a commit at
//! close) only to move last-use times; instead they are appended here, one `key seconds`
//! line each, without fsync, and folded into the database by the next build that writes,
//! or once the journal passes [`FOLD_BYTES`]. Readers of last-use times (`du`, `prune`)
//! take the later of the two. Last uses only order prune's choices: a journal lost in a
//! crash costs nothing else.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::cache::key::CacheKey;

/// A journal this big is folded into the database by the next build.
pub(super) const FOLD_BYTES: u64 = 256 * 1024;
/// At most this much of a journal is read (a fold keeps it far below).
const READ_LIMIT: u64 = 16 * 1024 * 1024;

/// The journal beside one database file.
#[derive(Debug)]
pub(super) struct UseJournal {
    path: PathBuf,
}

impl UseJournal {
    /// The journal of the database at `db` (`meta.redb` → `meta.redb.uses`).
    pub(super) fn beside(db: &Path) -> UseJournal {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".uses");
        UseJournal {
            path: db.with_file_name(name),
        }
    }

    /// Appends `uses` in one write; returns the journal's size after it.
    pub(super) fn append(&self, uses: &[(CacheKey, u64)]) -> std::io::Result<u64> {
        let mut text = String::with_capacity(uses.len() * 76);
        for (key, now) in uses {
            text.push_str(&hex::encode(key.0));
            text.push(' ');
            text.push_str(&now.to_string());
            text.push('\n');
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(text.as_bytes())?;
        Ok(f.metadata()?.len())
    }

    /// The latest use of each key in the journal (none when there is no journal).
    pub(super) fn read(&self) -> std::io::Result<HashMap<CacheKey, u64>> {
        read_uses(&self.path)
    }

    /// Moves the journal aside for folding and returns its uses; [`Taken::done`] removes it
    /// once they are committed. Appends that race with the move land in a new journal or
    /// (already open) in the moved one after it was read: such a use is lost, which only
    /// makes its result look older to prune.
    pub(super) fn take(&self) -> std::io::Result<Option<Taken>> {
        self.sweep_dead();
        let aside = self.aside(std::process::id());
        match fs::rename(&self.path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let uses = read_uses(&aside)?;
        Ok(Some(Taken { path: aside, uses }))
    }

    fn aside(&self, pid: u32) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{pid}"));
        self.path.with_file_name(name)
    }

    /// Removes journals moved aside by processes that died before folding them.
    fn sweep_dead(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let pid = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix)?.parse::<i32>().ok());
            if pid.is_some_and(|pid| !crate::pid::alive(pid)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A journal moved aside: its uses, and the file to remove once they are committed.
#[derive(Debug)]
pub(super) struct Taken {
    path: PathBuf,
    /// The latest use of each key.
    pub(super) uses: HashMap<CacheKey, u64>,
}

impl Taken {
    /// The uses are in the database: the moved journal goes.
    pub(super) fn done(self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn read_uses(path: &Path) -> std::io::Result<HashMap<CacheKey, u64>> {
    let mut text = String::new();
    match fs::File::open(path) {
        Ok(f) => {
            f.take(READ_LIMIT).read_to_string(&mut text)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    }
    let mut uses: HashMap<CacheKey, u64> = HashMap::new();
    // A line cut short by a crash, or anything else that does not parse, is skipped.
    for line in text.lines() {
        let Some((key, secs)) = line.split_once(' ') else {
            continue;
        };
        let (Some(key), Ok(secs)) = (parse_key(key), secs.parse::<u64>()) else {
            continue;
        };
        let latest = uses.entry(key).or_insert(secs);
        *latest = (*latest).max(secs);
    }
    Ok(uses)
}

fn parse_key(hex_key: &str) -> Option<CacheKey> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    Some(CacheKey(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_latest_per_key_and_take_moves_them_aside() {
        let d = tempfile::tempdir().unwrap();
        let j = UseJournal::beside(&d.path().join("meta.redb"));
        assert!(j.read().unwrap().is_empty());
        assert!(j.take().unwrap().is_none());
        let (a, b) = (CacheKey([1; 32]), CacheKey([2; 32]));
        j.append(&[(a, 10), (b, 20)]).unwrap();
        let size = j.append(&[(a, 30), (a, 5)]).unwrap();
        assert_eq!(size, 3 * 68 + 67, "64 hex digits, a space, the seconds");
        // A torn last line is skipped.
        fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("meta.redb.uses"))
            .unwrap()
            .write_all(b"0102")
            .unwrap();
        let uses = j.read().unwrap();
        assert_eq!(uses, HashMap::from([(a, 30), (b, 20)]));
        let taken = j.take().unwrap().unwrap();
        assert_eq!(taken.uses, uses);
        assert!(j.read().unwrap().is_empty(), "moved aside");
        taken.done();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
