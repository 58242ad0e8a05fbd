//! ferricorn: a pre-fork HTTP/1.1 application server for Linux, in the mould of gunicorn.
//!
//! Each folder is one process or one layer:
//!
//! - [`master`]: the master process, an event loop plus a pure plan, and its control
//!   plane: the control socket ([`master::control`]), Prometheus metrics
//!   ([`master::metrics`]), the trial load of a reload or `--check-config`
//!   ([`master::probe`]), the USR2 binary upgrade ([`master::upgrade`]) and per-worker
//!   listening sockets ([`master::reuseport`]). It binds the [`listeners`], hears workers'
//!   [`report`] messages and reads the [`scoreboard`] they write.
//! - [`worker`]: a worker process, its thread pool ([`worker::pool`]), its connection slots
//!   and the bracket around every call into the app ([`worker::call`]).
//! - [`transport`]: the protocol-neutral side of a connection: the socket and its system
//!   calls, TLS ([`transport::tls`]), the PROXY protocol header ([`transport::proxy`]) and
//!   the peer's name.
//! - [`http`]: HTTP's vocabulary (RFC 9110) and its sessions: HTTP/1.1 ([`http::h1`]: the
//!   driver doing the I/O around the sans-I/O machine [`http::h1::proto`]), trusting
//!   proxies as [`forwarded`] says.
//! - [`gateway`]: `cdylib` plugins loaded through the versioned C ABI.
//!
//! Around them: settings in [`config`] (gunicorn's names we do not have in [`gunicorn`]);
//! logs in [`logging`] and [`access_log`]; the command line in [`cli`]; privileges,
//! environment and process titles in [`process`]; the systemd protocol in [`systemd`].

#![warn(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod forwarded;
pub mod gateway;
pub mod gunicorn;
pub mod http;
pub mod listeners;
pub mod logging;
pub mod master;
pub mod process;
pub mod report;
pub mod scoreboard;
pub mod systemd;
pub mod transport;
pub mod worker;
