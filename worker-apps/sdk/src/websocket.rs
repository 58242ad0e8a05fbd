//! WebSocket connections (ABI 1.4): the server owns the connection (handshake, framing,
//! pings, the closing handshake, TLS, backpressure) and the app gets whole messages
//! ([`crate::App::ws_message`]) and sends with a [`WebSocket`] handle, from any thread at
//! any time.
//!
//! An app takes WebSockets by setting [`crate::App::WEBSOCKET`]; a request that asks for
//! one carries a handle ([`crate::Request::websocket`]), and the app accepts it with
//! [`crate::Response::accept_websocket`] or refuses it with any other response.

use crate::abi::{self, FcServer, FcStr};
use std::sync::atomic::{AtomicPtr, Ordering};

/// The server's functions, given to `attach` before `init`.
static SERVER: AtomicPtr<FcServer> = AtomicPtr::new(std::ptr::null_mut());

/// `attach` for every SDK app: keeps the server's functions.
///
/// # Safety
/// Called by the server with a pointer valid for the life of the process (ABI 1.4).
pub unsafe extern "C" fn ffi_attach(server: *const FcServer) {
    SERVER.store(server.cast_mut(), Ordering::Release);
}

fn server() -> Option<&'static FcServer> {
    let server = SERVER.load(Ordering::Acquire);
    // SAFETY: set once by attach with a pointer the server keeps valid for the process.
    unsafe { server.as_ref() }
}

/// One message from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (the server checked it is UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Why a send was refused (nothing was sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed, closing, or unknown (FC_ERR_CLOSED).
    Closed,
    /// The connection's queue is full (`websocket_send_buffer`): the client reads slowly.
    /// Try later or drop the message (FC_ERR_WOULD_BLOCK).
    WouldBlock,
    /// The message is larger than `websocket_send_buffer` (FC_ERR_TOO_LARGE).
    TooLarge,
    /// An invalid close code or reason (FC_ERR_INVALID).
    Invalid,
    /// No server to send through: a server that predates ABI 1.4, or outside a worker.
    Unsupported,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "WebSocket closed",
            SendError::WouldBlock => "WebSocket send queue full",
            SendError::TooLarge => "message larger than websocket_send_buffer",
            SendError::Invalid => "invalid close code or reason",
            SendError::Unsupported => "the server cannot send WebSocket messages",
        })
    }
}

impl std::error::Error for SendError {}

fn status(code: i32) -> Result<(), SendError> {
    match code {
        abi::FC_OK => Ok(()),
        abi::FC_ERR_WOULD_BLOCK => Err(SendError::WouldBlock),
        abi::FC_ERR_TOO_LARGE => Err(SendError::TooLarge),
        abi::FC_ERR_INVALID => Err(SendError::Invalid),
        _ => Err(SendError::Closed),
    }
}

/// A WebSocket connection of this worker process: a plain id, `Copy`, `Send` and `Sync`,
/// usable from any thread at any time, also after the connection closed (sends then fail
/// with [`SendError::Closed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebSocket(u64);

impl WebSocket {
    /// The handle of connection `id` (as the server numbers them).
    pub fn from_id(id: u64) -> WebSocket {
        WebSocket(id)
    }

    /// The connection's id, unique within the worker process.
    pub fn id(self) -> u64 {
        self.0
    }

    fn send(self, opcode: i32, data: &[u8]) -> Result<(), SendError> {
        let server = server().ok_or(SendError::Unsupported)?;
        // SAFETY: `data` is valid for the call; ws_send copies it before returning.
        status(unsafe { (server.ws_send)(self.0, opcode, data.as_ptr(), data.len()) })
    }

    /// Queues a text message.
    pub fn send_text(self, text: &str) -> Result<(), SendError> {
        self.send(abi::FC_WS_TEXT, text.as_bytes())
    }

    /// Queues a binary message.
    pub fn send_binary(self, data: &[u8]) -> Result<(), SendError> {
        self.send(abi::FC_WS_BINARY, data)
    }

    /// Starts the closing handshake with `code` (1000, 1001, 1008, 1011 or 3000..=4999) and
    /// `reason`, after the messages queued before it.
    pub fn close(self, code: u16, reason: &str) -> Result<(), SendError> {
        let server = server().ok_or(SendError::Unsupported)?;
        // SAFETY: `reason` is valid for the call.
        status(unsafe { (server.ws_close)(self.0, i32::from(code), FcStr::new(reason.as_bytes())) })
    }
}
