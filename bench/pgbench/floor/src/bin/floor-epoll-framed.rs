//! `floor-epoll` plus the per-message work pgmld's pass-through path does, without tokio:
//! each direction is cut into whole protocol messages (kept across reads), each frontend
//! message queues the kind of answer it expects and each backend message completes one, and
//! messages are copied into an output buffer before the write. What it costs over
//! `floor-epoll` estimates what pgmld's protocol work would cost on an epoll loop of its own.
//! A measuring stick, not a proxy: no pgml, no errors, no COPY.
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// One direction of a session: bytes read but not yet a whole message.
struct Side {
    socket: TcpStream,
    peer: i32,
    /// Read from this socket, not yet relayed.
    pending: Vec<u8>,
    /// The client's side (frontend messages) or the server's.
    client: bool,
    /// The session's queue of backend messages that complete an answer, shared by both sides.
    queue: std::rc::Rc<std::cell::RefCell<VecDeque<u8>>>,
}

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
    let mut sides: HashMap<i32, Side> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
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
                    let queue = Default::default();
                    let side = |socket, peer, client, queue| Side {
                        socket,
                        peer,
                        pending: Vec::with_capacity(8192),
                        client,
                        queue,
                    };
                    // The startup packet has no type byte: the client side starts past it
                    // by treating everything up to the first ReadyForQuery as unframed.
                    sides.insert(c, side(client, s, true, std::rc::Rc::clone(&queue)));
                    sides.insert(s, side(server, c, false, queue));
                }
                continue;
            }
            let Some(side) = sides.get_mut(&fd) else { continue };
            let peer = side.peer;
            let n = match (&side.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            };
            if n > 0 {
                side.pending.extend_from_slice(&buf[..n]);
                relay_messages(side, &mut out);
            }
            let sent = n > 0 && sides.get(&peer).is_some_and(|p| write_all(&p.socket, &out));
            out.clear();
            if !sent {
                sides.remove(&fd);
                sides.remove(&peer);
            }
        }
    }
}

/// Moves the whole messages of `side.pending` to `out`, queueing (frontend) or completing
/// (backend) the answer each one expects.
fn relay_messages(side: &mut Side, out: &mut Vec<u8>) {
    let mut at = 0;
    let p = &side.pending;
    // Startup and authentication: the first client packet has no type byte; until the
    // queue has seen traffic, pass bytes through unparsed.
    if side.client && p.len() >= 8 && p[0] == 0 {
        out.extend_from_slice(p);
        side.pending.clear();
        return;
    }
    while p.len() - at >= 5 {
        let len = u32::from_be_bytes([p[at + 1], p[at + 2], p[at + 3], p[at + 4]]) as usize + 1;
        if p.len() - at < len {
            break;
        }
        let ty = p[at];
        let mut q = side.queue.borrow_mut();
        if side.client {
            let completes = match ty {
                b'Q' | b'S' | b'F' => Some(b'Z'),
                b'P' => Some(b'1'),
                b'B' => Some(b'2'),
                b'C' => Some(b'3'),
                b'D' => Some(b'T'),
                b'E' => Some(b'C'),
                _ => None,
            };
            q.extend(completes);
        } else if q.front() == Some(&ty) || (ty == b'n' && q.front() == Some(&b'T')) {
            q.pop_front();
        }
        out.extend_from_slice(&p[at..at + len]);
        at += len;
    }
    side.pending.drain(..at);
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
