/*
 * What a close does to a marked socket, in two halves around the caller's
 * own release of its descriptor (close, dup2 over it, fclose).
 *
 * lg_prepare, while the caller's descriptor is still open: one TCP_INFO
 * says whether the peer has closed its side. If it has (or reset), a first
 * drain, at most two non-blocking reads of 64 KiB in all, reads off what it
 * sent, and with nothing left unread the connection is done: the caller's
 * close is plain and sends no RST, with no duplicate, no shutdown and no
 * thread involved. (A peer that has not closed cannot be done by a drain,
 * so it gets none: the loop reads what is there as soon as it has the
 * socket.) A connection not done is duplicated (F_DUPFD_CLOEXEC), so that
 * the caller's close releases only a reference: the kernel ends a socket
 * when its last descriptor goes, so no FIN or RST leaves because of that
 * close. Every step that can fail for want of resources comes here, before
 * the caller's descriptor is gone: on a failure the caller's close is
 * simply plain.
 *
 * lg_complete, after: shutdown(SHUT_WR) acts on the socket, not on a
 * descriptor, and queues the FIN behind the bytes already written, which
 * still go out; then the duplicate goes to the loop. The shutdown comes
 * after the caller's close, as in package linger, so that nothing the
 * caller's other threads still do on that descriptor sees EPIPE from it.
 *
 * Every system call here is on the program's closing path, and on a
 * virtual machine each costs about a microsecond, a few per cent of a
 * short HTTPS connection's server time: so the peer comes from accept when
 * the program asked for it (lg_peer_get), not from getpeername, and the
 * same TCP_INFO that gives the state also says when nothing of ours is
 * queued, which spares the SIOCOUTQ readings.
 */
#define _GNU_SOURCE
#include "linger.h"

#include <errno.h>
#include <linux/sockios.h>
#include <stddef.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define INLINE_MAX (64 << 10)

int64_t lg_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* lg_unsent is how many bytes of ours a SIOCOUTQ reading of q leaves
 * unacknowledged, not counting the FIN, which takes one sequence number
 * once we have shut down writing. */
int64_t lg_unsent(int64_t q) { return q > 1 ? q - 1 : 0; }

/* lg_drain_up_to discards what fd's peer sent, up to budget bytes, in at
 * most reads reads and limit bytes, and says whether the peer closed,
 * reset, or reached the budget. fin says that the peer's FIN had arrived
 * before the first read.
 *
 * MSG_TRUNC on a TCP socket makes recv drop the bytes instead of copying
 * them (tcp(7), since Linux 2.4), so the buffer can be NULL; MSG_DONTWAIT
 * keeps a blocking socket from blocking. A non-blocking TCP recv returns
 * less than asked only when it has emptied the receive queue or reached
 * the FIN (tcp_recvmsg stops at neither while bytes remain), and after a
 * FIN no byte can join the queue: with fin, a short read is the peer's
 * end, and the read that would return 0 is not needed. */
void lg_drain_up_to(int fd, int64_t budget, int64_t limit, int reads, int fin, struct lg_drain *r)
{
	for (int i = 0; i < reads; i++) {
		int64_t want = (budget < limit ? budget : limit) - r->n;
		if (want > (1 << 30))
			want = 1 << 30;
		ssize_t n = recv(fd, NULL, (size_t)want, MSG_TRUNC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR) {
				i--;
				continue;
			}
			r->done = 1;
			r->end = LG_PEER_RESET;
			r->err = errno == ECONNRESET ? NULL : "recv";
			return;
		}
		if (n == 0) {
			r->done = 1;
			r->end = LG_PEER_CLOSED;
			return;
		}
		r->n += n;
		if (r->n >= budget) {
			r->done = 1;
			r->end = LG_BUDGET;
			return;
		}
		if (fin && n < want) {
			r->done = 1;
			r->end = LG_PEER_CLOSED;
			return;
		}
		if (r->n >= limit)
			return;
	}
}

/* lg_addr_from fills a from the first len bytes of sa, if they hold a whole
 * IPv4 or IPv6 address, and zeroes it (family 0: unknown) otherwise. */
void lg_addr_from(const struct sockaddr *sa, socklen_t len, struct lg_addr *a)
{
	memset(a, 0, sizeof *a);
	if (sa != NULL && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
		a->family = AF_INET;
		a->port = ntohs(s->sin_port);
		memcpy(a->ip, &s->sin_addr, 4);
	} else if (sa != NULL && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
		a->family = AF_INET6;
		a->port = ntohs(s->sin6_port);
		memcpy(a->ip, &s->sin6_addr, 16);
	}
}

/* ask_peer is getpeername, for a socket whose accept gave no address. */
static void ask_peer(int fd, struct lg_addr *a)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
		len = 0;
	lg_addr_from((struct sockaddr *)&ss, len, a);
}

/* lg_outq is SIOCOUTQ: our bytes not yet acknowledged (the FIN counts
 * one), or -1. */
int64_t lg_outq(int fd)
{
	int q;
	return ioctl(fd, SIOCOUTQ, &q) == 0 ? q : -1;
}

/* struct tcp_info as Linux fills it up to tcpi_notsent_bytes (Linux 4.6);
 * glibc's declaration ends at tcpi_total_retrans, and <linux/tcp.h>
 * cannot be included beside <netinet/tcp.h>. */
struct tcp_info_notsent {
	struct tcp_info base;
	uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
	uint32_t segs_out, segs_in, notsent_bytes;
};
_Static_assert(offsetof(struct tcp_info_notsent, notsent_bytes) == 144, "Linux's struct tcp_info");

/* peer_closed says whether a socket in state has the peer's FIN (or was
 * reset: TCP_CLOSE), so that reading it can end the connection. */
static int peer_closed(uint8_t state)
{
	switch (state) {
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
	case TCP_TIME_WAIT:
	case TCP_CLOSE:
		return 1;
	}
	return 0;
}

void lg_prepare(int fd, uint8_t mark, struct lg_handoff *h)
{
	memset(h, 0, sizeof *h);
	h->dup = -1;
	h->unacked = -1;
	h->start = lg_now();
	/* TCP_INFO fails on anything but TCP: a number whose mark outlived its
	 * socket (freed by a raw system call) is left to a plain close. */
	struct tcp_info_notsent ti;
	socklen_t tl = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0 || ti.base.tcpi_state == TCP_LISTEN)
		return;
	/* Nothing written and unsent, nothing sent and unacknowledged
	 * (tcpi_unacked counts segments in flight): SIOCOUTQ would read 0
	 * now, and only the FIN after the shutdown, and the caller, whose
	 * close this is, writes nothing more. */
	h->idle_out = tl >= offsetof(struct tcp_info_notsent, notsent_bytes) + sizeof ti.notsent_bytes &&
	              ti.base.tcpi_unacked == 0 && ti.notsent_bytes == 0;
	h->report = 1;
	if (!lg_peer_get(fd, &h->peer))
		ask_peer(fd, &h->peer);
	if ((mark & LG_M_LINGER0) && !lg_cfg.so_linger_ignore) {
		/* The program asked for a reset: it gets one. */
		h->outcome = LG_PLAIN;
		h->err = "SO_LINGER 0 asks for a reset (LINGER_SO_LINGER=ignore lingers instead)";
		return;
	}
	struct lg_drain r = {0};
	if (peer_closed(ti.base.tcpi_state))
		lg_drain_up_to(fd, lg_cfg.max_discard + 1, INLINE_MAX, 2, ti.base.tcpi_state != TCP_CLOSE, &r);
	h->discarded = r.n;
	if (r.done) {
		/* Nothing to linger for: the peer closed or reset and nothing is
		 * unread, or it is past its byte budget, and the RST that the
		 * unread bytes make the close send is the budget's end. */
		h->outcome = r.end;
		h->err = r.err;
		h->unacked = h->idle_out || !lg_log_wants_unacked() ? 0 : lg_outq(fd);
		return;
	}
	int d = lg_dup_own(fd);
	if (d < 0) {
		h->outcome = LG_PLAIN;
		h->err = errno == EMFILE ? "dup: EMFILE (RLIMIT_NOFILE reached)" : "dup failed";
		return;
	}
	if (lg_epoll_forget(fd, mark) != 0) {
		lg_mark_set(d, 0);
		lg_real_close(d);
		h->outcome = LG_PLAIN;
		h->err = "in several epoll sets of the program";
		return;
	}
	if (mark & (LG_M_LINGER0 | LG_M_LINGERPOS)) {
		/* Lingering replaces SO_LINGER: a positive timeout would block
		 * the loop's close until the send queue drained, and a zero one
		 * (ignored on request) would reset the connection at the end. */
		struct linger off = {0, 0};
		setsockopt(d, SOL_SOCKET, SO_LINGER, &off, sizeof off);
	}
	h->dup = d;
}

/* lg_abandon undoes lg_prepare when the caller's release failed: its
 * descriptor is still its own (mark restored if fd >= 0). */
void lg_abandon(struct lg_handoff *h, int fd, uint8_t mark)
{
	if (h->dup >= 0) {
		lg_mark_set(h->dup, 0);
		lg_real_close(h->dup);
		h->dup = -1;
	}
	if (fd >= 0)
		lg_mark_set(fd, mark);
}

void lg_complete(struct lg_handoff *h)
{
	int saved = errno;
	if (h->dup < 0) {
		if (h->report)
			lg_log_report(h->outcome, &h->peer, 0, h->discarded, h->unacked, h->err);
		goto out;
	}
	int d = h->dup;
	if (shutdown(d, SHUT_WR) != 0) {
		enum lg_outcome o = LG_PLAIN;
		const char *why = "shutdown failed";
		if (errno == ENOTCONN) {
			/* The connection already ended: nothing to linger for.
			 * SO_ERROR still holds ECONNRESET if the peer reset it
			 * without closing first. */
			int e = 0;
			socklen_t el = sizeof e;
			getsockopt(d, SOL_SOCKET, SO_ERROR, &e, &el);
			o = e == ECONNRESET ? LG_PEER_RESET : LG_PEER_CLOSED;
			why = NULL;
		}
		lg_mark_set(d, 0);
		lg_real_close(d);
		lg_log_report(o, &h->peer, lg_now() - h->start, h->discarded, -1, why);
		goto out;
	}
	/* Without anything of ours queued before, the shutdown left only the
	 * FIN, which counts as nothing (lg_unsent). */
	lg_loop_add(d, h, h->idle_out ? 0 : lg_outq(d));
out:
	errno = saved;
}
