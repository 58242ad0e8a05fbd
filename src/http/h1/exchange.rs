//! One request/response exchange: the responder the app calls (the gateway's
//! `FcResponder` callbacks) between the app and the protocol machine. Body reads pull from
//! the connection's buffered input, then the socket; response bytes the machine frames are
//! written to the socket when it says so.

use super::{with_date, MAX_DRAIN};
use crate::http::h1::proto::response::ResponseError;
use crate::http::h1::proto::{Event, Outcome, ServerConn, Unread};
use crate::logging;
use crate::logging::LogLevel;
use crate::transport::{wait_ready, Backlog, Io, READ_CHUNK};
use crate::worker::context::Context;
use ferricorn_sdk::abi::{self, FcField, FcResponder, FcStr};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One request/response exchange: the state behind the responder the app calls, between
/// the app and the protocol machine.
pub(super) struct Exchange<'a> {
    ctx: &'a Context,
    /// The connection's stream (socket or TLS).
    io: Io<'a>,
    pub(super) proto: &'a mut ServerConn,
    /// Input after the head already in the connection's buffer.
    pre: &'a [u8],
    pub(super) pre_pos: usize,
    /// Input the app's body reads brought in after `pre` ran out.
    stage: &'a mut Vec<u8>,
    pub(super) stage_pos: usize,
    trailer_fields: Vec<FcField>,
    /// A status to answer instead of the app's response, if nothing was sent yet.
    pub(super) failure: Option<u16>,
    /// Why the request body was refused (400/408/413/431), for the debug log.
    pub(super) body_error: Option<&'static str>,
    /// The client went away or stalled: nothing more can be sent.
    broken: bool,
    /// The exchange read from the socket (request body).
    pub(super) read_socket: bool,
    /// TCP_NODELAY was set for a response sent while the app runs.
    streaming: bool,
    /// Response bytes the socket did not take yet (the connection's).
    backlog: &'a mut Backlog,
    /// Close the connection after this response to shed load ([`Context::shed_load`]).
    pub(super) shed: bool,
}

fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(abi::FC_ERR_APP)
}

/// Recovers the exchange from the responder's ctx.
///
/// # Safety
/// `ctx` must be the pointer `Exchange::responder` stored, during that exchange's handle call.
unsafe fn exchange<'x>(ctx: *mut c_void) -> &'x mut Exchange<'x> {
    // SAFETY: guaranteed by the caller: ctx points to a live Exchange on the serving thread's
    // stack, and the app calls the responder only from that thread during handle.
    unsafe { &mut *(ctx as *mut Exchange<'x>) }
}

/// Reads `count` fields at `ptr` (a borrowed array from the app).
///
/// # Safety
/// `ptr` must be NULL or point to `count` valid fields whose strings are valid.
unsafe fn app_fields<'x>(ptr: *const FcField, count: usize) -> &'x [FcField] {
    if ptr.is_null() || count == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller (the app passes `count` fields valid for the call).
        unsafe { std::slice::from_raw_parts(ptr, count) }
    }
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_start_response(
    ctx: *mut c_void,
    status: u16,
    reason: FcStr,
    headers: *const FcField,
    count: usize,
) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call; the app passes its own arrays and
        // strings valid for the duration of this call.
        let (ex, fields, reason) =
            unsafe { (exchange(ctx), app_fields(headers, count), reason.as_bytes()) };
        ex.start_response(status, reason.unwrap_or_default(), fields)
    })
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_write(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call; data/len describe the app's buffer.
        let (ex, data) = unsafe { (exchange(ctx), FcStr { ptr: data, len }.as_bytes()) };
        ex.write(data.unwrap_or_default())
    })
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_flush(ctx: *mut c_void) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call.
        let ex = unsafe { exchange(ctx) };
        ex.flush()
    })
}
/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged (the ABI's contract,
/// `worker-apps/include/ferricorn.h`); `fd` is only read through, never closed.
unsafe extern "C" fn cb_sendfile(ctx: *mut c_void, fd: i32, offset: u64, count: u64) -> i64 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the exchange of this handle call.
        let ex = unsafe { exchange(ctx) };
        ex.sendfile(fd, offset, count)
    }))
    .unwrap_or(i64::from(abi::FC_ERR_APP))
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> i64 {
    catch_unwind(AssertUnwindSafe(|| {
        if buf.is_null() || cap == 0 {
            return i64::from(abi::FC_ERR_INVALID);
        }
        // SAFETY: ctx is the exchange of this handle call; buf/cap describe the app's writable
        // buffer, valid for this call.
        let (ex, out) = unsafe { (exchange(ctx), std::slice::from_raw_parts_mut(buf, cap)) };
        match ex.read_body(out) {
            Ok(n) => n as i64,
            Err(status) => i64::from(status),
        }
    }))
    .unwrap_or(i64::from(abi::FC_ERR_APP))
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_trailers(
    ctx: *mut c_void,
    out: *mut *const FcField,
    count: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: ctx is the exchange of this handle call.
        let ex = unsafe { exchange(ctx) };
        if !ex.proto.body_done() || out.is_null() || count.is_null() {
            return abi::FC_ERR_STATE;
        }
        // SAFETY: out and count are the app's valid out-pointers (checked non-null above).
        unsafe {
            *out = ex.trailer_fields.as_ptr();
            *count = ex.trailer_fields.len();
        }
        abi::FC_OK
    })
}

/// # Safety
/// Called by the app through the responder it got in `handle`, on that thread and during
/// that call only, with the responder's `ctx` unchanged and pointer arguments valid for the
/// call (the ABI's contract, `worker-apps/include/ferricorn.h`).
unsafe extern "C" fn cb_log(_ctx: *mut c_void, level: i32, message: FcStr) {
    let _ = catch_unwind(|| {
        let level = LogLevel::from_abi(level);
        // SAFETY: the app passes a message valid for this call.
        let text = unsafe { message.as_bytes() }.unwrap_or_default();
        logging::log(level, String::from_utf8_lossy(text));
    });
}

impl Exchange<'_> {
    /// [`Backlog::send`], counting the bytes sent.
    fn send_backlog(&mut self) -> nix::Result<bool> {
        let before = self.backlog.len();
        let result = self.backlog.send(&mut self.io);
        self.ctx.count_bytes(0, before - self.backlog.len());
        result
    }
}

impl<'a> Exchange<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        io: Io<'a>,
        proto: &'a mut ServerConn,
        pre: &'a [u8],
        stage: &'a mut Vec<u8>,
        backlog: &'a mut Backlog,
    ) -> Exchange<'a> {
        Exchange {
            ctx,
            io,
            proto,
            pre,
            pre_pos: 0,
            stage,
            stage_pos: 0,
            trailer_fields: Vec::new(),
            failure: None,
            body_error: None,
            broken: false,
            read_socket: false,
            streaming: false,
            backlog,
            shed: false,
        }
    }

    pub(super) fn responder(&mut self) -> FcResponder {
        FcResponder {
            size: std::mem::size_of::<FcResponder>() as u32,
            ctx: self as *mut Exchange<'a> as *mut c_void,
            start_response: cb_start_response,
            write: cb_write,
            read_body: cb_read_body,
            trailers: cb_trailers,
            log: cb_log,
            flush: cb_flush,
            sendfile: cb_sendfile,
        }
    }

    // ----- request body -----

    /// Reads more input from the socket into the stage buffer once the buffered input is
    /// used up, waiting at most stall_timeout for it.
    fn fill(&mut self) -> Result<(), i32> {
        self.stage.clear();
        self.stage_pos = 0;
        // Bodies are read in large pieces (the stage buffer lives as long as the connection).
        self.stage.reserve(READ_CHUNK);
        loop {
            self.read_socket = true;
            match self.io.recv(self.stage) {
                Ok((0, _)) => return Err(abi::FC_ERR_IO),
                Ok((n, _)) => {
                    self.ctx.count_bytes(n, 0);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !wait_ready(
                        self.io.fd(),
                        nix::poll::PollFlags::POLLIN,
                        self.ctx.stall_timeout,
                    ) {
                        return Err(abi::FC_ERR_TIMEOUT);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(abi::FC_ERR_IO),
            }
        }
    }

    /// The unread input: the rest of the head's buffer, then the stage buffer.
    fn input(&self) -> &[u8] {
        if self.pre_pos < self.pre.len() {
            &self.pre[self.pre_pos..]
        } else {
            &self.stage[self.stage_pos..]
        }
    }

    fn advance(&mut self, n: usize) {
        if self.pre_pos < self.pre.len() {
            self.pre_pos += n;
        } else {
            self.stage_pos += n;
        }
    }

    /// Reads decoded body bytes into `out`: Ok(0) at the end; Err(status) on failure, which
    /// also records the error status to answer (400, 408, 413, 431) if nothing was sent yet.
    fn read_body(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        if out.is_empty() || self.proto.body_done() {
            return Ok(0);
        }
        self.proto.want_body();
        self.send()?;
        let result = self.read_some(out);
        match result {
            // Refused by the machine: it recorded why, and reads nothing more.
            Ok(_) | Err(abi::FC_ERR_BAD_REQUEST | abi::FC_ERR_TOO_LARGE) => {}
            Err(abi::FC_ERR_TIMEOUT) => {
                self.proto.abort();
                self.failure = Some(408);
                self.body_error = Some("body stalled past timeout");
            }
            Err(_) => {
                self.proto.abort();
                self.broken = true;
            }
        }
        result
    }

    fn read_some(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        loop {
            let input = if self.pre_pos < self.pre.len() {
                &self.pre[self.pre_pos..]
            } else {
                &self.stage[self.stage_pos..]
            };
            match self.proto.next_event(input, out.len()) {
                Event::Data(range) => {
                    let n = range.len();
                    out[..n].copy_from_slice(&input[range.clone()]);
                    self.advance(range.end);
                    return Ok(n);
                }
                Event::EndOfMessage(used) => {
                    self.advance(used);
                    self.expose_trailers();
                    return Ok(0);
                }
                Event::NeedData(used) => {
                    self.advance(used);
                    if self.input().is_empty() {
                        self.fill()?;
                    }
                }
                Event::Reject(reject) => {
                    self.failure = Some(reject.status);
                    self.body_error = Some(reject.why);
                    return Err(match reject.status {
                        413 => abi::FC_ERR_TOO_LARGE,
                        _ => abi::FC_ERR_BAD_REQUEST,
                    });
                }
                Event::Request | Event::Paused | Event::Closed => return Ok(0),
            }
        }
    }

    /// Gives the app the trailer fields of a finished chunked body.
    fn expose_trailers(&mut self) {
        self.trailer_fields = self
            .proto
            .trailers()
            .iter()
            .map(|(n, v)| FcField {
                name: FcStr::new(n),
                value: FcStr::new(v),
            })
            .collect();
    }

    // ----- response -----

    /// Sends the bytes the machine framed so far, without waiting: what the socket does not
    /// take joins the connection's backlog, which the event loop sends after the app
    /// returned. Only a backlog over `response_buffer` makes the app wait for the client (at
    /// most stall_timeout per stall). A send while the app still runs is a streamed
    /// response, whose pieces must not wait for ACKs (Nagle's algorithm).
    fn send(&mut self) -> Result<(), i32> {
        let out = std::mem::take(&mut self.proto.response().buffers.out);
        if !out.is_empty() && !self.broken {
            self.broken = !self.push_out(&out);
        }
        let response = self.proto.response();
        response.buffers.out = out;
        response.buffers.out.clear();
        if self.broken {
            Err(abi::FC_ERR_IO)
        } else {
            Ok(())
        }
    }

    /// Writes `out` after the backlog (see [`send`](Self::send)); false when the client is
    /// gone or stalled past stall_timeout.
    fn push_out(&mut self, out: &[u8]) -> bool {
        if self.backlog.is_empty() {
            match self.io.write_some(out) {
                Ok(n) => {
                    self.ctx.count_bytes(0, n);
                    if n < out.len() {
                        self.backlog.push(&out[n..]);
                    }
                }
                Err(_) => return false,
            }
        } else {
            // Earlier bytes still wait: send what the socket takes now, in order.
            self.backlog.push(out);
            if self.send_backlog().is_err() {
                return false;
            }
        }
        while self.backlog.len() > self.ctx.response_buffer {
            match self.send_backlog() {
                Ok(true) => break,
                Ok(false) => {
                    if !wait_ready(
                        self.io.fd(),
                        nix::poll::PollFlags::POLLOUT,
                        self.ctx.stall_timeout,
                    ) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// [`send`](Self::send) during the app call: sets TCP_NODELAY first (fails harmlessly on
    /// unix sockets).
    fn stream(&mut self) -> i32 {
        if !self.streaming {
            self.streaming = true;
            let _ = nix::sys::socket::setsockopt(
                &self.io.fd(),
                nix::sys::socket::sockopt::TcpNoDelay,
                &true,
            );
        }
        match self.send() {
            Ok(()) => abi::FC_OK,
            Err(e) => e,
        }
    }

    fn start_response(&mut self, status: u16, reason: &[u8], fields: &[FcField]) -> i32 {
        let pairs = fields.iter().map(|field| {
            // SAFETY: the app's field strings are valid for this call (ABI contract).
            unsafe {
                (
                    field.name.as_bytes().unwrap_or_default(),
                    field.value.as_bytes().unwrap_or_default(),
                )
            }
        });
        match self.proto.response().start(status, reason, pairs) {
            Ok(()) => {
                self.failure = self.failure.filter(|&s| s != 500);
                abi::FC_OK
            }
            Err(ResponseError::State) => abi::FC_ERR_STATE,
            Err(ResponseError::Invalid(problem)) => {
                logging::error(format_args!(
                    "app {}: refused response: {problem}",
                    self.ctx.app.name()
                ));
                self.failure = Some(500);
                abi::FC_ERR_INVALID
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> i32 {
        if self.broken {
            return abi::FC_ERR_IO;
        }
        if self.failure == Some(500) {
            return abi::FC_ERR_STATE;
        }
        match self.proto.response().write(data) {
            Ok(true) => self.stream(),
            Ok(false) => abi::FC_OK,
            Err(_) => abi::FC_ERR_STATE,
        }
    }

    fn flush(&mut self) -> i32 {
        if self.broken {
            return abi::FC_ERR_IO;
        }
        if self.failure.is_some() {
            return abi::FC_ERR_STATE;
        }
        self.proto.response().flush();
        self.stream()
    }

    /// The responder's `sendfile`: `count` bytes of regular file `fd` from `offset`, after
    /// the bytes written before them (sent first, with the backlog, so that the file's bytes
    /// follow them on the wire), framed by the protocol machine. Returns the bytes taken or
    /// a negative FC_ERR_* status.
    fn sendfile(&mut self, fd: i32, offset: u64, count: u64) -> i64 {
        if self.broken {
            return abi::FC_ERR_IO.into();
        }
        if self.failure.is_some() {
            return abi::FC_ERR_STATE.into();
        }
        if fd < 0 || self.io.is_tls() {
            return abi::FC_ERR_UNSUPPORTED.into();
        }
        // SAFETY: the app passes an open descriptor it owns for the duration of this call;
        // it is only read through here (fstat, sendfile), never closed.
        let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let regular = nix::sys::stat::fstat(file)
            .ok()
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        let Some(stat) = regular else {
            return abi::FC_ERR_UNSUPPORTED.into();
        };
        let count = count.min(
            u64::try_from(stat.st_size)
                .unwrap_or(0)
                .saturating_sub(offset),
        );
        let Ok(send) = self.proto.response().external(count) else {
            return abi::FC_ERR_STATE.into();
        };
        let status = self.stream();
        if status != abi::FC_OK {
            return status.into();
        }
        let sent = match self
            .drain_backlog()
            .and_then(|()| self.send_file(file, offset, send))
        {
            Ok(sent) => sent,
            Err(status) => {
                self.broken = true;
                return status.into();
            }
        };
        self.proto.response().external_sent(send, sent);
        i64::try_from(count).unwrap_or(i64::MAX)
    }

    /// Sends the whole backlog, waiting at most stall_timeout per stall.
    fn drain_backlog(&mut self) -> Result<(), i32> {
        while !self.backlog.is_empty() {
            match self.send_backlog() {
                Ok(true) => {}
                Ok(false) => {
                    let writable = nix::poll::PollFlags::POLLOUT;
                    if !wait_ready(self.io.fd(), writable, self.ctx.stall_timeout) {
                        return Err(abi::FC_ERR_TIMEOUT);
                    }
                }
                Err(_) => return Err(abi::FC_ERR_IO),
            }
        }
        Ok(())
    }

    /// sendfile(2)s `len` bytes of `file` from `offset` to the socket; the count sent (less
    /// at the end of the file).
    fn send_file(
        &mut self,
        file: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        len: u64,
    ) -> Result<u64, i32> {
        let mut at = i64::try_from(offset).map_err(|_| abi::FC_ERR_INVALID)?;
        let mut done = 0;
        while done < len {
            let piece = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match nix::sys::sendfile::sendfile64(self.io.fd(), file, Some(&mut at), piece) {
                Ok(0) => break,
                Ok(n) => {
                    done += n as u64;
                    self.ctx.count_bytes(0, n);
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    let writable = nix::poll::PollFlags::POLLOUT;
                    if !wait_ready(self.io.fd(), writable, self.ctx.stall_timeout) {
                        return Err(abi::FC_ERR_TIMEOUT);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Err(abi::FC_ERR_IO),
            }
        }
        Ok(done)
    }

    /// Completes the exchange after the app returned `status` at `now`: the rest of the
    /// response (or the error that replaces it), then the unread body, then the keep-alive
    /// decision.
    pub(super) fn finish(&mut self, status: i32, now: Instant) -> Outcome {
        if status != abi::FC_OK && self.failure.is_none() {
            self.failure = Some(500);
        }
        let app = self.ctx.app.name();
        let response = self.proto.response();
        with_date(now, |date| response.set_date(date));
        // The worker may have begun to stop while the app ran, or be overloaded.
        response.allow_keep_alive &= !self.ctx.stopping.load(Ordering::Acquire) && !self.shed;
        match self.failure {
            Some(failure) => {
                response.fail(failure);
            }
            None => {
                self.proto.end_response();
                let response = self.proto.response();
                if response.overflowed() {
                    logging::error(format_args!(
                        "app {app}: wrote more than its Content-Length; the excess was dropped and the connection closes"
                    ));
                }
                if let Some((sent, n)) = response.short() {
                    logging::error(format_args!(
                        "app {app}: response shorter than its Content-Length ({sent} of {n} bytes); closing"
                    ));
                }
            }
        }
        if self.send().is_ok() && self.failure.is_none() {
            self.drain_body();
        }
        if self.broken {
            // The client went away or stalled: nothing more is read or sent.
            self.proto.abort();
        }
        self.proto.finish()
    }

    /// Reads and discards what the app left of the request body, so the next request on the
    /// connection starts at the right byte (at most MAX_DRAIN bytes; past that the
    /// connection closes instead).
    fn drain_body(&mut self) {
        if self.proto.unread() != Unread::Body || !self.proto.response().keeps_alive() {
            return;
        }
        let mut sink = [0u8; 8192];
        let start = self.proto.body_read();
        while self.proto.body_read() - start <= MAX_DRAIN {
            match self.read_body(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
