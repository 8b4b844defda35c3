//! `floor-epoll` plus the per-message work pgmld's pass-through path does, without tokio:
//! each direction is cut into whole protocol messages (kept across reads), each frontend
//! message queues the kind of answer it expects and each backend message completes one, and
//! messages are copied into an output buffer before the write. What it costs over
//! `floor-epoll` estimates what pgmld's protocol work would cost on an epoll loop of its own.
//! A measuring stick, not a proxy: no pgml, no errors, no COPY.
use pgbench_floor::{write_all, Epoll};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// One direction of a session: bytes read but not yet a whole message.
struct Side {
    socket: TcpStream,
    peer: i32,
    /// Read from this socket, not yet relayed.
    pending: Vec<u8>,
    /// The client's side (frontend messages) or the server's.
    client: bool,
    /// The session's queue of backend messages that complete an answer, shared by both sides.
    queue: Rc<RefCell<VecDeque<u8>>>,
}

fn main() {
    let (listen, upstream) = pgbench_floor::addresses();
    let mut epoll = Epoll::listen(&listen);
    let mut sides: HashMap<i32, Side> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        for fd in epoll.wait() {
            if fd == epoll.listener.as_raw_fd() {
                for (client, server) in epoll.accept(&upstream) {
                    let (c, s) = (client.as_raw_fd(), server.as_raw_fd());
                    let queue: Rc<RefCell<VecDeque<u8>>> = Default::default();
                    let side = |socket, peer, client, queue| Side {
                        socket,
                        peer,
                        pending: Vec::with_capacity(8192),
                        client,
                        queue,
                    };
                    sides.insert(c, side(client, s, true, Rc::clone(&queue)));
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
    // The startup packet has no type byte; its length's first byte is 0, which no message
    // type is: such a read passes unparsed.
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
