//! The system calls of the per-request path (accept4, recv, writev, close, epoll_wait),
//! made with syscall(2) rather than through glibc's wrappers.
//!
//! In a multi-threaded process, glibc wraps every cancellation point (pthreads(7): these
//! five are) in `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`, an atomic
//! compare-and-swap on the thread's cancel state before and after the call. A worker never
//! cancels a thread (pthread_cancel(3)), so the wrappers buy nothing, and with five such
//! calls per `Connection: close` request they measured about 1.7 % of a worker's CPU time
//! (perf, `scripts/bench` close scenario); nginx, single-threaded, never pays them. The
//! calls' semantics are the kernel's, as the man pages give them; errors come back as
//! [`Errno`].

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::epoll::EpollEvent;

/// A raw system call's result: the non-negative value, or the errno it set.
fn result(ret: libc::c_long) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// recv(2) into `buf` (no flags): the bytes received (0 at the peer's end of stream).
/// Errors: recv's errno (EAGAIN when nothing is waiting).
pub fn recv(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> Result<usize, Errno> {
    // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf`, which is allocated and
    // unaliased; null address arguments ask for no source address.
    result(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// writev(2) of `bufs` to `fd`: the bytes written (fewer than given when the socket is full).
/// Errors: writev's errno (EAGAIN when the socket takes nothing now).
pub fn writev(fd: RawFd, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
    // SAFETY: IoSlice is ABI-compatible with struct iovec (std guarantees it on Unix); the
    // kernel reads at most `bufs.len()` of them, each within its borrowed slice.
    result(unsafe { libc::syscall(libc::SYS_writev, fd, bufs.as_ptr(), bufs.len()) })
}

/// accept4(2) on `listener` with `flags`, the peer's address written into `storage` (its
/// length into `len`). Returns the new descriptor, which the caller owns.
/// Errors: accept4's errno (EAGAIN when the queue is empty).
pub fn accept4(
    listener: RawFd,
    storage: &mut libc::sockaddr_storage,
    len: &mut libc::socklen_t,
    flags: libc::c_int,
) -> Result<OwnedFd, Errno> {
    // SAFETY: accept4 writes at most `*len` bytes into `storage` and updates `len`.
    let fd = result(unsafe {
        libc::syscall(
            libc::SYS_accept4,
            listener,
            (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr>(),
            len as *mut libc::socklen_t,
            flags,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// epoll_wait(2) on `epoll` for up to `events.len()` events, at most `timeout_ms`
/// milliseconds (-1: no limit): the events written at the start of `events`.
/// Errors: epoll_wait's errno (EINTR when a signal came first).
pub fn epoll_wait(
    epoll: RawFd,
    events: &mut [EpollEvent],
    timeout_ms: i32,
) -> Result<usize, Errno> {
    // SAFETY: EpollEvent is repr(transparent) over libc::epoll_event; the kernel writes at
    // most `events.len()` of them into the slice.
    result(unsafe {
        libc::syscall(
            libc::SYS_epoll_wait,
            epoll,
            events.as_mut_ptr().cast::<libc::epoll_event>(),
            events.len().min(i32::MAX as usize) as libc::c_int,
            timeout_ms,
        )
    })
}

/// A connected socket, closed with a raw close(2) when dropped (otherwise an [`OwnedFd`]).
#[derive(Debug)]
pub struct Socket(RawFd);

impl Socket {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> Socket {
        Socket(fd.into_raw_fd())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this socket's own (taken from an OwnedFd) and closed only
        // here. close(2)'s errors leave nothing to do: the descriptor is released anyway.
        unsafe { libc::syscall(libc::SYS_close, self.0) };
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open as long as the Socket it is borrowed from.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}
