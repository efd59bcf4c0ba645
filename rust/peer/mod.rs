// SPDX-License-Identifier: GPL-2.0

//! The peer wing: what a host needs to talk to the other hosts of its cluster
//! (Documentation/wire-protocol.md). Safe Rust over `net` (sockets) and `klib` (HMAC-SHA256,
//! random bytes); the protocol and its rules are `pfcore::wire`, `pfcore::handshake` and
//! `pfcore::replication`.
//!
//! - [`node`]: this host's identity in the cluster (host id, cluster id, secret, host table)
//!   and its counters.
//! - [`host`]: the control interface's handle: the node and its listener.
//! - [`link`]: an authenticated connection: the handshake from either side, then sealed and
//!   checked frames.
//! - [`listener`]: the thread that accepts connections, and the connections it serves.
//! - [`replica`]: a peer's volume held on this host: its replica slot, records, flushes and
//!   checkpoints, and the answers of a data connection.
//! - [`probe`]: dial a host and measure the round trip of authenticated pings.
//! - [`mirror`]: the primary's side: a wbp volume's replica set, its records, flushes and
//!   checkpoints sent to every member and their answers counted (`cache::peers::Replicas`).
//! - [`member`]: one member of a replica set: its connection, the answers it owes, its state and
//!   credit, and the thread that receives its answers.
//!
//! Built so far: the transport, the handshake, pings, the peer's side of replication (replica
//! slots written from ATTACH, WRITE, FLUSH and CHECKPOINT) and the primary's side. Not built: a
//! member joining a running set, online replay by a member.
//!
//! Imports: `host` -> `listener` -> `replica`, `link` -> `node`; `mirror` -> `member` -> `link`,
//! `node`, `cache::peers`; `replica` -> `cache::attach`, `cache::rebuild` (the checkpoint read) and
//! `blk::io`.
//!
//! Locks: `Node::config` (the identity and host table, copied out under it; never held across a
//! socket call), `PeerHost::listener` (never held while a listener stops) and the listener's
//! `served` list (never held while a thread stops) are never held together; `last_refusal` and
//! the failure bucket are leaves, and so is `Node::replica_cache` (the path is copied out). A
//! replica's attach takes `cache::attach`'s slot table lock under none of them. A mirror's locks
//! are ordered in `mirror.rs` and `member.rs` and taken under none of these.

pub(crate) mod host;
pub(crate) mod link;
pub(crate) mod listener;
pub(crate) mod member;
pub(crate) mod mirror;
pub(crate) mod node;
pub(crate) mod probe;
pub(crate) mod replica;
