// SPDX-License-Identifier: GPL-2.0
/*
 * The socket layer's C side: the fields of the opaque struct sock, the one-line wrappers of
 * kernel_sendmsg/kernel_recvmsg (a msghdr set up in C, where its layout is known) and the
 * socket setup every in-kernel TCP user of the block layer does (nvme-tcp, nbd, DRBD). No
 * logic: each function is the API it names. The Rust declarations are in rust/net/ffi.rs.
 */
#include <linux/blk-mq.h>
#include <linux/in.h>
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <linux/socket.h>
#include <linux/tcp.h>
#include <linux/uio.h>
#include <net/net_namespace.h>
#include <net/sock.h>

struct net *pf_current_net(void);
int pf_sock_create(struct net *net, struct socket **res);
void pf_sock_setup(struct socket *sock, long timeo);
void pf_sock_release(struct socket *sock);
int pf_sock_bind_v4(struct socket *sock, __be32 addr, __be16 port);
int pf_sock_connect_v4(struct socket *sock, __be32 addr, __be16 port);
int pf_sock_peer_v4(struct socket *sock, __be32 *addr, __be16 *port);
int pf_sock_send(struct socket *sock, struct kvec *vec, size_t n, size_t len, bool more);
int pf_sock_send_rq(struct socket *sock, struct request *rq);
int pf_sock_recv(struct socket *sock, void *buf, size_t len);
bool pf_sock_readable(struct socket *sock);
void pf_sock_shutdown(struct socket *sock);
long pf_msecs_to_jiffies(unsigned int ms);

/* The network namespace of the writing process (the agent's): the module's sockets live there. */
struct net *pf_current_net(void) { return current->nsproxy->net_ns; }

/*
 * A kernel TCP socket in net. sock_create_kern takes no reference on net; the sock takes one,
 * as nvme-tcp does (the netns may go before the socket otherwise: CVE-2025-21884's class).
 */
int pf_sock_create(struct net *net, struct socket **res)
{
	int ret = sock_create_kern(net, AF_INET, SOCK_STREAM, IPPROTO_TCP, res);

	if (!ret)
		sk_net_refcnt_upgrade((*res)->sk);
	return ret;
}

/*
 * What a socket in the write-out path needs: no Nagle delay, no linger (data queued to a peer
 * that was declared lost never reaches it later), two SYN retries, bounded blocking sends and
 * receives (timeo jiffies; also bounds a blocking connect), allocations that never recurse into
 * I/O and may use the reserves (SOCK_MEMALLOC), no task page fragments.
 */
void pf_sock_setup(struct socket *sock, long timeo)
{
	struct sock *sk = sock->sk;

	tcp_sock_set_nodelay(sk);
	sock_no_linger(sk);
	tcp_sock_set_syncnt(sk, 2);
	sock_set_reuseaddr(sk);
	WRITE_ONCE(sk->sk_sndtimeo, timeo);
	WRITE_ONCE(sk->sk_rcvtimeo, timeo);
	sk->sk_allocation = GFP_NOIO;
	sk->sk_use_task_frag = false;
	sk_set_memalloc(sk);
}

/* Releases a socket from pf_sock_create or kernel_accept (after pf_sock_setup). */
void pf_sock_release(struct socket *sock)
{
	if (sock->sk && sock_flag(sock->sk, SOCK_MEMALLOC))
		sk_clear_memalloc(sock->sk);
	sock_release(sock);
}

int pf_sock_bind_v4(struct socket *sock, __be32 addr, __be16 port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = port, .sin_addr.s_addr = addr };

	return kernel_bind(sock, (struct sockaddr_unsized *)&sin, sizeof(sin));
}

int pf_sock_connect_v4(struct socket *sock, __be32 addr, __be16 port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = port, .sin_addr.s_addr = addr };

	return kernel_connect(sock, (struct sockaddr_unsized *)&sin, sizeof(sin), 0);
}

int pf_sock_peer_v4(struct socket *sock, __be32 *addr, __be16 *port)
{
	struct sockaddr_in sin = {};
	int ret = kernel_getpeername(sock, (struct sockaddr *)&sin);

	if (ret < 0)
		return ret;
	*addr = sin.sin_addr.s_addr;
	*port = sin.sin_port;
	return 0;
}

/*
 * kernel_sendmsg of n kvecs (len bytes in all); no SIGPIPE; more: more of the frame follows
 * (MSG_MORE). Returns bytes sent or -errno.
 */
int pf_sock_send(struct socket *sock, struct kvec *vec, size_t n, size_t len, bool more)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0) };

	return kernel_sendmsg(sock, &msg, vec, n, len);
}

/*
 * Sends a write request's data pages without a copy (MSG_SPLICE_PAGES: the socket takes page
 * references, as nvme-tcp does; a page that cannot be spliced, sendpage_ok, is copied), more
 * of the frame following. Returns 0 when all of it went out, or -errno (the frame is broken:
 * the caller ends the connection).
 */
int pf_sock_send_rq(struct socket *sock, struct request *rq)
{
	struct req_iterator iter;
	struct bio_vec bv;

	rq_for_each_segment(bv, rq, iter) {
		/* A copy: the loop advances by bv's own length, which must stay whole. */
		struct bio_vec left = bv;

		while (left.bv_len) {
			struct msghdr msg = { .msg_flags = MSG_NOSIGNAL | MSG_MORE };
			int ret;

			if (sendpage_ok(left.bv_page))
				msg.msg_flags |= MSG_SPLICE_PAGES;
			iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, &left, 1, left.bv_len);
			ret = sock_sendmsg(sock, &msg);
			if (ret <= 0)
				return ret ? ret : -EPIPE;
			left.bv_offset += ret;
			left.bv_len -= ret;
		}
	}
	return 0;
}

/* kernel_recvmsg of len bytes into buf, waiting for all of them (or the timeout, or a close). */
int pf_sock_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
	struct kvec vec = { .iov_base = buf, .iov_len = len };

	return kernel_recvmsg(sock, &msg, &vec, 1, len, MSG_WAITALL | MSG_NOSIGNAL);
}

/*
 * Whether a receive would return at once: a byte is waiting, or the connection ended or failed
 * (the receive then reports it). Peeks one byte without waiting and leaves it queued.
 */
bool pf_sock_readable(struct socket *sock)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
	char byte;
	struct kvec vec = { .iov_base = &byte, .iov_len = 1 };

	return kernel_recvmsg(sock, &msg, &vec, 1, 1, MSG_PEEK | MSG_DONTWAIT | MSG_NOSIGNAL) != -EAGAIN;
}

/* Wakes every thread blocked on the socket: their calls return an error. */
void pf_sock_shutdown(struct socket *sock) { kernel_sock_shutdown(sock, SHUT_RDWR); }

long pf_msecs_to_jiffies(unsigned int ms) { return msecs_to_jiffies(ms); }
