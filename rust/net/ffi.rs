// SPDX-License-Identifier: GPL-2.0

//! Declarations of the socket layer's C side (`rust/net/helpers.c`) and of the exported socket
//! functions the kernel crate's bindings leave out.

use kernel::bindings;

// The kernel structs appear only behind pointers, which C and Rust pass alike.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn pf_current_net() -> *mut bindings::net;
    pub(crate) fn pf_sock_create(net: *mut bindings::net, res: *mut *mut bindings::socket) -> i32;
    pub(crate) fn pf_sock_setup(sock: *mut bindings::socket, timeo: i64);
    pub(crate) fn pf_sock_release(sock: *mut bindings::socket);
    pub(crate) fn pf_sock_bind_v4(sock: *mut bindings::socket, addr: u32, port: u16) -> i32;
    pub(crate) fn pf_sock_connect_v4(sock: *mut bindings::socket, addr: u32, port: u16) -> i32;
    pub(crate) fn pf_sock_peer_v4(sock: *mut bindings::socket, addr: *mut u32, port: *mut u16) -> i32;
    pub(crate) fn pf_sock_send(sock: *mut bindings::socket, vec: *mut bindings::kvec, n: usize, len: usize, more: bool) -> i32;
    pub(crate) fn pf_sock_send_rq(sock: *mut bindings::socket, rq: *mut bindings::request) -> i32;
    pub(crate) fn pf_sock_recv(sock: *mut bindings::socket, buf: *mut u8, len: usize) -> i32;
    pub(crate) fn pf_sock_readable(sock: *mut bindings::socket) -> bool;
    pub(crate) fn pf_sock_shutdown(sock: *mut bindings::socket);
    pub(crate) fn pf_msecs_to_jiffies(ms: u32) -> i64;
    pub(crate) fn kernel_listen(sock: *mut bindings::socket, backlog: i32) -> i32;
    pub(crate) fn kernel_accept(sock: *mut bindings::socket, newsock: *mut *mut bindings::socket, flags: i32) -> i32;
}
