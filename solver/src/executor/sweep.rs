//! Cleaning up after kiln processes that died mid-step: their sandboxes' mounts,
//! scratch directories and OCI containers. A crashed build may only leave
//! garbage, and garbage that is still mounted would let a later recursive
//! delete reach into a layer, so it is unmounted first.

use std::fs;
use std::path::Path;
use std::process::Stdio;

use super::oci::OciRuntime;
use super::ExecutorConfig;
use crate::sysmount::mounts_under;

/// The pid a run directory or container id was made by (`kiln-<pid>-…`, `probe-<rt>-<pid>`).
pub fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.split('-');
    match parts.next()? {
        "kiln" => parts.next()?.parse().ok(),
        "probe" => parts.nth(1)?.parse().ok(),
        _ => None,
    }
}

/// Unmounts and removes the run directories of dead kiln processes; returns how
/// many were cleaned.
pub fn sweep_runs(config: &ExecutorConfig) -> usize {
    let Ok(entries) = fs::read_dir(config.runs_dir()) else {
        return 0;
    };
    let mut cleaned = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if crate::pid::alive(pid) {
            continue;
        }
        let dir = entry.path();
        for m in mounts_under(&dir) {
            let _ = crate::sysmount::unmount(&m);
        }
        // Never recurse into something that is still mounted.
        if mounts_under(&dir).is_empty() && fs::remove_dir_all(&dir).is_ok() {
            cleaned += 1;
        }
    }
    cleaned
}

/// Force-deletes the containers of dead kiln processes from a runtime's state dir.
pub fn sweep_containers(runtime: &OciRuntime, state_root: &Path) -> usize {
    // Runtimes keep one directory per container there: none, nothing to ask
    // (which spares a runtime start on every fresh state dir).
    let empty = fs::read_dir(state_root).map_or(true, |mut d| d.next().is_none());
    if empty {
        return 0;
    }
    let Ok(out) = runtime
        .base_command(state_root)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return 0;
    };
    let mut cleaned = 0;
    for id in String::from_utf8_lossy(&out.stdout).lines() {
        let dead = owner_pid(id).is_some_and(|pid| !crate::pid::alive(pid));
        if !dead {
            continue;
        }
        let deleted = runtime
            .base_command(state_root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if deleted {
            cleaned += 1;
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::overlay::Overlay;
    use crate::sysmount::unescape;
    use std::process::Command;

    #[test]
    fn owner_pids_and_escapes() {
        assert_eq!(owner_pid("kiln-1234-7-0abc"), Some(1234));
        assert_eq!(owner_pid("probe-runc-99"), Some(99));
        assert_eq!(owner_pid("other-1"), None);
        assert_eq!(unescape(r"/a\040b/c\134d"), r"/a b/c\d");
    }

    /// Needs root: a dead process' run dir with a mounted rootfs is unmounted
    /// and removed; a live one's is left alone.
    #[test]
    fn dead_runs_are_unmounted_and_removed() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (it mounts overlayfs)");
        }
        let dir = tempfile::tempdir().unwrap();
        let config = ExecutorConfig {
            state_dir: dir.path().join("state"),
        };
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let layer = dir.path().join("layer");
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        for d in [&layer, &upper, &work] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(layer.join("keep"), "layer data").unwrap();
        let stale = config.runs_dir().join(format!("kiln-{dead}-0-0"));
        let live = config
            .runs_dir()
            .join(format!("kiln-{}-0-0", std::process::id()));
        fs::create_dir_all(stale.join("rootfs")).unwrap();
        fs::create_dir_all(&live).unwrap();
        let mount = Overlay {
            lowers: vec![layer.clone()],
            upper,
            work,
        }
        .mount_volatile(&stale.join("rootfs"))
        .unwrap();
        // The crashed process never unmounts.
        std::mem::forget(mount);
        assert_eq!(mounts_under(&stale).len(), 1);
        assert_eq!(sweep_runs(&config), 1);
        assert!(!stale.exists());
        assert!(live.exists());
        assert_eq!(
            fs::read_to_string(layer.join("keep")).unwrap(),
            "layer data"
        );
    }
}
