//! See the crate docs: one thread, one epoll set, bytes copied and nothing else. A write
//! that would block is retried at once (the bench's messages are small, so it is rare);
//! this is a measuring stick, not a proxy.
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

fn main() {
    let (listen, upstream) = pgbench_floor::addresses();
    let listener = TcpListener::bind(&listen).expect("bind --listen");
    listener.set_nonblocking(true).expect("nonblocking listener");
    // SAFETY: creates an epoll set; no memory is passed.
    let epoll = unsafe { libc::epoll_create1(0) };
    assert!(epoll >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
    let watch = |fd: i32| {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: `ev` is a valid epoll_event for the call; `fd` is an open socket.
        let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    };
    watch(listener.as_raw_fd());
    // Each socket by its fd, with its peer's fd.
    let mut sockets: HashMap<i32, (TcpStream, i32)> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `events` has room for the 256 events asked for.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 256, -1) };
        for ev in &events[..n.max(0) as usize] {
            let fd = ev.u64 as i32;
            if fd == listener.as_raw_fd() {
                while let Ok((client, _)) = listener.accept() {
                    let Ok(server) = TcpStream::connect(&upstream) else { continue };
                    for s in [&client, &server] {
                        let _ = s.set_nodelay(true);
                        s.set_nonblocking(true).expect("nonblocking socket");
                        watch(s.as_raw_fd());
                    }
                    let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
                    sockets.insert(c, (client, s));
                    sockets.insert(s, (server, c));
                }
                continue;
            }
            let Some((socket, peer)) = sockets.get(&fd) else { continue };
            let peer = *peer;
            let n = match (&*socket).read(&mut buf) {
                Ok(0) => 0,
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

fn write_all(mut to: &TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match to.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(_) => return false,
        }
    }
    true
}
