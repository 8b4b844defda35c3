//! Two byte relays that do nothing but copy: a client connects, the relay opens one upstream
//! connection for it and copies bytes both ways until either side closes. No parsing, no
//! pooling, no error handling beyond dropping the pair. They show how little CPU per
//! transaction a proxy can spend on this machine, so pgmld's and pgbouncer's figures can be
//! read against that floor:
//! - `floor-tokio`: pgmld's shape (a single-threaded tokio runtime, two tasks per session,
//!   one per direction) without pgmld's protocol work;
//! - `floor-epoll`: one thread, one level-triggered epoll set, blocking-free reads and
//!   writes, pgbouncer's shape without pgbouncer's work;
//! - `floor-epoll-framed`: `floor-epoll` plus the per-message work of pgmld's pass-through
//!   path (whole messages, a queue of expected answers), to price that work without tokio.
//!
//! Both take pgmld's command line (`--listen ADDR --upstream postgres://…@HOST:PORT/…`,
//! other flags ignored) so `cpu_per_tx.sh` starts them as it starts pgmld.

/// `--listen` and the upstream's `host:port` from pgmld-style arguments.
pub fn addresses() -> (String, String) {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{flag} is required"))
            .clone()
    };
    let url = value("--upstream");
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let host_port = host_port.split(['/', '?']).next().unwrap_or(host_port);
    (value("--listen"), host_port.to_string())
}
