//! Whether kiln runs inside a user namespace (rootless mode), where overlayfs
//! keeps its metadata in `user.overlay.*` xattrs (`trusted.*` needs real root).

use std::sync::OnceLock;

/// True when this process's user namespace does not map every id, as in
/// kiln's own rootless namespace or a rootless container. Read once.
pub fn inside() -> bool {
    static INSIDE: OnceLock<bool> = OnceLock::new();
    *INSIDE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| !is_identity(&m))
            .unwrap_or(false)
    })
}

/// The initial namespace's map: every id to itself.
fn is_identity(uid_map: &str) -> bool {
    uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// The xattr marking an opaque overlay directory in this namespace.
pub fn opaque_xattr() -> &'static str {
    if inside() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_full_map_is_the_initial_namespace() {
        assert!(super::is_identity("         0          0 4294967295\n"));
        assert!(!super::is_identity("0 1000 1\n1 100000 65536\n"));
        assert!(!super::is_identity(""));
    }
}
