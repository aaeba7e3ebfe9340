/*
 * closebench: what a close(2) of a descriptor that is not an accepted socket
 * costs, for comparing a run under liblinger with one without.
 *
 *   closebench KIND N ROUNDS
 *
 * KIND is "file" (a regular file, opened N times) or "pipe" (N/2 pipes).
 * Each round opens N descriptors, then times closing them all; it prints
 * the fastest and the median round, in nanoseconds per close:
 *   KIND min_ns X median_ns Y
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: closebench file|pipe N ROUNDS\n");
		return 2;
	}
	const char *kind = argv[1];
	int n = atoi(argv[2]), rounds = atoi(argv[3]);
	if (n < 2 || rounds < 1)
		return 2;
	int *fds = malloc(sizeof(int) * (size_t)n);
	double *per = malloc(sizeof(double) * (size_t)rounds);
	char path[] = "/tmp/closebench.XXXXXX";
	int t = mkstemp(path);
	if (t < 0) {
		perror("mkstemp");
		return 1;
	}
	close(t);
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i += 2) {
			if (strcmp(kind, "pipe") == 0) {
				if (pipe(fds + i) != 0) {
					perror("pipe");
					return 1;
				}
			} else {
				fds[i] = open(path, O_RDONLY);
				fds[i + 1] = open(path, O_RDONLY);
				if (fds[i] < 0 || fds[i + 1] < 0) {
					perror("open");
					return 1;
				}
			}
		}
		int64_t t0 = now();
		for (int i = 0; i < n; i++)
			close(fds[i]);
		per[r] = (double)(now() - t0) / n;
	}
	unlink(path);
	qsort(per, (size_t)rounds, sizeof per[0], cmp);
	printf("%s min_ns %.1f median_ns %.1f\n", kind, per[0], per[rounds / 2]);
	return 0;
}
