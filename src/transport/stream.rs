//! A connection's byte stream, whatever protocol it carries: the socket or the TLS session
//! over it ([`Io`]), the bytes waiting for the client to take them ([`Backlog`]), and what
//! epoll reported ([`Readiness`]).

use super::tls::Session;
use super::Socket;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

/// Most bytes read from the socket per recv(2).
pub const READ_CHUNK: usize = 16 * 1024;
/// A request state's first read buffer (allocated at its first read, then reused by the
/// thread's later requests): a typical request head fits; it
/// doubles as needed, up to what the head limits allow.
pub const FIRST_BUFFER: usize = 2048;

/// A backlog's buffer larger than this is freed once sent.
const KEEP_BACKLOG: usize = 64 * 1024;

/// Response bytes the client has not taken yet: the app's writes land here when the socket
/// is full, and the event loop sends them (`response_buffer`).
#[derive(Debug, Default)]
pub struct Backlog {
    bytes: Vec<u8>,
    sent: usize,
}

impl Backlog {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.sent
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    /// Appends `data` after what waits.
    pub fn push(&mut self, data: &[u8]) {
        if self.is_empty() && self.bytes.capacity() < data.len() {
            // Nothing waits: start over at the front without moving old bytes.
            self.bytes.clear();
            self.sent = 0;
        }
        if self.sent > 0 && self.sent * 2 >= self.bytes.len() {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Writes what the socket takes without waiting. Ok(true) once nothing waits (TLS
    /// records included); Ok(false) when the socket is full (epoll reports when it is not).
    /// Errors: write(2)'s.
    pub fn send(&mut self, io: &mut Io<'_>) -> nix::Result<bool> {
        self.sent += io.write_some(&self.bytes[self.sent..])?;
        if !self.is_empty() || io.pending() {
            return Ok(false);
        }
        self.sent = 0;
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_BACKLOG {
            self.bytes = Vec::new();
        }
        Ok(true)
    }
}

/// A connection's byte stream: its socket, or the TLS session over it. Every
/// read and write of request and response bytes goes through it, never waiting unless asked.
pub struct Io<'a> {
    fd: BorrowedFd<'a>,
    tls: Option<&'a mut Session>,
}

impl<'a> Io<'a> {
    /// The stream of a connection's socket `fd` and TLS session `tls`.
    pub fn new(fd: &'a Socket, tls: &'a mut Option<Box<Session>>) -> Io<'a> {
        Io {
            fd: fd.as_fd(),
            tls: tls.as_deref_mut(),
        }
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.fd
    }

    /// Whether the stream is TLS (bytes pass through the session, not straight to the
    /// socket).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads up to READ_CHUNK bytes (decrypted, with TLS), appending to `buf` (allocated at
    /// FIRST_BUFFER bytes, doubled when less than a quarter of it is free). Returns the byte
    /// count (0: the client closed) and whether the socket's receive queue is now empty.
    /// Errors: recv(2)'s (WouldBlock: nothing yet; a TLS handshake in progress reads this
    /// way too), InvalidData for a TLS failure.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
        self.recv_up_to(buf, READ_CHUNK)
    }

    /// [`Io::recv`] reading up to `chunk` bytes at once.
    pub fn recv_up_to(
        &mut self,
        buf: &mut Vec<u8>,
        chunk: usize,
    ) -> std::io::Result<(usize, bool)> {
        if buf.capacity() - buf.len() < FIRST_BUFFER / 4 {
            buf.reserve(buf.len().max(FIRST_BUFFER));
        }
        let want = (buf.capacity() - buf.len()).min(chunk);
        match &mut self.tls {
            Some(session) => session.recv(self.fd, buf, want),
            None => recv_plain(self.fd, buf, want),
        }
    }

    /// Writes as much of `data` as the socket takes now: the byte count (less than asked
    /// once it is full; epoll reports room again). With TLS, `data` is encrypted; records
    /// the socket did not take wait in the session ([`Io::pending`]) and go first next time.
    /// Errors: writev(2)'s other than EAGAIN.
    pub fn write_some(&mut self, data: &[u8]) -> nix::Result<usize> {
        if let Some(session) = &mut self.tls {
            return session
                .send(self.fd, data)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
        }
        let mut done = 0;
        while done < data.len() {
            match crate::transport::sys::writev(self.fd.as_raw_fd(), &[IoSlice::new(&data[done..])])
            {
                Ok(n) => done += n,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// TLS records wait for room in the socket.
    pub fn pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|s| s.pending())
    }

    /// Writes all of `data`, waiting (at most `timeout` per stall) when the socket is full.
    /// False when the client is gone or stalled.
    pub fn write_all(&mut self, data: &[u8], timeout: Duration) -> bool {
        let mut done = 0;
        loop {
            match self.write_some(&data[done..]) {
                Ok(n) => done += n,
                Err(_) => return false,
            }
            if done == data.len() && !self.pending() {
                return true;
            }
            if !wait_ready(self.fd, nix::poll::PollFlags::POLLOUT, timeout) {
                return false;
            }
        }
    }

    /// Ends TLS with close_notify, best effort and without waiting (nothing for plain TCP).
    pub fn close_notify(&mut self) {
        if let Some(session) = &mut self.tls {
            session.close_notify(self.fd);
        }
    }
}

/// What epoll reported for a connection (several reports may be merged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// EPOLLIN: input (or its end) is there. (EPOLLOUT needs no flag: a connection waiting
    /// to send tries whenever it is driven.)
    pub readable: bool,
    /// EPOLLRDHUP, EPOLLHUP or EPOLLERR: the socket is read until it says so, even after a
    /// short read.
    pub hangup: bool,
}

/// Reads up to `want` bytes (at most the spare capacity) from `fd`, appending to `buf`.
/// Returns the byte count and whether it was less than asked for (the socket's receive queue
/// is now empty).
fn recv_plain(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<(usize, bool)> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(want);
    // recv(2) rather than read(2): the socket call path, without the VFS read path's file
    // position handling.
    let n = crate::transport::sys::recv(fd.as_raw_fd(), &mut spare[..want])?;
    // SAFETY: the kernel initialised exactly `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, n < want))
}

/// Waits until `fd` is ready for `events`, at most `timeout`. False on timeout or error.
pub fn wait_ready(fd: BorrowedFd<'_>, events: nix::poll::PollFlags, timeout: Duration) -> bool {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [nix::poll::PollFd::new(fd, events)];
    loop {
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}
