//! `reuseport` (nginx's `listen ... reuseport`, issue #28): one listening socket per worker
//! on each TCP address ferricorn bound itself, all in the listener's SO_REUSEPORT group, so
//! that each worker accepts from its own queue. Worker number 0 uses the listener itself;
//! numbers 1 and up use the sockets here. The master holds them all, so a worker's queue
//! outlives the worker: its replacement (the same number) takes the connections waiting in
//! it. Sockets beyond the workers wanted are closed; connections waiting in one then are
//! reset by the kernel, or moved to another socket of the group when
//! `net.ipv4.tcp_migrate_req` is 1. A USR2 upgrade hands them all to the new master (worker
//! number N of the new master accepts from the old master's socket N), so that retiring the
//! old master closes no queue.

use crate::listeners::{self, Address, ListenOptions, Listener};
use crate::logging;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The per-worker sockets of every split listener.
#[derive(Debug, Default)]
pub struct WorkerSockets {
    /// Per split listener (by its configured address): the sockets numbered 1 and up.
    sets: Vec<(Address, Vec<OwnedFd>)>,
}

/// The address `listener` is bound to (its real port when `bind` said port 0).
fn bound_address(listener: &Listener) -> Option<SocketAddr> {
    let local: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(listener.raw_fd()).ok()?;
    if let Some(v4) = local.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).into());
    }
    local
        .as_sockaddr_in6()
        .map(|v6| std::net::SocketAddrV6::from(*v6).into())
}

impl WorkerSockets {
    /// Sockets for `count` workers on every TCP listener of `bind` in `listeners` (binding
    /// more with `options`, closing those past `count`, forgetting listeners that are
    /// gone). A listener whose sockets cannot be bound (one inherited without SO_REUSEPORT,
    /// say) stays shared by the workers: logged, one line each time.
    pub fn resize(&mut self, listeners: &[Listener], count: usize, options: ListenOptions) {
        self.sets
            .retain(|(address, _)| listeners.iter().any(|l| &l.address == address));
        for listener in listeners {
            if !matches!(listener.address, Address::Tcp(_)) {
                continue;
            }
            let Some(real) = bound_address(listener) else {
                continue;
            };
            let at = match self.sets.iter().position(|(a, _)| a == &listener.address) {
                Some(at) => at,
                None => {
                    self.sets.push((listener.address.clone(), Vec::new()));
                    self.sets.len() - 1
                }
            };
            let sockets = &mut self.sets[at].1;
            sockets.truncate(count.saturating_sub(1));
            while sockets.len() + 1 < count {
                match listeners::bind_listener(&Address::Tcp(real), options) {
                    Ok(bound) => sockets.push(bound.fd),
                    Err(e) => {
                        logging::error(format_args!("reuseport: {e}; its workers share one queue"));
                        self.sets.remove(at);
                        break;
                    }
                }
            }
        }
    }

    /// The socket worker number `number` accepts from on `listener`: its own, or the
    /// listener itself (number 0, or a listener not split).
    pub fn socket_for(&self, listener: &Listener, number: usize) -> RawFd {
        let own = number.checked_sub(1).and_then(|k| {
            let (_, sockets) = self.sets.iter().find(|(a, _)| a == &listener.address)?;
            sockets.get(k)
        });
        own.map_or(listener.raw_fd(), |fd| fd.as_raw_fd())
    }

    /// In a worker just forked: closes the other workers' sockets (a socket closed by the
    /// master must not live on in a worker that does not accept from it) and keeps
    /// `number`'s.
    pub fn keep_only_in_child(&mut self, number: usize) {
        for (_, sockets) in &mut self.sets {
            let mut index = 0;
            sockets.retain(|_| {
                index += 1;
                index == number
            });
        }
    }

    /// Adopts `fd` as worker number `number`'s socket on the listener configured as
    /// `address` (handed over by the previous master on USR2). Numbers arrive in order from
    /// 1; a socket out of order is closed.
    pub fn adopt(&mut self, address: Address, number: usize, fd: OwnedFd) {
        let at = match self.sets.iter().position(|(a, _)| a == &address) {
            Some(at) => at,
            None => {
                self.sets.push((address, Vec::new()));
                self.sets.len() - 1
            }
        };
        let sockets = &mut self.sets[at].1;
        if sockets.len() + 1 == number {
            sockets.push(fd);
        }
    }

    /// Every per-worker socket: the listener's configured address, the worker number (1 and
    /// up) and the descriptor.
    pub fn each(&self) -> impl Iterator<Item = (&Address, usize, RawFd)> + '_ {
        self.sets.iter().flat_map(|(address, sockets)| {
            (1..)
                .zip(sockets)
                .map(move |(number, fd)| (address, number, fd.as_raw_fd()))
        })
    }

    /// Whether any listener is split.
    pub fn is_split(&self) -> bool {
        self.sets.iter().any(|(_, sockets)| !sockets.is_empty())
    }
}
