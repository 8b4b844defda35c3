//! Quick TCP reachability check, used to decide between an upstream and the private cluster.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long one connection attempt may take; a local Postgres answers far sooner.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether something accepts TCP connections on `host:port` (any resolved address). Blocks
/// for at most about half a second per address.
pub fn is_reachable(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn listening_port_is_reachable_and_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(is_reachable("127.0.0.1", port));
        drop(listener);
        assert!(!is_reachable("127.0.0.1", port));
        assert!(!is_reachable("no-such-host.invalid", 5432));
    }
}
