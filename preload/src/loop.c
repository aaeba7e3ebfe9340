/*
 * The background thread that holds every lingering socket: one epoll set
 * (level-triggered, one-shot) and a timer heap, started on the first hand-off, and
 * the bounds of package linger (MaxConns and MaxConnsPerIP, oldest
 * released first; MaxQueued, aborted with a reset; MaxDiscard; IdleTimeout
 * pushed back while the peer makes progress; MaxHold).
 *
 * Ownership. The loop owns every duplicate from the moment lg_loop_add
 * takes it; only finish closes one. One mutex guards all the state. The
 * thread reads from a socket with it held, but at most DRAIN_READS reads of
 * DRAIN_LIMIT bytes before it lets go, so a closing thread waits at most
 * that long (MSG_TRUNC reads copy nothing). An entry released by a closing
 * thread (evicted under a cap) is not freed at once: an event the thread
 * fetched before may still point at it. It goes on the zombie list, which
 * the thread frees before its next epoll_wait, when no fetched event is
 * left. The thread blocks every signal, so that the program's signals go
 * to its own threads, and it never ends: a process keeps it once it has
 * lingered (waking once per idle timeout while nothing lingers).
 *
 * When the process exits, its lingering sockets close as they would have
 * without the library at that moment: the kernel closes the duplicates,
 * with an RST for any that hold unread bytes.
 */
#define _GNU_SOURCE
#include "linger.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_READS 4
/* COALESCE_NS and LG_SCHED_BATCH can be set at build time (-D) to repeat
 * the measurements that chose the pause and the thread's policy
 * (docs/preload-servers.md). */
#ifndef COALESCE_NS
#define COALESCE_NS (2 * 1000 * 1000)
#endif
_Static_assert(COALESCE_NS > 0 && COALESCE_NS < 1000 * 1000 * 1000, "COALESCE_NS: a pause in nanoseconds, under a second (nanosleep's tv_nsec)");
#define DRAIN_LIMIT (256 << 10)
#define NBUCKETS 1024

struct peer;

struct entry {
	int fd;
	int heap_idx;
	int released;
	enum {
		REG_ONESHOT, /* registered with EPOLLONESHOT, not yet reported */
		REG_FIRED,   /* its one-shot event fetched: disarmed */
		REG_LEVEL,   /* registered again, level-triggered */
	} reg;
	int64_t start, last_active, deadline;
	int64_t discarded;
	int64_t queued; /* SIOCOUTQ at the last look */
	int outq_unknown; /* SIOCOUTQ failed at the hand-off */
	struct entry *prev, *next;   /* every entry, oldest first */
	struct entry *pprev, *pnext; /* the peer's, oldest first */
	struct peer *peer;
	struct entry *zombie;
	struct lg_addr addr;
};

struct peer {
	uint8_t key[17];
	int count;
	struct entry *head, *tail;
	struct peer *hnext;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int ep = -1;
static int started;
static struct entry *all_head, *all_tail;
static int nall;
static struct entry **heap;
static int nheap, capheap;
static struct peer *peers[NBUCKETS];
static int64_t qbytes;
static struct entry *zombies;
static int64_t next_summary;

void lg_loop_lock(void) { pthread_mutex_lock(&mu); }
void lg_loop_unlock(void) { pthread_mutex_unlock(&mu); }
int lg_loop_lingering(void) { return __atomic_load_n(&nall, __ATOMIC_RELAXED); }

/* The heap, by deadline. */
static void heap_swap(int i, int j)
{
	struct entry *t = heap[i];
	heap[i] = heap[j];
	heap[j] = t;
	heap[i]->heap_idx = i;
	heap[j]->heap_idx = j;
}

static void heap_up(int i)
{
	while (i > 0) {
		int p = (i - 1) / 2;
		if (heap[p]->deadline <= heap[i]->deadline)
			break;
		heap_swap(i, p);
		i = p;
	}
}

static void heap_down(int i)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		if (l < nheap && heap[l]->deadline < heap[m]->deadline)
			m = l;
		if (r < nheap && heap[r]->deadline < heap[m]->deadline)
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static int heap_push(struct entry *e)
{
	if (nheap == capheap) {
		int c = capheap ? 2 * capheap : 64;
		struct entry **h = realloc(heap, (size_t)c * sizeof *h);
		if (h == NULL)
			return -1;
		heap = h;
		capheap = c;
	}
	e->heap_idx = nheap;
	heap[nheap++] = e;
	heap_up(e->heap_idx);
	return 0;
}

static void heap_remove(struct entry *e)
{
	int i = e->heap_idx;
	if (i < 0)
		return;
	nheap--;
	if (i != nheap) {
		heap[i] = heap[nheap];
		heap[i]->heap_idx = i;
		heap_down(i);
		heap_up(i);
	}
	e->heap_idx = -1;
}

/* peer_key: an IPv4 address, or an IPv6 prefix of LINGER_IPV6_PREFIX bits
 * (an IPv4-mapped IPv6 address counts as its IPv4 address). */
static void peer_key(const struct lg_addr *a, uint8_t key[17])
{
	memset(key, 0, 17);
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (a->family == AF_INET6 && memcmp(a->ip, mapped, 12) != 0) {
		key[0] = 6;
		int bits = lg_cfg.ipv6_prefix;
		for (int i = 0; i < 16; i++) {
			int b = bits - 8 * i;
			key[1 + i] = b >= 8 ? a->ip[i] : b <= 0 ? 0 : (uint8_t)(a->ip[i] & (0xff << (8 - b)));
		}
	} else if (a->family == AF_INET6) {
		key[0] = 4;
		memcpy(key + 1, a->ip + 12, 4);
	} else {
		key[0] = 4;
		memcpy(key + 1, a->ip, 4);
	}
}

static unsigned key_hash(const uint8_t key[17])
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % NBUCKETS;
}

static struct peer *peer_get(const uint8_t key[17], int create)
{
	unsigned b = key_hash(key);
	for (struct peer *p = peers[b]; p != NULL; p = p->hnext)
		if (memcmp(p->key, key, 17) == 0)
			return p;
	if (!create)
		return NULL;
	struct peer *p = calloc(1, sizeof *p);
	if (p == NULL)
		return NULL;
	memcpy(p->key, key, 17);
	p->hnext = peers[b];
	peers[b] = p;
	return p;
}

static void peer_unlink(struct entry *e)
{
	struct peer *p = e->peer;
	if (p == NULL)
		return;
	if (e->pprev)
		e->pprev->pnext = e->pnext;
	else
		p->head = e->pnext;
	if (e->pnext)
		e->pnext->pprev = e->pprev;
	else
		p->tail = e->pprev;
	e->peer = NULL;
	if (--p->count == 0) {
		unsigned b = key_hash(p->key);
		for (struct peer **pp = &peers[b]; *pp != NULL; pp = &(*pp)->hnext) {
			if (*pp == p) {
				*pp = p->hnext;
				break;
			}
		}
		free(p);
	}
}

static void all_unlink(struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		all_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		all_tail = e->prev;
	e->prev = e->next = NULL;
	__atomic_store_n(&nall, nall - 1, __ATOMIC_RELAXED);
}

/* finish ends e: it reads what of ours is still unacknowledged, closes
 * the duplicate, and reports; mu is held. abort, for MaxQueued, makes the
 * close send RST and free the send queue at once (SO_LINGER 0) instead of
 * leaving it to an orphan socket that keeps sending to a peer that reads
 * slowly on purpose. Otherwise the receive queue is empty (drained) unless
 * the peer is past its budget or sent more since, so the close sends no
 * RST: our FIN is already out and the kernel finishes on its own. */
static void finish(struct entry *e, enum lg_outcome o, const char *err, int abort)
{
	/* Since the shutdown nothing more is queued, so SIOCOUTQ only falls:
	 * a socket whose last reading left nothing of ours but the FIN
	 * unacknowledged needs no new one, and only the log reads it. */
	int64_t unacked = 0;
	if (lg_log_wants_unacked() && (e->outq_unknown || lg_unsent(e->queued) > 0)) {
		int64_t q = lg_outq(e->fd);
		unacked = q < 0 ? -1 : lg_unsent(q);
	}
	/* Deregister explicitly: epoll forgets a socket only when its last
	 * descriptor closes, and the program might hold another (passed to
	 * another process, or duplicated by a raw system call), which would
	 * keep reporting this freed entry. A socket registered with
	 * EPOLLONESHOT whose event was fetched is disarmed: it reports
	 * nothing more until re-armed, so the common ending, the peer's FIN,
	 * needs no epoll_ctl. */
	if (e->reg != REG_FIRED)
		epoll_ctl(ep, EPOLL_CTL_DEL, e->fd, NULL);
	if (abort) {
		struct linger l = {1, 0};
		setsockopt(e->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	}
	/* The mark goes first: once closed, the number may be reused by
	 * another thread at once, and marked by its accept. */
	lg_mark_set(e->fd, 0);
	lg_real_close(e->fd);
	e->fd = -1;
	all_unlink(e);
	peer_unlink(e);
	heap_remove(e);
	qbytes -= e->queued;
	e->queued = 0;
	e->released = 1;
	e->zombie = zombies;
	zombies = e;
	lg_log_report(o, &e->addr, lg_now() - e->start, e->discarded, unacked, err);
}

/* The thread. */

/* drain_one reads e after an event: EPOLLRDHUP in events says the
 * peer's FIN had arrived when epoll_wait looked. A connection registered
 * one-shot (lg_loop_add) and not ended by its first event is registered
 * again, level-triggered: one epoll_ctl for a connection that drains,
 * rather than one per event. */
static void drain_one(struct entry *e, uint32_t events, int64_t now)
{
	struct lg_drain r = {0};
	if (e->reg == REG_ONESHOT)
		e->reg = REG_FIRED;
	lg_drain_up_to(e->fd, lg_cfg.max_discard - e->discarded + 1, DRAIN_LIMIT, DRAIN_READS,
	               (events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) == EPOLLRDHUP, &r);
	e->discarded += r.n;
	if (r.done) {
		finish(e, r.end, r.err, 0);
		return;
	}
	if (r.n > 0)
		e->last_active = now;
	if (e->reg == REG_FIRED) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = e};
		if (epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev) != 0) {
			/* Not expected (the set and the socket are ours);
			 * without events the connection could only wait for
			 * its timers. */
			finish(e, LG_PLAIN, "epoll_ctl failed", 0);
			return;
		}
		e->reg = REG_LEVEL;
	}
}

/* expire handles every timer due at now: past MaxHold the connection ends;
 * one whose peer sent within the idle timeout, acknowledged more of our
 * bytes since the last look, or still has bytes of ours (or our FIN)
 * unacknowledged gets another idle timeout; the rest are idle. While bytes
 * of ours are unacknowledged the kernel is still sending them, and closing
 * would reset a peer that, having missed our last word, still sends. */
static void expire(int64_t now)
{
	while (nheap > 0 && heap[0]->deadline <= now) {
		struct entry *e = heap[0];
		int64_t hard = e->start + lg_cfg.max_hold_ns;
		if (now >= hard) {
			finish(e, LG_HARD_CAP, NULL, 0);
			continue;
		}
		if (e->last_active + lg_cfg.idle_ns <= now) {
			int64_t q = lg_outq(e->fd);
			if (q < 0) {
				finish(e, LG_IDLE, NULL, 0);
				continue;
			}
			if (lg_unsent(q) < lg_unsent(e->queued)) {
				/* tcpi_last_ack_recv dates the acknowledgement. */
				struct tcp_info ti;
				socklen_t tl = sizeof ti;
				if (getsockopt(e->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0) {
					int64_t at = now - (int64_t)ti.tcpi_last_ack_recv * 1000000;
					if (at > e->last_active)
						e->last_active = at;
				}
				if (e->last_active + lg_cfg.idle_ns <= now)
					e->last_active = now;
			} else if (q > 0) {
				e->last_active = now;
			} else {
				finish(e, LG_IDLE, NULL, 0);
				continue;
			}
			qbytes += q - e->queued;
			e->queued = q;
			e->outq_unknown = 0;
		}
		int64_t d = e->last_active + lg_cfg.idle_ns;
		e->deadline = d < hard ? d : hard;
		heap_down(0);
	}
}

static void free_zombies(void)
{
	while (zombies != NULL) {
		struct entry *z = zombies;
		zombies = z->zombie;
		free(z);
	}
}

static void *run(void *arg)
{
	(void)arg;
#ifdef LG_SCHED_BATCH
	/* Not the default: a woken SCHED_BATCH thread does not preempt the
	 * server's, so it wakes less often, but its batches then run longer
	 * at once, and nginx's p99 rose with them. */
	int policy;
	struct sched_param sp;
	if (pthread_getschedparam(pthread_self(), &policy, &sp) == 0 && policy == SCHED_OTHER) {
		sp.sched_priority = 0;
		pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
	}
#endif
	struct epoll_event evs[128];
	for (;;) {
		pthread_mutex_lock(&mu);
		free_zombies();
		int64_t now = lg_now();
		expire(now);
		if (lg_cfg.summary_ns > 0 && now >= next_summary) {
			lg_log_summary();
			next_summary = now + lg_cfg.summary_ns;
		}
		/* With nothing to time, the thread still wakes after the idle
		 * timeout: a socket handed off meanwhile has no earlier deadline
		 * (its own is its hand-off plus the idle timeout), so it needs no
		 * wake-up of its own, which would cost the closing thread a
		 * system call and the loop a context switch per hand-off. */
		int64_t until = nheap > 0 ? heap[0]->deadline - now : lg_cfg.idle_ns;
		if (lg_cfg.summary_ns > 0 && next_summary - now < until)
			until = next_summary - now;
		if (until < 0)
			until = 0;
		int timeout = until > (int64_t)1 << 40 ? 1 << 20 : (int)((until + 999999) / 1000000);
		int epfd = ep;
		pthread_mutex_unlock(&mu);

		int n = epoll_wait(epfd, evs, 128, timeout);
		if (n < 0) {
			if (errno != EINTR)
				usleep(1000); /* not expected; do not spin */
			continue;
		}
		for (int i = 0; i < n; i++) {
			pthread_mutex_lock(&mu);
			struct entry *e = evs[i].data.ptr;
			if (!e->released)
				drain_one(e, evs[i].events, lg_now());
			pthread_mutex_unlock(&mu);
		}
		/* After a batch, a pause, so that a busy server's closes are
		 * drained a batch at a time: without it the thread wakes for
		 * every peer's FIN (a context switch each, on a core the server
		 * wants), and with it at most 1/COALESCE_NS times a second. A
		 * socket whose peer has closed is held that much longer; the
		 * first event after a quiet spell is still taken at once. */
		if (n > 0 && n < 128)
			nanosleep(&(struct timespec){.tv_nsec = COALESCE_NS}, NULL);
	}
	return NULL;
}

/* start_thread creates the epoll set and the thread; mu is held. */
static int start_thread(void)
{
	int e = epoll_create1(EPOLL_CLOEXEC);
	if (e < 0)
		return -1;
	e = lg_high_fd(e);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10); /* virtual; ASan's frames are larger */
	ep = e;
	pthread_t t;
	int err = pthread_create(&t, &attr, run, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		ep = -1;
		lg_mark_set(e, 0);
		lg_real_close(e);
		return -1;
	}
	started = 1;
	next_summary = lg_now() + lg_cfg.summary_ns;
	return 0;
}

static void plain_dup(int fd, const struct lg_handoff *h, const char *why)
{
	lg_mark_set(fd, 0);
	lg_real_close(fd);
	lg_log_report(LG_PLAIN, &h->peer, lg_now() - h->start, h->discarded, -1, why);
}

/* lg_loop_add admits the duplicate fd of a socket shut down for writing,
 * with queued bytes of ours (FIN included) unacknowledged, first making
 * room under the caps by releasing the longest-lingering connections. */
void lg_loop_add(int fd, const struct lg_handoff *h, int64_t queued)
{
	struct entry *e = calloc(1, sizeof *e);
	if (e == NULL) {
		plain_dup(fd, h, "out of memory");
		return;
	}
	pthread_mutex_lock(&mu);
	if (!started && start_thread() != 0) {
		pthread_mutex_unlock(&mu);
		free(e);
		plain_dup(fd, h, "cannot start the thread");
		return;
	}
	uint8_t key[17];
	peer_key(&h->peer, key);
	struct peer *p;
	if (lg_cfg.max_conns_per_ip > 0) {
		while ((p = peer_get(key, 0)) != NULL && p->count >= lg_cfg.max_conns_per_ip)
			finish(p->head, LG_RELEASED, NULL, 0);
	}
	while (nall >= lg_cfg.max_conns && all_head != NULL)
		finish(all_head, LG_RELEASED, NULL, 0);
	if (queued < 0) {
		queued = 0; /* unknown: counted as none against LINGER_MAX_QUEUED */
		e->outq_unknown = 1;
	}
	while (queued > 0 && qbytes + queued > lg_cfg.max_queued) {
		struct entry *o = all_head;
		while (o != NULL && o->queued == 0)
			o = o->next;
		if (o == NULL)
			break;
		finish(o, LG_RELEASED, "queued bytes over LINGER_MAX_QUEUED", 1);
	}
	int64_t now = lg_now();
	e->fd = fd;
	e->heap_idx = -1;
	e->start = h->start;
	e->last_active = now;
	e->discarded = h->discarded;
	e->addr = h->peer;
	int64_t d = now + lg_cfg.idle_ns, hard = e->start + lg_cfg.max_hold_ns;
	e->deadline = d < hard ? d : hard;
	/* One-shot, so that the event that ends most connections, the peer's
	 * FIN, also disarms them (see finish); level-triggered either way, so
	 * that bytes already queued are reported at once. */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = e};
	e->reg = REG_ONESHOT;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 || heap_push(e) != 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
		pthread_mutex_unlock(&mu);
		free(e);
		plain_dup(fd, h, "epoll_ctl failed");
		return;
	}
	e->prev = all_tail;
	if (all_tail)
		all_tail->next = e;
	else
		all_head = e;
	all_tail = e;
	__atomic_store_n(&nall, nall + 1, __ATOMIC_RELAXED);
	if (lg_cfg.max_conns_per_ip > 0 && (p = peer_get(key, 1)) != NULL) {
		e->peer = p;
		e->pprev = p->tail;
		if (p->tail)
			p->tail->pnext = e;
		else
			p->head = e;
		p->tail = e;
		p->count++;
	}
	e->queued = queued;
	qbytes += queued;
	pthread_mutex_unlock(&mu);
}

/* lg_loop_release_fd makes the library's descriptor numbered fd free for
 * the program, which is about to dup2 onto it: a lingering socket there is
 * released; the epoll set moves to another number (the thread picks up the
 * new number at its next wait). */
void lg_loop_release_fd(int fd)
{
	pthread_mutex_lock(&mu);
	if (fd == ep) {
		int n = lg_dup_own(fd);
		if (n >= 0) {
			lg_mark_set(fd, 0);
			ep = n;
		}
	} else if (lg_log_is_fd(fd)) {
		lg_log_move_fd();
	} else {
		for (struct entry *e = all_head; e != NULL; e = e->next) {
			if (e->fd == fd) {
				finish(e, LG_RELEASED, "the program took its descriptor number", 0);
				break;
			}
		}
	}
	pthread_mutex_unlock(&mu);
}

/* lg_loop_after_fork_child forgets the parent's entries in the child (their
 * descriptors are closed by the caller) and reinitialises the lock, which
 * the fork handler held across the fork. */
void lg_loop_after_fork_child(void)
{
	pthread_mutex_init(&mu, NULL);
	for (struct entry *e = all_head; e != NULL;) {
		struct entry *n = e->next;
		free(e);
		e = n;
	}
	free_zombies();
	for (int b = 0; b < NBUCKETS; b++) {
		for (struct peer *p = peers[b]; p != NULL;) {
			struct peer *n = p->hnext;
			free(p);
			p = n;
		}
		peers[b] = NULL;
	}
	free(heap);
	heap = NULL;
	nheap = capheap = 0;
	all_head = all_tail = NULL;
	nall = 0;
	qbytes = 0;
	ep = -1;
	started = 0;
}
