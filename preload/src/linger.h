/*
 * liblinger: the lingering close of package linger, preloaded into a server
 * that is not written in Go (LD_PRELOAD=liblinger.so). Shared declarations of
 * the library's files:
 *
 *   config.c     LINGER_* environment variables, with their defaults
 *   interpose.c  the interposed libc calls and the mark of each descriptor
 *   handoff.c    what close does to a marked socket before and after the
 *                caller's descriptor goes
 *   loop.c       the background thread that holds every lingering socket
 *   log.c        LINGER_LOG's JSON lines and the per-outcome counters
 *
 * Only the interposed calls are exported (-fvisibility=hidden); everything
 * declared here is internal to the library.
 */
#ifndef LINGER_H
#define LINGER_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define LG_EXPORT __attribute__((visibility("default")))

/* Outcomes, with the names of package linger's Outcome.String. */
enum lg_outcome {
	LG_PEER_CLOSED,
	LG_PEER_RESET,
	LG_IDLE,
	LG_HARD_CAP,
	LG_BUDGET,
	LG_RELEASED,
	LG_SHUTDOWN,
	LG_PLAIN,
	LG_NOUTCOMES
};
extern const char *const lg_outcome_names[LG_NOUTCOMES];

/* The configuration, read once from the environment (config.c). */
struct lg_config {
	int disabled;          /* LINGER_DISABLE=1 */
	int64_t idle_ns;       /* LINGER_IDLE_TIMEOUT, 2 s */
	int64_t max_hold_ns;   /* LINGER_MAX_HOLD, 30 s */
	int64_t max_discard;   /* LINGER_MAX_DISCARD, 8 MiB */
	int64_t max_queued;    /* LINGER_MAX_QUEUED, 64 MiB */
	int max_conns;         /* LINGER_MAX_CONNS, 4096 */
	int max_conns_per_ip;  /* LINGER_MAX_CONNS_PER_IP, 256; 0: no cap */
	int ipv6_prefix;       /* LINGER_IPV6_PREFIX, 64 */
	int so_linger_ignore;  /* LINGER_SO_LINGER=ignore */
	int outbound;          /* LINGER_OUTBOUND=1 */
	const char *log_path;  /* LINGER_LOG, or NULL */
	int64_t summary_ns;    /* LINGER_LOG_SUMMARY, 0: per-connection lines */
};
extern struct lg_config lg_cfg;
void lg_config_load(void);

/*
 * The mark of each descriptor number, one byte each (interpose.c). A close
 * of a number whose byte is 0 costs that one load and nothing else.
 */
enum {
	LG_M_ACCEPTED = 1,   /* a TCP socket from accept, ours to linger */
	LG_M_LINGER0 = 2,    /* SO_LINGER on with a zero timeout: asks for RST */
	LG_M_LINGERPOS = 4,  /* SO_LINGER on with a positive timeout */
	LG_M_SHARED = 8,     /* another descriptor or process may hold it */
	LG_M_OURS = 16,      /* the library's own: a duplicate, epoll, log */
	LG_M_LTCP = 32,      /* a listener known to give TCP sockets */
	LG_M_LOTHER = 64,    /* a listener known to give other sockets */
	LG_M_EPOLL = 128,    /* registered in the program's epoll set(s) */
};
uint8_t lg_mark_get(int fd);
void lg_mark_set(int fd, uint8_t m);
void lg_mark_or(int fd, uint8_t m);
uint8_t lg_mark_take(int fd);
int lg_real_close(int fd);
int lg_high_fd(int fd); /* moves fd to the library's range, marks it ours */
int lg_dup_own(int fd); /* F_DUPFD_CLOEXEC into the library's range, marked ours */
int lg_epoll_forget(int fd, uint8_t mark); /* 0, or -1 if the socket cannot be taken */
struct lg_addr;
int lg_peer_get(int fd, struct lg_addr *a); /* 1 if accept or connect gave fd's peer */
void lg_addr_from(const struct sockaddr *sa, socklen_t len, struct lg_addr *a);

/* Clock: CLOCK_MONOTONIC in nanoseconds. */
int64_t lg_now(void);

/* A peer address, compact. */
struct lg_addr {
	sa_family_t family; /* AF_INET, AF_INET6, or 0 if unknown */
	uint16_t port;      /* host order */
	uint8_t ip[16];     /* IPv4 in the first 4 bytes */
};

/*
 * A hand-off in progress (handoff.c): lg_prepare runs on the caller's
 * descriptor while it is still open, lg_complete after the caller's
 * descriptor is gone (closed, dup2'd over, fclose'd).
 */
struct lg_handoff {
	int dup;              /* our duplicate, or -1: nothing to linger for */
	int report;           /* whether a plain ending is to be counted */
	int idle_out;         /* nothing of ours was queued (TCP_INFO) */
	enum lg_outcome outcome;
	const char *err;      /* why, for a plain ending */
	int64_t start;
	int64_t discarded;
	int64_t unacked;
	struct lg_addr peer;
};
void lg_prepare(int fd, uint8_t mark, struct lg_handoff *h);
void lg_complete(struct lg_handoff *h);
void lg_abandon(struct lg_handoff *h, int fd, uint8_t mark);

/* Draining (handoff.c), shared with the loop. */
struct lg_drain {
	int64_t n;
	int done;
	enum lg_outcome end;
	const char *err;
};
void lg_drain_up_to(int fd, int64_t budget, int64_t limit, int reads, int fin, struct lg_drain *r);
int64_t lg_unsent(int64_t q);
int64_t lg_outq(int fd); /* SIOCOUTQ, or -1 */

/* The loop (loop.c). */
void lg_loop_add(int fd, const struct lg_handoff *h, int64_t queued);
void lg_loop_release_fd(int fd); /* the application reuses one of our numbers */
void lg_loop_lock(void);
void lg_loop_unlock(void);
void lg_loop_after_fork_child(void);
int lg_loop_lingering(void);

/* Logging and counting (log.c); lg_log_report is called with the loop's lock held or not. */
void lg_log_open(void);
void lg_log_report(enum lg_outcome o, const struct lg_addr *peer, int64_t held_ns,
                   int64_t discarded, int64_t unacked, const char *err);
void lg_log_summary(void);
void lg_log_after_fork_child(void);
int lg_log_is_fd(int fd);
/* lg_log_wants_unacked says whether anything reads what of ours a
 * released connection left unacknowledged: a log line, or the summary.
 * Without either (the default, or a LINGER_LOG that could not be opened)
 * the SIOCOUTQ that would tell is not made. */
int lg_log_wants_unacked(void);
void lg_log_move_fd(void);
void lg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
