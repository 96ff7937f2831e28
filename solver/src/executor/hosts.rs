//! The per-step `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` contents.

use std::net::IpAddr;

/// BuildKit's default sandbox hostname.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// One `--add-host name:ip` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The host name.
    pub name: String,
    /// The address it resolves to.
    pub ip: IpAddr,
}

/// Renders `/etc/hosts`: loopback lines, the sandbox hostname, then the extra entries.
pub fn hosts_file(hostname: &str, extra: &[HostEntry]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str(&format!("127.0.0.1\t{hostname}\n"));
    for e in extra {
        out.push_str(&format!("{}\t{}\n", e.ip, e.name));
    }
    out
}

/// Builds `/etc/resolv.conf` from the host's. With an isolated network the
/// host's loopback resolvers (systemd-resolved, dnsmasq) are unreachable, so they
/// are replaced by public resolvers the way Docker does.
pub fn resolv_conf(host: &str, isolated_network: bool) -> String {
    if !isolated_network {
        return host.to_string();
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            match words.next().and_then(|a| a.parse::<IpAddr>().ok()) {
                Some(ip) if ip.is_loopback() => continue,
                Some(_) => servers += 1,
                None => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_hostname_and_extras() {
        let h = hosts_file(
            "box",
            &[HostEntry {
                name: "db".into(),
                ip: "10.0.0.2".parse().unwrap(),
            }],
        );
        assert!(h.contains("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.0.1\tbox\n"));
        assert!(h.ends_with("10.0.0.2\tdb\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_when_isolated() {
        let host = "search example.com\nnameserver 127.0.0.53\n";
        assert_eq!(resolv_conf(host, false), host);
        let iso = resolv_conf(host, true);
        assert!(!iso.contains("127.0.0.53"));
        assert!(iso.contains("search example.com"));
        assert!(iso.contains("nameserver 8.8.8.8"));
        assert_eq!(
            resolv_conf("nameserver 1.1.1.1\n", true),
            "nameserver 1.1.1.1\n"
        );
    }
}
