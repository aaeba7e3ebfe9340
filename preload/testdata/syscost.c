/*
 * syscost prints what the system calls of a lingering close cost on this
 * machine, each in a loop on a connected loopback TCP socket (ns a call,
 * or a pair of calls where one undoes the other):
 *
 *   cc -O2 -o /tmp/syscost preload/testdata/syscost.c && taskset -c 1 /tmp/syscost
 *
 * docs/preload-servers.md cites it: on a virtual machine a system call's
 * entry and exit can dominate what the call does.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N 200000

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

#define TIME(name, stmt)                                                      \
	do {                                                                  \
		double t0 = now();                                            \
		for (int i = 0; i < N; i++) {                                 \
			stmt;                                                 \
		}                                                             \
		printf("%-24s %6.0f ns\n", name, (now() - t0) / N);          \
	} while (0)

int main(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&sa, &sl) != 0) {
		perror("listen");
		return 1;
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		return 1;
	}
	int s = accept(l, NULL, NULL), ep = epoll_create1(0);
	if (s < 0 || ep < 0) {
		perror("accept");
		return 1;
	}
	struct tcp_info ti;
	struct sockaddr_storage ss;
	struct epoll_event ev = {.events = EPOLLIN};
	socklen_t len;
	int q;
	TIME("getpid", getpid());
	TIME("getsockopt TCP_INFO", (len = sizeof ti, getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len)));
	TIME("getpeername", (len = sizeof ss, getpeername(s, (struct sockaddr *)&ss, &len)));
	TIME("recv, nothing there", recv(s, NULL, 65536, MSG_TRUNC | MSG_DONTWAIT));
	TIME("ioctl SIOCOUTQ", ioctl(s, SIOCOUTQ, &q));
	TIME("fcntl dup + close", close(fcntl(s, F_DUPFD_CLOEXEC, 100)));
	TIME("epoll_ctl ADD + DEL", (epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev), epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL)));
	TIME("clock_gettime (vDSO)", now());
	return 0;
}
