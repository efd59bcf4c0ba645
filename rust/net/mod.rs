// SPDX-License-Identifier: GPL-2.0

//! The thin layer over kernel TCP sockets, beside `blk` and under the same rules: all of the
//! peer wing's `unsafe` is here (and in `rust/net/helpers.c`), with a `// SAFETY:` comment on
//! every block; the peer wing above it is safe Rust.
//!
//! - [`sock::Sock`]: an owned kernel TCP socket in the configuring process's network namespace
//!   (its reference held by the socket), set up for the write-out path (no delay, no linger,
//!   bounded timeouts, reclaim-safe allocations); listen, accept, connect, send and receive
//!   whole buffers, shut down; released in a no-I/O scope.

mod ffi;
pub(crate) mod sock;
