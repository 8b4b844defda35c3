//! See the crate docs: one thread, one epoll set, bytes copied and nothing else. A
//! measuring stick, not a proxy.
use pgbench_floor::{write_all, Epoll};
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

fn main() {
    let (listen, upstream) = pgbench_floor::addresses();
    let mut epoll = Epoll::listen(&listen);
    // Each socket by its fd, with its peer's fd.
    let mut sockets: HashMap<i32, (TcpStream, i32)> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        for fd in epoll.wait() {
            if fd == epoll.listener.as_raw_fd() {
                for (client, server) in epoll.accept(&upstream) {
                    let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
                    sockets.insert(c, (client, s));
                    sockets.insert(s, (server, c));
                }
                continue;
            }
            let Some((socket, peer)) = sockets.get(&fd) else { continue };
            let peer = *peer;
            let n = match (&*socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            };
            let sent = n > 0 && sockets.get(&peer).is_some_and(|(p, _)| write_all(p, &buf[..n]));
            if !sent {
                // Closing both sockets also takes them out of the epoll set.
                sockets.remove(&fd);
                sockets.remove(&peer);
            }
        }
    }
}
