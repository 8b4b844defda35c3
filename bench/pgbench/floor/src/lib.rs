//! Relays that do as little as a proxy can: a client connects, the relay opens one upstream
//! connection for it and copies bytes both ways until either side closes. No pooling, no
//! error handling beyond dropping the pair. They show how little CPU per transaction a
//! proxy can spend on this machine, so pgmld's and pgbouncer's figures can be read against
//! that floor:
//! - `floor-tokio`: pgmld's shape (a single-threaded tokio runtime, two tasks per session,
//!   one per direction) without pgmld's protocol work;
//! - `floor-epoll`: one thread, one level-triggered epoll set, blocking-free reads and
//!   writes, pgbouncer's shape without pgbouncer's work;
//! - `floor-epoll-framed`: `floor-epoll` plus the per-message work of pgmld's pass-through
//!   path (whole messages, a queue of expected answers), to price that work without tokio.
//!
//! All take pgmld's command line (`--listen ADDR --upstream postgres://…@HOST:PORT/…`,
//! other flags ignored) so `cpu_per_tx.sh` starts them as it starts pgmld.

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

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

/// A listening socket and a level-triggered epoll set that watches it (the epoll relays).
pub struct Epoll {
    /// Accepts clients; non-blocking.
    pub listener: TcpListener,
    fd: i32,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// Listens on `listen` and watches the listener.
    pub fn listen(listen: &str) -> Epoll {
        let listener = TcpListener::bind(listen).expect("bind --listen");
        listener.set_nonblocking(true).expect("nonblocking listener");
        // SAFETY: creates an epoll set; no memory is passed.
        let fd = unsafe { libc::epoll_create1(0) };
        assert!(fd >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
        let epoll =
            Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; 256], listener };
        epoll.watch(epoll.listener.as_raw_fd());
        epoll
    }

    /// Watches `fd` for input; its events carry the fd. Closing the socket unwatches it.
    pub fn watch(&self, fd: i32) {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: `ev` is a valid epoll_event for the call; `fd` is an open socket.
        let rc = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    /// Waits for input; the fds that have some.
    pub fn wait(&mut self) -> Vec<i32> {
        let cap = self.events.len() as i32;
        // SAFETY: `events` has room for the `cap` events asked for.
        let n = unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), cap, -1) };
        self.events[..n.max(0) as usize].iter().map(|e| e.u64 as i32).collect()
    }

    /// Accepts waiting clients, each with a new upstream connection, both non-blocking,
    /// without Nagle's delay, and watched.
    pub fn accept(&self, upstream: &str) -> Vec<(TcpStream, TcpStream)> {
        let mut pairs = Vec::new();
        while let Ok((client, _)) = self.listener.accept() {
            let Ok(server) = TcpStream::connect(upstream) else { continue };
            for s in [&client, &server] {
                let _ = s.set_nodelay(true);
                s.set_nonblocking(true).expect("nonblocking socket");
                self.watch(s.as_raw_fd());
            }
            pairs.push((client, server));
        }
        pairs
    }
}

/// Writes all of `bytes` to a non-blocking socket, retrying at once when it would block
/// (the bench's messages are small, so that is rare); false when the socket failed.
pub fn write_all(mut to: &TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match to.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(_) => return false,
        }
    }
    true
}
