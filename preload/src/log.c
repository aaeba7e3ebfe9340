/*
 * Evidence: counters per outcome, LINGER_LOG's JSON line per connection,
 * and with LINGER_LOG_SUMMARY a line of counters every N seconds (from the
 * loop's thread, once it runs) and at exit. Lines go out with one write(2)
 * on a descriptor opened O_APPEND, so lines from several processes (a
 * server's forked workers) do not interleave. Nothing is ever written to
 * the program's stdout.
 */
#define _GNU_SOURCE
#include "linger.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const lg_outcome_names[LG_NOUTCOMES] = {
	[LG_PEER_CLOSED] = "peer_closed",
	[LG_PEER_RESET] = "peer_reset",
	[LG_IDLE] = "idle",
	[LG_HARD_CAP] = "hard_cap",
	[LG_BUDGET] = "budget",
	[LG_RELEASED] = "released",
	[LG_SHUTDOWN] = "shutdown",
	[LG_PLAIN] = "plain",
};

static int log_fd = -1;
static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t counts[LG_NOUTCOMES];
static uint64_t discarded_total, unacked_total;

void lg_warn(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "liblinger: ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	int saved = errno;
	if (write(2, buf, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
	errno = saved;
}

void lg_log_open(void)
{
	if (lg_cfg.log_path == NULL)
		return;
	int fd = open(lg_cfg.log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		lg_warn("LINGER_LOG=\"%s\" cannot be opened (%s); logging nothing", lg_cfg.log_path, strerror(errno));
		return;
	}
	log_fd = lg_high_fd(fd);
}

int lg_log_is_fd(int fd) { return fd >= 0 && fd == log_fd; }

int lg_log_wants_unacked(void) { return log_fd >= 0 || lg_cfg.summary_ns > 0; }

void lg_log_move_fd(void)
{
	int n = lg_dup_own(log_fd);
	lg_mark_set(log_fd, 0);
	log_fd = n; /* -1 if there was no room: logging stops */
}

/* The child keeps the log (its descriptor is inherited and O_APPEND) and
 * starts counting from zero: its counters are its own. */
void lg_log_after_fork_child(void)
{
	pthread_mutex_init(&cmu, NULL);
	memset(counts, 0, sizeof counts);
	discarded_total = unacked_total = 0;
}

static void emit(const char *buf, size_t n)
{
	int fd = log_fd >= 0 ? log_fd : 2;
	if (write(fd, buf, n) < 0) {
		/* a full disk does not stop the program */
	}
}

static int format_time(char *buf, size_t n)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
	return (int)k + snprintf(buf + k, n - k, ".%06ldZ", ts.tv_nsec / 1000);
}

static void format_peer(const struct lg_addr *a, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	if (a->family == AF_INET && inet_ntop(AF_INET, a->ip, ip, sizeof ip))
		snprintf(buf, n, "%s:%u", ip, a->port);
	else if (a->family == AF_INET6 && inet_ntop(AF_INET6, a->ip, ip, sizeof ip))
		snprintf(buf, n, "[%s]:%u", ip, a->port);
	else
		snprintf(buf, n, "");
}

void lg_log_report(enum lg_outcome o, const struct lg_addr *peer, int64_t held_ns,
                   int64_t discarded, int64_t unacked, const char *err)
{
	int saved = errno;
	pthread_mutex_lock(&cmu);
	counts[o]++;
	if (discarded > 0)
		discarded_total += (uint64_t)discarded;
	if (unacked > 0)
		unacked_total++;
	pthread_mutex_unlock(&cmu);
	if (log_fd < 0 || lg_cfg.summary_ns > 0)
		goto out;
	char t[48], p[64], line[512];
	format_time(t, sizeof t);
	format_peer(peer, p, sizeof p);
	int n = snprintf(line, sizeof line,
	                 "{\"time\":\"%s\",\"pid\":%d,\"outcome\":\"%s\",\"peer\":\"%s\",\"held_ns\":%lld,"
	                 "\"discarded\":%lld,\"unacked\":%lld%s%s%s}\n",
	                 t, (int)getpid(), lg_outcome_names[o], p, (long long)held_ns, (long long)discarded,
	                 (long long)unacked, err ? ",\"err\":\"" : "", err ? err : "", err ? "\"" : "");
	if (n > 0)
		emit(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
out:
	errno = saved;
}

/* lg_log_summary writes the counters, to LINGER_LOG or else stderr, when
 * LINGER_LOG_SUMMARY is set. */
void lg_log_summary(void)
{
	if (lg_cfg.summary_ns <= 0)
		return;
	int saved = errno;
	char t[48], line[1024];
	format_time(t, sizeof t);
	pthread_mutex_lock(&cmu);
	int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"pid\":%d,\"lingering\":%d,\"outcomes\":{", t,
	                 (int)getpid(), lg_loop_lingering());
	for (int i = 0; i < LG_NOUTCOMES && n < (int)sizeof line; i++)
		n += snprintf(line + n, sizeof line - (size_t)n, "%s\"%s\":%llu", i ? "," : "", lg_outcome_names[i],
		              (unsigned long long)counts[i]);
	if (n < (int)sizeof line)
		n += snprintf(line + n, sizeof line - (size_t)n, "},\"discarded_bytes\":%llu,\"unacked\":%llu}\n",
		              (unsigned long long)discarded_total, (unsigned long long)unacked_total);
	pthread_mutex_unlock(&cmu);
	if (n > 0)
		emit(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
	errno = saved;
}
