/*
 * The interposed libc calls, and the mark of every descriptor number.
 *
 * The marks are one byte per descriptor number in an anonymous mapping sized
 * from RLIMIT_NOFILE's hard limit when the library loads (capped at 2^24).
 * A byte array rather than a bitmap: each number needs a few flags (accepted,
 * SO_LINGER seen, shared, ours), and bytes are updated with plain atomic
 * stores, where bits in a shared word would need read-modify-write cycles
 * between threads accepting and closing neighbouring numbers. The mapping is
 * MAP_NORESERVE and untouched pages are never backed, so a process with a
 * million-descriptor limit and a hundred sockets pays for one page. A close
 * of an unmarked number costs a bounds check and one byte load: no system
 * call, no lock. A lock-free hash table would save the virtual space and
 * cost a probe per close; the space is free, the probe is not. Two tables
 * of the same kind sit beside the marks, read only for marked numbers: the
 * program's epoll set of each socket, and the peer its accept returned.
 *
 * Numbers above the table (a hard limit raised after load) are never
 * marked: their close is plain.
 */
#define _GNU_SOURCE
#include "linger.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint8_t *marks;
static size_t nmarks;
/* The epoll set each marked socket was added to by the program, plus one;
 * -1 for more than one. A table beside the marks, read only for numbers
 * whose mark says LG_M_EPOLL (see epoll_ctl). */
static int *epoll_of;
/* The peer of each accepted socket, as accept returned it to the program,
 * beside the marks: a close then needs no getpeername (a system call, about
 * a microsecond on a virtual machine) for the per-address caps and the log.
 * family 0: not known (the program passed no address, or too short a
 * buffer), and the close asks the kernel. Written before the mark, which
 * publishes it. */
static struct lg_addr *peer_of;
/* The highest number ever marked, so that fork and close_range scan only
 * that far. */
static int high_water = -1;
/* Where the library's own descriptors go (F_DUPFD's lower bound), so that
 * they do not take the low numbers a program expects to get next: half the
 * soft RLIMIT_NOFILE, at most 1024 (FD_SETSIZE, where select() ends). */
static int own_base;
/* The process the library's state belongs to: a vfork child, which runs in
 * its parent's memory without the fork handlers, has another pid and
 * closes plainly (its close only drops its reference to the socket). */
static pid_t owner;

/*
 * Whether the process may have a child in its memory: set, for good, by
 * the first vfork, or clone with CLONE_VM, that the program calls. Until
 * then a lingering close needs no getpid to know it runs in the owner
 * (getpid is a system call, about a microsecond on a virtual machine:
 * one of the few the hand-off makes). Most servers never vfork; Python's
 * subprocess and the JDK's VFORK launch mechanism do, and pay the getpid
 * from then on.
 *
 * The two calls are interposed by trampolines that set the flag and jump
 * to the next definition: a C wrapper cannot be, since vfork returns twice
 * on one stack and the child's return would clobber the wrapper's frame
 * under the suspended parent (glibc's own vfork keeps the return address
 * in a register for that reason). Without a trampoline for the
 * architecture the flag starts set. The fallbacks are glibc's __vfork and
 * __clone, for a call made before the constructor has run.
 */
#if defined(__x86_64__)
__attribute__((visibility("hidden"))) int lg_vforked;
__attribute__((visibility("hidden"))) void *lg_next_vfork, *lg_next_clone;
extern char lg_vfork_self[] __attribute__((visibility("hidden")));
extern char lg_clone_self[] __attribute__((visibility("hidden")));
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, @function\n"
        ".globl lg_vfork_self\n"
        ".hidden lg_vfork_self\n"
        "vfork:\n"
        "lg_vfork_self:\n"
        "	endbr64\n"
        "	movl $1, lg_vforked(%rip)\n"
        "	movq lg_next_vfork(%rip), %rax\n"
        "	testq %rax, %rax\n"
        "	jz 1f\n"
        "	jmp *%rax\n"
        "1:	jmp __vfork@PLT\n"
        ".size vfork, .-vfork\n"
        /* clone(fn, stack, flags, arg, ...): flags in %edx; the
         * arguments pass through untouched (%rax and %r11 are scratch
         * at a call). */
        ".globl clone\n"
        ".type clone, @function\n"
        ".globl lg_clone_self\n"
        ".hidden lg_clone_self\n"
        "clone:\n"
        "lg_clone_self:\n"
        "	endbr64\n"
        "	testl $0x100, %edx\n" /* CLONE_VM */
        "	jz 2f\n"
        "	movl $1, lg_vforked(%rip)\n"
        "2:	movq lg_next_clone(%rip), %rax\n"
        "	testq %rax, %rax\n"
        "	jz 3f\n"
        "	jmp *%rax\n"
        "3:	jmp __clone@PLT\n"
        ".size clone, .-clone\n");
#else
static int lg_vforked = 1;
#endif

/* in_vfork_child says whether this runs in a child in the owner's memory
 * (vfork, clone with CLONE_VM): its closes are plain, and leave the marks,
 * which are the owner's, as they are. Python's subprocess child closes
 * every descriptor (close_range) before it execs. */
static int in_vfork_child(void)
{
	return __atomic_load_n(&lg_vforked, __ATOMIC_RELAXED) && getpid() != owner;
}

static int (*real_close)(int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_close_range)(unsigned int, unsigned int, int);
static int (*real_fclose)(FILE *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_socket)(int, int, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static long (*real_syscall)(long, ...);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);

/* resolve looks the real calls up. It runs from the constructor, and again
 * from any wrapper called before the constructor (another library's
 * constructor may close or accept first); the stores are idempotent. */
static void resolve(void)
{
#define R(name) *(void **)&real_##name = dlsym(RTLD_NEXT, #name)
	R(close);
	R(accept);
	R(accept4);
	R(dup);
	R(dup2);
	R(dup3);
	R(fcntl);
	R(close_range);
	R(fclose);
	R(setsockopt);
	R(socket);
	R(connect);
	R(sendmsg);
	R(syscall);
	R(epoll_ctl);
#undef R
#if defined(__x86_64__)
	lg_next_vfork = dlsym(RTLD_NEXT, "vfork");
	lg_next_clone = dlsym(RTLD_NEXT, "clone");
	/* A library loaded before this one that defines either (the ASan
	 * runtime intercepts vfork) is the one the program calls, and the
	 * flag would never be set: then it is set now. */
	if (dlsym(RTLD_DEFAULT, "vfork") != (void *)lg_vfork_self ||
	    dlsym(RTLD_DEFAULT, "clone") != (void *)lg_clone_self)
		__atomic_store_n(&lg_vforked, 1, __ATOMIC_RELAXED);
#endif
}
#define REAL(name) (__builtin_expect(real_##name == NULL, 0) ? (resolve(), real_##name) : real_##name)

uint8_t lg_mark_get(int fd)
{
	if (fd < 0 || (size_t)fd >= nmarks)
		return 0;
	return __atomic_load_n(&marks[fd], __ATOMIC_ACQUIRE);
}

static void raise_high_water(int fd)
{
	int h = __atomic_load_n(&high_water, __ATOMIC_RELAXED);
	while (fd > h && !__atomic_compare_exchange_n(&high_water, &h, fd, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void lg_mark_set(int fd, uint8_t m)
{
	if (fd < 0 || (size_t)fd >= nmarks)
		return;
	if (m != 0)
		raise_high_water(fd);
	__atomic_store_n(&marks[fd], m, __ATOMIC_RELEASE);
}

void lg_mark_or(int fd, uint8_t m)
{
	if (fd < 0 || (size_t)fd >= nmarks)
		return;
	raise_high_water(fd);
	__atomic_fetch_or(&marks[fd], m, __ATOMIC_ACQ_REL);
}

static void mark_and(int fd, uint8_t m)
{
	if (fd >= 0 && (size_t)fd < nmarks)
		__atomic_fetch_and(&marks[fd], m, __ATOMIC_ACQ_REL);
}

/* lg_mark_take clears fd's mark and returns what it was: of two threads
 * closing the same number at once, one takes the mark. */
uint8_t lg_mark_take(int fd)
{
	if (fd < 0 || (size_t)fd >= nmarks)
		return 0;
	return __atomic_exchange_n(&marks[fd], 0, __ATOMIC_ACQ_REL);
}

int lg_real_close(int fd) { return REAL(close)(fd); }

/* set_peer records the address accept or connect gave for fd, if it is a
 * whole IPv4 or IPv6 one, and forgets any earlier one otherwise. */
static void set_peer(int fd, const struct sockaddr *sa, socklen_t len)
{
	lg_addr_from(sa, len, &peer_of[fd]);
}

int lg_peer_get(int fd, struct lg_addr *a)
{
	if (fd < 0 || (size_t)fd >= nmarks || peer_of[fd].family == 0)
		return 0;
	*a = peer_of[fd];
	return 1;
}

/* lg_high_fd moves a descriptor of the library's to own_base or above
 * (close-on-exec), closes the original, and marks it ours. If there is no
 * room up there, it stays where it is. */
int lg_high_fd(int fd)
{
	if (fd >= own_base)
		goto mark;
	int h = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, own_base);
	if (h >= 0) {
		REAL(close)(fd);
		fd = h;
	}
mark:
	lg_mark_set(fd, LG_M_OURS);
	return fd;
}

/* lg_dup_own duplicates a socket for the library: close-on-exec, so that a
 * program started while it lingers does not inherit it (and keep it open),
 * at own_base or above if there is room. */
int lg_dup_own(int fd)
{
	int d = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, own_base);
	if (d < 0 && (errno == EMFILE || errno == EINVAL))
		d = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 0);
	if (d >= 0)
		lg_mark_set(d, LG_M_OURS);
	return d;
}

static void before_fork(void) { lg_loop_lock(); }

/* after_fork_parent: every socket marked at the fork now has copies in the
 * child. A lingering close of one would shut the connection down for the
 * child too (shutdown acts on the socket, not on a descriptor), so from now
 * on the parent's close of it is plain: it only drops a reference, and
 * sends nothing while the child holds one. */
static void share_all(void)
{
	int h = __atomic_load_n(&high_water, __ATOMIC_RELAXED);
	for (int fd = 0; fd <= h && (size_t)fd < nmarks; fd++)
		if (__atomic_load_n(&marks[fd], __ATOMIC_RELAXED) & LG_M_ACCEPTED)
			lg_mark_or(fd, LG_M_SHARED);
}

static void after_fork_parent(void)
{
	share_all();
	lg_loop_unlock();
}

/* after_fork_child: the child has copies of the library's duplicates and of
 * its epoll descriptor, but not its thread. It closes them. A
 * close here drops only the child's reference to each lingering socket: the
 * kernel ends a socket when its last descriptor goes, and the parent's
 * duplicate still holds it, so nothing leaves on the wire and the parent's
 * lingering goes on undisturbed. A shutdown, which acts on the socket
 * itself, must not happen here, and does not. The child starts its own
 * thread when it first hands a socket off. Its inherited accepted sockets
 * are the parent's too (share_all), so they close plainly. */
static void after_fork_child(void)
{
	int h = __atomic_load_n(&high_water, __ATOMIC_RELAXED);
	lg_loop_after_fork_child(); /* forgets the entries, reinitialises the lock */
	lg_log_after_fork_child();
	for (int fd = 0; fd <= h && (size_t)fd < nmarks; fd++) {
		uint8_t m = __atomic_load_n(&marks[fd], __ATOMIC_RELAXED);
		if ((m & LG_M_OURS) && !lg_log_is_fd(fd)) {
			marks[fd] = 0;
			REAL(close)(fd);
		}
	}
	share_all();
	owner = getpid();
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		own_base = rl.rlim_cur / 2 < 1024 ? (int)(rl.rlim_cur / 2) : 1024;
}

__attribute__((constructor)) static void lg_init(void)
{
	int saved = errno;
	resolve();
	lg_config_load();
	if (lg_cfg.disabled)
		goto out;
	struct rlimit rl;
	size_t n = 1 << 20;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n)
			n = rl.rlim_max < 1024 ? 1024 : rl.rlim_max;
		else if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max > n)
			n = rl.rlim_max > (1u << 24) ? (1u << 24) : rl.rlim_max;
		own_base = rl.rlim_cur / 2 < 1024 ? (int)(rl.rlim_cur / 2) : 1024;
	}
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		lg_warn("cannot map the descriptor table (%zu bytes); lingering is off", n);
		goto out;
	}
	void *q = mmap(NULL, n * sizeof(int), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (q == MAP_FAILED) {
		munmap(p, n);
		lg_warn("cannot map the descriptor table (%zu bytes); lingering is off", n * sizeof(int));
		goto out;
	}
	void *pa = mmap(NULL, n * sizeof(struct lg_addr), PROT_READ | PROT_WRITE,
	                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (pa == MAP_FAILED) {
		munmap(p, n);
		munmap(q, n * sizeof(int));
		lg_warn("cannot map the descriptor table (%zu bytes); lingering is off", n * sizeof(struct lg_addr));
		goto out;
	}
	marks = p;
	epoll_of = q;
	peer_of = pa;
	owner = getpid();
	__atomic_store_n(&nmarks, n, __ATOMIC_RELEASE);
	lg_log_open(); /* after nmarks: its descriptor is marked ours */
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
out:
	errno = saved;
}

__attribute__((destructor)) static void lg_fini(void)
{
	int saved = errno;
	if (nmarks > 0)
		lg_log_summary();
	errno = saved;
}

/* on_accept marks fd, just accepted on listener l, if it is a TCP socket,
 * and records its peer from the alen bytes of addr that hold it: the
 * smaller of what the caller offered and what accept wrote (accept
 * truncates a longer address and then returns its whole length). The
 * listener's own byte remembers which kind it gives, so that only its
 * first accept asks the kernel (SO_PROTOCOL); an accepted socket also
 * inherits the listener's SO_LINGER. */
static void on_accept(int l, int fd, const struct sockaddr *addr, socklen_t alen)
{
	if (fd < 0 || (size_t)fd >= nmarks)
		return;
	int saved = errno;
	uint8_t lm = lg_mark_get(l);
	if (!(lm & (LG_M_LTCP | LG_M_LOTHER))) {
		int proto = 0;
		socklen_t len = sizeof proto;
		int tcp = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
		lm |= tcp ? LG_M_LTCP : LG_M_LOTHER;
		lg_mark_or(l, tcp ? LG_M_LTCP : LG_M_LOTHER);
	}
	if (lm & LG_M_LTCP) {
		set_peer(fd, addr, alen);
		lg_mark_set(fd, LG_M_ACCEPTED | (lm & (LG_M_LINGER0 | LG_M_LINGERPOS)));
	} else
		lg_mark_set(fd, 0);
	errno = saved;
}

static int do_accept(int s, struct sockaddr *addr, socklen_t *len)
{
	socklen_t offered = addr != NULL && len != NULL ? *len : 0;
	int fd = REAL(accept)(s, addr, len);
	on_accept(s, fd, addr, fd >= 0 && offered > 0 && *len < offered ? *len : offered);
	return fd;
}

static int do_accept4(int s, struct sockaddr *addr, socklen_t *len, int flags)
{
	socklen_t offered = addr != NULL && len != NULL ? *len : 0;
	int fd = REAL(accept4)(s, addr, len, flags);
	on_accept(s, fd, addr, fd >= 0 && offered > 0 && *len < offered ? *len : offered);
	return fd;
}

/* takeover closes a marked socket with release, the caller's way of letting
 * its descriptor go, and hands the socket to the loop. It returns
 * release's result with release's errno. */
static int takeover(int fd, uint8_t m, int (*release)(void *), void *arg)
{
	int saved = errno;
	/* No cancellation inside: the hand-off takes the loop's lock and
	 * writes the log, and a thread cancelled there would leave the lock
	 * held and the duplicate unowned. */
	int cancel;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	struct lg_handoff h;
	lg_prepare(fd, m, &h);
	errno = saved;
	int r = release(arg);
	saved = errno;
	if (r < 0 && REAL(fcntl)(fd, F_GETFD) >= 0)
		/* Still the program's: a dup2 whose old descriptor was bad.
		 * (Its epoll registration, if any, is gone: lg_prepare had to
		 * remove it while the number was the socket's.) */
		lg_abandon(&h, fd, m);
	else if (r < 0 && saved == EBADF)
		lg_abandon(&h, -1, 0); /* closed by another thread meanwhile */
	else
		lg_complete(&h);
	pthread_setcancelstate(cancel, NULL);
	errno = saved;
	return r;
}

static int release_close(void *arg) { return REAL(close)(*(int *)arg); }

static int do_close(int fd)
{
	if (fd >= 0 && (size_t)fd < nmarks) {
		uint8_t m = __atomic_load_n(&marks[fd], __ATOMIC_RELAXED);
		if (__builtin_expect(m != 0, 0)) {
			if (m & LG_M_OURS) {
				/* Not the program's: without the library this number
				 * would not be open. */
				errno = EBADF;
				return -1;
			}
			if (in_vfork_child())
				return REAL(close)(fd);
			m = lg_mark_take(fd);
			if ((m & (LG_M_ACCEPTED | LG_M_SHARED)) == LG_M_ACCEPTED)
				return takeover(fd, m, release_close, &fd);
		}
	}
	return REAL(close)(fd);
}

struct dup_args {
	int oldfd, newfd, flags, three;
};

static int release_dup(void *arg)
{
	struct dup_args *a = arg;
	return a->three ? REAL(dup3)(a->oldfd, a->newfd, a->flags) : REAL(dup2)(a->oldfd, a->newfd);
}

/* dup_onto handles dup2 and dup3 onto newfd, which closes what newfd was:
 * the JDK's NIO closes a socket by first dup2'ing a half-closed socketpair
 * end onto it ("pre-close"), so this is a close. A duplicate of oldfd's
 * marked socket shares it. */
static int dup_onto(struct dup_args *a)
{
	uint8_t m = lg_mark_get(a->newfd);
	int r;
	if (m != 0 && in_vfork_child())
		return release_dup(a);
	if (a->oldfd != a->newfd && m != 0) {
		if (m & LG_M_OURS)
			lg_loop_release_fd(a->newfd); /* the number is the program's to take */
		m = lg_mark_take(a->newfd);
		if ((m & (LG_M_ACCEPTED | LG_M_SHARED)) == LG_M_ACCEPTED)
			r = takeover(a->newfd, m, release_dup, a);
		else if ((r = release_dup(a)) < 0)
			lg_mark_set(a->newfd, m & ~LG_M_OURS);
	} else {
		r = release_dup(a);
	}
	if (r >= 0 && a->oldfd != a->newfd) {
		uint8_t om = lg_mark_get(a->oldfd);
		if (om & LG_M_ACCEPTED) {
			lg_mark_or(a->oldfd, LG_M_SHARED);
			lg_mark_set(r, om | LG_M_SHARED);
		}
	}
	return r;
}

static int do_dup2(int oldfd, int newfd)
{
	struct dup_args a = {oldfd, newfd, 0, 0};
	return dup_onto(&a);
}

static int do_dup3(int oldfd, int newfd, int flags)
{
	struct dup_args a = {oldfd, newfd, flags, 1};
	return dup_onto(&a);
}

/* share marks a new descriptor of a marked socket, and the old one, shared:
 * closing one of them must not shut the socket down under the other. */
static void share(int oldfd, int newfd)
{
	if (newfd < 0)
		return;
	uint8_t m = lg_mark_get(oldfd);
	if (m & LG_M_ACCEPTED) {
		int saved = errno;
		lg_mark_or(oldfd, LG_M_SHARED);
		lg_mark_set(newfd, (m & ~LG_M_OURS) | LG_M_SHARED);
		errno = saved;
	} else {
		lg_mark_set(newfd, 0);
	}
}

LG_EXPORT int dup(int fd)
{
	int r = REAL(dup)(fd);
	share(fd, r);
	return r;
}

LG_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	/* Every fcntl command takes at most one argument, an int or a
	 * pointer; on the ABIs glibc supports both travel in the same
	 * register, as glibc's own fcntl assumes. */
	void *arg = va_arg(ap, void *);
	va_end(ap);
	int r = REAL(fcntl)(fd, cmd, arg);
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		share(fd, r);
	return r;
}

LG_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

static int sys_close_range(unsigned first, unsigned last, int flags)
{
	if (real_close_range == NULL)
		resolve();
	if (real_close_range != NULL)
		return real_close_range(first, last, flags);
	return (int)REAL(syscall)(SYS_close_range, first, last, flags);
}

/* close_range closes every number in [first, last]: each marked socket in
 * it goes through the lingering close, and the library's own descriptors
 * in it are skipped (the program does not own them). With
 * CLOSE_RANGE_CLOEXEC nothing closes now; with CLOSE_RANGE_UNSHARE the
 * caller first gets a private descriptor table, where a close only drops a
 * reference, so both pass through. */
static int do_close_range(unsigned int first, unsigned int last, int flags)
{
	if (nmarks == 0 || (flags & (CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE)) || first > last)
		return sys_close_range(first, last, flags);
	int h = __atomic_load_n(&high_water, __ATOMIC_ACQUIRE);
	if (h < 0 || first > (unsigned)h || in_vfork_child()) /* nothing marked in the range, or not ours */
		return sys_close_range(first, last, flags);
	int saved = errno, rc = 0, err = 0;
	/* First the lingering closes, one by one: each makes a duplicate of
	 * the library's, possibly inside the range. */
	unsigned end = (unsigned)h < last ? (unsigned)h : last;
	for (unsigned fd = first; fd <= end; fd++) {
		uint8_t m = __atomic_load_n(&marks[fd], __ATOMIC_RELAXED);
		if ((m & (LG_M_ACCEPTED | LG_M_SHARED | LG_M_OURS)) != LG_M_ACCEPTED)
			continue;
		m = lg_mark_take((int)fd);
		if ((m & (LG_M_ACCEPTED | LG_M_SHARED)) == LG_M_ACCEPTED) {
			int one = (int)fd;
			takeover(one, m, release_close, &one);
		}
	}
	/* Then the rest of the range, around the library's descriptors as
	 * they are now. */
	h = __atomic_load_n(&high_water, __ATOMIC_ACQUIRE);
	end = (unsigned)h < last ? (unsigned)h : last;
	unsigned from = first;
	for (unsigned fd = first; fd <= end; fd++) {
		uint8_t m = __atomic_load_n(&marks[fd], __ATOMIC_RELAXED);
		if (m == 0)
			continue;
		if (m & LG_M_OURS) {
			if (fd > from && sys_close_range(from, fd - 1, flags) < 0 && !err)
				rc = -1, err = errno;
			from = fd + 1;
			continue;
		}
		lg_mark_set((int)fd, 0); /* closed below */
	}
	if (from <= last && sys_close_range(from, last, flags) < 0 && !err)
		rc = -1, err = errno;
	errno = err ? err : saved;
	return rc;
}

/* fclose of a stream on a marked socket: the stream's buffered bytes are
 * flushed by fclose itself, before its close, and the shutdown comes after
 * (lg_complete), so the FIN follows them. glibc's fclose closes the
 * descriptor internally, not through close(). */
static int release_fclose(void *arg) { return REAL(fclose)(arg); }

LG_EXPORT int fclose(FILE *fp)
{
	if (nmarks > 0 && fp != NULL) {
		int fd = fileno(fp);
		uint8_t m = lg_mark_get(fd);
		if ((m & LG_M_ACCEPTED) && !in_vfork_child()) {
			m = lg_mark_take(fd);
			if ((m & (LG_M_ACCEPTED | LG_M_SHARED)) == LG_M_ACCEPTED)
				return takeover(fd, m, release_fclose, fp);
		}
	}
	return REAL(fclose)(fp);
}

/* setsockopt remembers SO_LINGER: a zero timeout asks close for a reset,
 * which is honoured unless LINGER_SO_LINGER=ignore, and a positive one
 * would make the loop's own close block, so the hand-off turns it off. */
LG_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int r = REAL(setsockopt)(fd, level, name, val, len);
	if (r == 0 && nmarks > 0 && level == SOL_SOCKET && name == SO_LINGER && len >= sizeof(struct linger)) {
		const struct linger *l = val;
		mark_and(fd, (uint8_t) ~(LG_M_LINGER0 | LG_M_LINGERPOS));
		if (l->l_onoff)
			lg_mark_or(fd, l->l_linger == 0 ? LG_M_LINGER0 : LG_M_LINGERPOS);
	}
	return r;
}

/* socket clears whatever mark a number freed behind the library's back (a
 * raw close system call, io_uring) left, so that a new outbound socket is
 * never taken for an accepted one. */
LG_EXPORT int socket(int domain, int type, int protocol)
{
	int fd = REAL(socket)(domain, type, protocol);
	if (fd >= 0 && (size_t)fd < nmarks && marks[fd] != 0)
		lg_mark_set(fd, 0);
	return fd;
}

/* connect marks outbound TCP connections with LINGER_OUTBOUND=1. */
LG_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int r = REAL(connect)(fd, addr, len);
	if (lg_cfg.outbound && nmarks > 0 && addr != NULL &&
	    (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) &&
	    (r == 0 || errno == EINPROGRESS)) {
		int saved = errno, proto = 0;
		socklen_t pl = sizeof proto;
		if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) == 0 && proto == IPPROTO_TCP &&
		    fd >= 0 && (size_t)fd < nmarks) {
			set_peer(fd, addr, len);
			lg_mark_or(fd, LG_M_ACCEPTED);
		}
		errno = saved;
	}
	return r;
}

/* sendmsg: a marked socket passed to another process (SCM_RIGHTS) is shared
 * from then on. */
LG_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	ssize_t r = REAL(sendmsg)(fd, msg, flags);
	if (r >= 0 && nmarks > 0 && msg != NULL && msg->msg_controllen > 0) {
		for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c != NULL;
		     c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			const unsigned char *d = CMSG_DATA(c);
			for (size_t i = 0; i < n; i++) {
				int s;
				__builtin_memcpy(&s, d + i * sizeof(int), sizeof s);
				if (lg_mark_get(s) & LG_M_ACCEPTED)
					lg_mark_or(s, LG_M_SHARED);
			}
		}
	}
	return r;
}

LG_EXPORT int close(int fd) { return do_close(fd); }

LG_EXPORT int accept(int s, struct sockaddr *addr, socklen_t *len) { return do_accept(s, addr, len); }

LG_EXPORT int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags) { return do_accept4(s, addr, len, flags); }

LG_EXPORT int dup2(int oldfd, int newfd) { return do_dup2(oldfd, newfd); }

LG_EXPORT int dup3(int oldfd, int newfd, int flags) { return do_dup3(oldfd, newfd, flags); }

LG_EXPORT int close_range(unsigned int first, unsigned int last, int flags) { return do_close_range(first, last, flags); }

/*
 * syscall(2): libuv (Node.js) closes with syscall(SYS_close, fd), to avoid
 * close's cancellation point, so the calls that close or accept a socket
 * are routed through their interposed forms when made this way too; their
 * return values and errno follow syscall(2)'s (-1 and errno on failure),
 * which are close's. Every other number passes through with its six
 * arguments, as glibc's own syscall() takes them from the registers and
 * the stack whether the caller passed them or not.
 */
static int do_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);

LG_EXPORT long syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
	long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
	va_end(ap);
	switch (nr) {
	case SYS_close:
		return do_close((int)a);
	case SYS_close_range:
		return do_close_range((unsigned)a, (unsigned)b, (int)c);
#ifdef SYS_dup2
	case SYS_dup2:
		return do_dup2((int)a, (int)b);
#endif
	case SYS_dup3:
		return do_dup3((int)a, (int)b, (int)c);
#ifdef SYS_accept
	case SYS_accept:
		return do_accept((int)a, (struct sockaddr *)b, (socklen_t *)c);
#endif
	case SYS_accept4:
		return do_accept4((int)a, (struct sockaddr *)b, (socklen_t *)c, (int)d);
	case SYS_epoll_ctl:
		return do_epoll_ctl((int)a, (int)b, (int)c, (struct epoll_event *)d);
	}
	return REAL(syscall)(nr, a, b, c, d, e, f);
}

/*
 * epoll_ctl remembers which of the program's epoll sets each accepted socket
 * is in. epoll forgets a socket only when its last descriptor closes, and
 * the library's duplicate keeps it open: without this, the program's set
 * would go on reporting the lingering socket's events with the program's
 * own data for it, a pointer to a connection it has freed (nginx closes
 * without EPOLL_CTL_DEL and relies on exactly that). lg_epoll_forget
 * removes the registration while the program's descriptor, which keys it,
 * is still open.
 */
static int do_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	int r = REAL(epoll_ctl)(epfd, op, fd, ev);
	if (r != 0 || fd < 0 || (size_t)fd >= nmarks)
		return r;
	uint8_t m = __atomic_load_n(&marks[fd], __ATOMIC_RELAXED);
	if (!(m & LG_M_ACCEPTED))
		return r;
	if (op == EPOLL_CTL_ADD) {
		if (!(m & LG_M_EPOLL))
			__atomic_store_n(&epoll_of[fd], epfd + 1, __ATOMIC_RELAXED);
		else if (__atomic_load_n(&epoll_of[fd], __ATOMIC_RELAXED) != epfd + 1)
			__atomic_store_n(&epoll_of[fd], -1, __ATOMIC_RELAXED);
		lg_mark_or(fd, LG_M_EPOLL);
	} else if (op == EPOLL_CTL_DEL && (m & LG_M_EPOLL) &&
	           __atomic_load_n(&epoll_of[fd], __ATOMIC_RELAXED) == epfd + 1) {
		mark_and(fd, (uint8_t)~LG_M_EPOLL);
	}
	return r;
}

LG_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) { return do_epoll_ctl(epfd, op, fd, ev); }

int lg_epoll_forget(int fd, uint8_t mark)
{
	if (!(mark & LG_M_EPOLL))
		return 0;
	int e = __atomic_load_n(&epoll_of[fd], __ATOMIC_RELAXED);
	if (e <= 0)
		return -1; /* in several sets: which ones is not known */
	int saved = errno;
	/* ENOENT or EBADF if the program already took it out or closed the
	 * set: nothing to forget. */
	REAL(epoll_ctl)(e - 1, EPOLL_CTL_DEL, fd, NULL);
	errno = saved;
	return 0;
}
