//! EXPOSE port specs, validated as BuildKit does (`[ip:][hostport:]port[-end][/proto]`):
//! ports 0–65535, ranges `8000-8010`, protocols tcp, udp or sctp in any case.

use std::net::IpAddr;

/// Why a port spec is invalid (the message names the part that is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port {spec:?}: {reason}")]
pub struct PortSpecError {
    /// The spec as written (expanded).
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The config keys (`80/tcp`, ...) of one spec, a range expanded to every port.
pub fn exposed_ports(spec: &str) -> Result<Vec<String>, PortSpecError> {
    let fail = |reason: String| PortSpecError {
        spec: spec.to_string(),
        reason,
    };
    let (ip, host_port, container) = split_parts(spec);
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(fail("no port specified".to_string()));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_string(),
        p @ ("tcp" | "udp" | "sctp") => p.to_string(),
        _ => {
            return Err(fail(format!(
                "invalid proto {proto:?} (use tcp, udp or sctp)"
            )))
        }
    };
    // An IPv6 address may be bracketed.
    let bare_ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if !ip.is_empty() && bare_ip.parse::<IpAddr>().is_err() {
        return Err(fail(format!("invalid IP address {ip}")));
    }
    let (start, end) =
        port_range(port).map_err(|e| fail(format!("invalid container port {port}: {e}")))?;
    if !host_port.is_empty() {
        let (hs, he) = port_range(host_port)
            .map_err(|e| fail(format!("invalid host port {host_port}: {e}")))?;
        // A host range may go with a single container port, not with another range.
        if end - start != he - hs && end != start {
            return Err(fail(format!(
                "invalid ranges specified for container and host ports: {port} and {host_port}"
            )));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `[ip:][hostport:]container`; an IPv6 address keeps its colons.
fn split_parts(spec: &str) -> (&str, &str, &str) {
    let mut parts = spec.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => ("", "", container),
        (Some(host), None) => ("", host, container),
        (Some(host), Some(ip)) => (ip, host, container),
    }
}

/// `N` or `N-M` with `N <= M`.
fn port_range(ports: &str) -> Result<(u32, u32), String> {
    let (start, end) = ports.split_once('-').unwrap_or((ports, ports));
    let start_port = port_number(start).map_err(|e| format!("start port {start:?}: {e}"))?;
    if start == end {
        return Ok((start_port, start_port));
    }
    let end_port = port_number(end).map_err(|e| format!("end port {end:?}: {e}"))?;
    if end_port < start_port {
        return Err(format!("the range {ports} ends before it starts"));
    }
    Ok((start_port, end_port))
}

fn port_number(raw: &str) -> Result<u32, String> {
    if raw.is_empty() {
        return Err("value is empty".to_string());
    }
    // Go's ParseInt: an optional sign, then decimal digits.
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number".to_string());
    }
    match raw.parse::<i64>() {
        Ok(p) if (0..=65535).contains(&p) => Ok(p as u32),
        _ => Err("value out of range (0-65535)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> Vec<String> {
        exposed_ports(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn valid_specs_as_buildkit_expands_them() {
        assert_eq!(ok("80"), ["80/tcp"]);
        assert_eq!(ok("53/UDP"), ["53/udp"]);
        assert_eq!(ok("132/Sctp"), ["132/sctp"]);
        assert_eq!(ok("8000-8002"), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        assert_eq!(ok("0"), ["0/tcp"]);
        assert_eq!(ok("65535/udp"), ["65535/udp"]);
        assert_eq!(ok("80-80"), ["80/tcp"]);
        assert_eq!(ok("1-65535").len(), 65535);
        // Host mappings are accepted (the ExposeInvalidFormat check warns).
        assert_eq!(ok("8080:80"), ["80/tcp"]);
        assert_eq!(ok("127.0.0.1:8080:80/udp"), ["80/udp"]);
        assert_eq!(ok("[::1]:8080:80"), ["80/tcp"]);
        assert_eq!(ok("::1:8080:80"), ["80/tcp"]);
        assert_eq!(ok("8000-8010:80"), ["80/tcp"]);
    }

    #[test]
    fn invalid_specs_are_errors() {
        for spec in [
            "99999999/tcpx",
            "99999999",
            "65536",
            "80/tcpx",
            "/tcp",
            "",
            "http",
            "-1",
            "9000-8000",
            "80-",
            "1.2.3.4.5:80:80",
            "8000-8001:80-82",
            "80:",
        ] {
            assert!(exposed_ports(spec).is_err(), "{spec:?} should be invalid");
        }
        let e = exposed_ports("99999999/tcpx").unwrap_err().to_string();
        assert!(e.contains("tcpx"), "{e}");
        let e = exposed_ports("99999999/tcp").unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
