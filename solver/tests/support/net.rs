//! Tiny network peers for the RUN network tests: the solver's executor suite and the
//! builder's end-to-end tests (which include this file by path) share them.

use std::io::Write;

/// Says `pong` to each of the first `count` connections on `addr` (port 0: any), in the
/// background; returns the port.
pub fn pong_server(addr: &str, count: usize) -> u16 {
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let _ = s.write_all(b"pong\n");
        }
    });
    port
}

/// An IPv4 address of this host other than loopback (the outbound target of the default
/// network: traffic stays on the machine).
pub fn host_global_ipv4() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .expect("the host has a non-loopback IPv4 address")
}
