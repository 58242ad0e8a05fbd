//! ferricorn: a pre-fork HTTP/1.1 application server for Linux, in the mould of gunicorn.
//!
//! A master process ([`master`]) binds the listeners ([`listeners`]), forks worker processes
//! ([`worker`], reporting to the master with [`report`] messages, counting on the
//! [`scoreboard`]) that serve connections with a pool of threads ([`pool`]): the driver ([`connection`]) does the I/O around the sans-I/O HTTP/1.1
//! state machine ([`proto`], on the vocabulary of [`http`]), trusting proxies as
//! [`forwarded`] says. Applications are `cdylib` plugins loaded through the gateway ABI
//! ([`gateway`]). Settings live in [`config`] (gunicorn's names it does not have in
//! [`gunicorn`]); logs in [`logging`] and [`access_log`]; the command line in [`cli`];
//! privileges, environment and process titles in [`process`]; the systemd protocol in
//! [`systemd`]; the USR2 binary upgrade in [`upgrade`]; Prometheus metrics in [`metrics`]; the control socket in [`control`]; TLS in [`tls`]; the socket and the per-request system calls in [`transport`]; the trial load of a reload or `--check-config` in [`probe`].

#![warn(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod connection;
pub mod control;
pub mod forwarded;
pub mod gateway;
pub mod gunicorn;
pub mod http;
pub mod listeners;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod process;
pub mod proto;
pub mod report;
pub mod reuseport;
pub mod scoreboard;
pub mod systemd;
pub mod tls;
pub mod transport;
pub mod upgrade;
pub mod worker;
