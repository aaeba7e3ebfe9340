/*
 * A TCP server for liblinger's tests, with the ways real servers close a
 * connection. It listens on 127.0.0.1 (an ephemeral port, printed on stdout
 * as "PORT n"), and for every connection reads the request (REQ bytes),
 * writes the last word (RESP bytes), and closes while the client is still
 * uploading, so that bytes are unread at the close. It runs until SIGTERM,
 * then exits normally (so that destructors and LeakSanitizer run).
 *
 *   server MODE RESP REQ THREADS
 *
 * MODE says how the connection is closed:
 *   close        close(2)
 *   dup2         the JDK NIO pre-close: dup2 a half-closed socketpair end
 *                over the socket, then close(2)
 *   close_range  close_range(fd, ~0U, 0): every number from the socket's up,
 *                the library's own included (which it must keep)
 *   fclose       the answer written through a fully buffered FILE, fclose
 *   solinger0    SO_LINGER with a zero timeout, then close(2)
 *   fork         close(2), then fork a child that lists its sockets on
 *                stderr ("child sockets N") and stays a while
 *   vfork        before answering, vfork a child that closes the socket
 *                and exits, as a spawning child closes what it inherited
 *                (the parent's socket must stay as it was); then close(2)
 *   exec         close(2), then posix_spawn this program as "listfds",
 *                which lists its sockets on stderr ("exec sockets N")
 *   nofile       fills the descriptor table before the close, so that
 *                the library's duplicate fails (EMFILE)
 *   shared       dup(2) the socket, close both (a shared socket: plain)
 *   syscall      syscall(SYS_close, fd), as libuv (Node.js) closes
 *   rawdup       duplicates the socket with syscall(SYS_dup), which the
 *                library does not see, closes the socket, and holds the
 *                duplicate 600 ms more: the library's epoll set must not
 *                report the socket once its own duplicate is gone
 *   epoll        the socket in an epoll set, closed without EPOLL_CTL_DEL (as
 *                nginx does); the set must then report nothing for it:
 *                "stale epoll events N" on stderr
 *   waitfin      waits for the client's FIN before answering, then close(2)
 *   eintr        close(2), with SIGALRM every millisecond interrupting the
 *                program's system calls (no SA_RESTART)
 *   listfds      (internal) see exec
 *   outbound     connects to 127.0.0.1:$OUTBOUND_PORT instead of accepting,
 *                again and again, and serves each connection as "close"
 * THREADS threads accept and serve at once. With SERVER_IPV6=1 the server
 * listens on ::1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *mode;
static size_t resp, req;
static int lfd, marker = -1;
static volatile sig_atomic_t stop;
static char *self;
static int nthreads;

static int count_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *e;
	char path[300], link[64];
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof link - 1);
		if (k > 0) {
			link[k] = 0;
			if (strncmp(link, "socket:", 7) == 0)
				n++;
		}
	}
	closedir(d);
	return n;
}

static int read_full(int fd, size_t n)
{
	char buf[4096];
	while (n > 0) {
		ssize_t k = read(fd, buf, n < sizeof buf ? n : sizeof buf);
		/* SIGTERM ends a wait for a request: in outbound mode a connect
		 * can succeed just as the test's listener closes, and the
		 * kernel does not always reset it (the ACK that completes it
		 * finds the listener gone), leaving a connection whose peer
		 * never writes. */
		if (k < 0 && errno == EINTR && !stop)
			continue;
		if (k <= 0)
			return -1;
		n -= (size_t)k;
	}
	return 0;
}

static int write_full(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static char *answer;

static void serve(int fd)
{
	if (read_full(fd, req) != 0) {
		close(fd);
		return;
	}
	if (strcmp(mode, "fclose") == 0) {
		FILE *f = fdopen(fd, "w");
		if (f == NULL) {
			close(fd);
			return;
		}
		setvbuf(f, NULL, _IOFBF, resp + 1);
		fwrite(answer, 1, resp, f); /* all of it still in the buffer */
		if (fclose(f) != 0)
			perror("fclose");
		return;
	}
	if (strcmp(mode, "vfork") == 0) {
		pid_t p = vfork();
		if (p == 0) {
			close(fd);
			_exit(0);
		}
		if (p < 0)
			perror("vfork");
		else
			waitpid(p, NULL, 0);
	}
	if (strcmp(mode, "waitfin") == 0) {
		struct pollfd p = {.fd = fd, .events = POLLRDHUP};
		poll(&p, 1, 5000);
	}
	int ep = -1;
	if (strcmp(mode, "epoll") == 0) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 0xdead};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
			perror("epoll_ctl");
	}
	write_full(fd, answer, resp);
	int r = 0;
	if (strcmp(mode, "dup2") == 0) {
		if (dup2(marker, fd) < 0)
			perror("dup2");
		r = close(fd);
	} else if (strcmp(mode, "close_range") == 0) {
		r = close_range((unsigned)fd, ~0U, 0);
	} else if (strcmp(mode, "solinger0") == 0) {
		struct linger l = {1, 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
		r = close(fd);
	} else if (strcmp(mode, "syscall") == 0) {
		r = (int)syscall(SYS_close, fd);
	} else if (strcmp(mode, "rawdup") == 0) {
		int d = (int)syscall(SYS_dup, fd);
		r = close(fd);
		usleep(600 * 1000);
		close(d);
	} else if (strcmp(mode, "shared") == 0) {
		int d = dup(fd);
		close(fd);
		r = close(d);
	} else if (strcmp(mode, "nofile") == 0) {
		int fill[4096], n = 0;
		while (n < 4096 && (fill[n] = open("/dev/null", O_RDONLY)) >= 0)
			n++;
		errno = 0;
		r = close(fd);
		if (r != 0 || errno != 0)
			fprintf(stderr, "close: %d errno %d\n", r, errno);
		while (n > 0)
			close(fill[--n]);
	} else {
		errno = 0;
		r = close(fd);
		/* The real close's result and an untouched errno. */
		if (errno != 0)
			fprintf(stderr, "close changed errno to %d\n", errno);
	}
	if (r != 0)
		fprintf(stderr, "close: %s\n", strerror(errno));
	/* A second close of the same number is the program's own bug, and
	 * must fail as it would without the library (with one thread only:
	 * with more, another's accept may have taken the number; and only
	 * if the number is still free, since the ASan runtime, starting the
	 * library's thread, may open a file on it meanwhile). */
	if (nthreads == 1 && fcntl(fd, F_GETFD) < 0 && (close(fd) == 0 || errno != EBADF))
		fprintf(stderr, "second close did not fail with EBADF\n");
	if (ep >= 0) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, 100);
		fprintf(stderr, "stale epoll events %d\n", n);
		close(ep);
	}
	if (strcmp(mode, "fork") == 0) {
		pid_t p = fork();
		if (p == 0) {
			fprintf(stderr, "child sockets %d\n", count_sockets());
			usleep(300 * 1000);
			_exit(0);
		}
	} else if (strcmp(mode, "exec") == 0) {
		char *argv[] = {self, "listfds", "0", "0", "1", NULL};
		pid_t p;
		int e = posix_spawn(&p, self, NULL, NULL, argv, environ);
		if (e != 0)
			fprintf(stderr, "posix_spawn: %s\n", strerror(e));
		else
			waitpid(p, NULL, 0);
	}
}

static void *worker(void *arg)
{
	(void)arg;
	/* The library takes the peer from accept's address when the program
	 * asks for one whole, and asks the kernel otherwise: every third
	 * accept passes none, every third one too short a buffer. */
	for (unsigned i = 0; !stop; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = i % 3 == 2 ? 4 : sizeof ss;
		int fd = i % 3 == 0 ? accept(lfd, NULL, NULL) : accept(lfd, (struct sockaddr *)&ss, &sl);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (!stop)
				perror("accept");
			break;
		}
		serve(fd);
	}
	return NULL;
}

static void on_alarm(int sig) { (void)sig; }

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

/* outbound is the server as a client: it connects, and then serves the
 * connection as "close" does, until SIGTERM. */
static int outbound(void)
{
	const char *p = getenv("OUTBOUND_PORT");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	a.sin_port = htons((uint16_t)(p ? atoi(p) : 0));
	mode = "close";
	printf("PORT 0\n");
	fflush(stdout);
	while (!stop) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
			close(fd);
			usleep(10 * 1000);
			continue;
		}
		serve(fd);
	}
	fprintf(stderr, "sockets at exit %d\n", count_sockets());
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: server MODE RESP REQ THREADS\n");
		return 2;
	}
	self = argv[0];
	mode = argv[1];
	resp = strtoul(argv[2], NULL, 10);
	req = strtoul(argv[3], NULL, 10);
	int threads = atoi(argv[4]);
	nthreads = threads;
	if (strcmp(mode, "listfds") == 0) {
		fprintf(stderr, "exec sockets %d\n", count_sockets());
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* children reap themselves */
	struct sigaction sa = {0};
	sa.sa_handler = on_term; /* no SA_RESTART: accept returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	if (strcmp(mode, "eintr") == 0) {
		struct sigaction al = {0};
		al.sa_handler = on_alarm;
		sigaction(SIGALRM, &al, NULL);
		struct itimerval it = {{0, 1000}, {0, 1000}};
		setitimer(ITIMER_REAL, &it, NULL);
	}
	answer = malloc(resp + 1);
	for (size_t i = 0; i < resp; i++)
		answer[i] = (char)('a' + i % 26);
	if (strcmp(mode, "dup2") == 0) {
		int sp[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
			return 1;
		shutdown(sp[0], SHUT_RDWR);
		close(sp[1]);
		marker = sp[0];
	}
	if (strcmp(mode, "nofile") == 0) {
		struct rlimit rl = {64, 64};
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (strcmp(mode, "outbound") == 0)
		return outbound();
	int v6 = getenv("SERVER_IPV6") != NULL;
	lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr *addr = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a;
	socklen_t al = v6 ? sizeof a6 : sizeof a;
	if (bind(lfd, addr, al) != 0 || listen(lfd, 1024) != 0) {
		perror("listen");
		return 1;
	}
	getsockname(lfd, addr, &al);
	printf("PORT %d\n", ntohs(v6 ? a6.sin6_port : a.sin_port));
	fflush(stdout);
	pthread_t t[64];
	if (threads < 1 || threads > 64)
		threads = 1;
	for (int i = 1; i < threads; i++) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old); /* SIGTERM goes to main */
		pthread_create(&t[i], NULL, worker, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	worker(NULL);
	/* exit, not return from the workers: the others are still in accept. */
	fprintf(stderr, "sockets at exit %d\n", count_sockets());
	fflush(stderr);
	exit(0);
}
