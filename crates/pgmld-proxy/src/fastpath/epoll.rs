//! The few system calls the pass-through loop makes, each behind a safe function: a
//! level-triggered epoll set, an eventfd that wakes it, and a read into a `BytesMut`'s
//! spare room (no zeroing of a buffer the kernel overwrites anyway).

use bytes::BytesMut;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up: reported whatever the interest.
pub const FAILED: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// A level-triggered epoll set.
pub struct Epoll {
    fd: OwnedFd,
}

/// Room for the events of one wait, allocated once per loop (not per wake-up).
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for `batch` events per wait.
    pub fn new(batch: usize) -> Events {
        Events { buf: vec![libc::epoll_event { events: 0, u64: 0 }; batch.max(1)], len: 0 }
    }

    /// The last wait's events: (token, events).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.buf[..self.len].iter().map(|e| (e.u64, e.events))
    }
}

impl Epoll {
    /// A new set.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: creates an epoll set; no memory is passed.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: i32, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the call; the kernel checks `fd`.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Watches `fd` for `interest`; its events carry `token`.
    pub fn add(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token)
    }

    /// Stops watching `fd` (before it is handed to another event loop).
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events and puts them in `events` (none when a signal interrupted).
    pub fn wait(&self, events: &mut Events) -> io::Result<()> {
        let cap = events.buf.len() as i32;
        // SAFETY: `events.buf` has room for the `cap` events asked for.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.buf.as_mut_ptr(), cap, -1) };
        events.len = n.max(0) as usize;
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A counter another thread bumps to wake the loop.
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: creates an eventfd; no memory is passed.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The fd to watch.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the fd readable. Cannot fail short of a counter at 2⁶⁴−2, which a drain
    /// per wake-up rules out.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an fd this struct owns.
        let _ = unsafe { libc::write(self.raw(), one.as_ptr().cast(), 8) };
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
        let _ = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// Reads from a non-blocking socket into `buf`'s spare capacity (at least `room` bytes of
/// it); the byte count, 0 at end of stream.
pub fn read_into(fd: RawFd, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into `spare`, which is
    // allocated and not aliased for the call.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_what_was_sent_and_wakes_on_an_eventfd() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = BytesMut::new();
        let e = read_into(b.as_raw_fd(), &mut buf, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let ep = Epoll::new().unwrap();
        let mut events = Events::new(8);
        let mut wait = || {
            ep.wait(&mut events).unwrap();
            events.iter().collect::<Vec<_>>()
        };
        ep.add(b.as_raw_fd(), IN, 7).unwrap();
        let bell = EventFd::new().unwrap();
        ep.add(bell.raw(), IN, 9).unwrap();
        a.write_all(b"hello").unwrap();
        assert_eq!(wait(), vec![(7, IN)]);
        assert_eq!(read_into(b.as_raw_fd(), &mut buf, 16).unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        bell.wake();
        assert_eq!(wait(), vec![(9, IN)]);
        bell.drain();
        ep.modify(b.as_raw_fd(), OUT, 7).unwrap();
        assert_eq!(wait(), vec![(7, OUT)]);
        ep.remove(b.as_raw_fd()).unwrap();
        drop(a);
        ep.add(b.as_raw_fd(), IN, 7).unwrap();
        assert_eq!(read_into(b.as_raw_fd(), &mut buf, 16).unwrap(), 0, "end of stream");
    }
}
