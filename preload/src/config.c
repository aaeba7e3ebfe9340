/*
 * The LINGER_* environment variables. The defaults are package linger's
 * (config.go). A value that does not parse, or is out of range, gives one
 * line on stderr naming the variable and the default used instead; the
 * library never stops the program for its configuration.
 */
#define _GNU_SOURCE
#include "linger.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct lg_config lg_cfg;

#define SEC 1000000000LL
#define DEFAULT_IDLE (2 * SEC)
#define DEFAULT_HOLD (30 * SEC)
#define DEFAULT_DISCARD (8LL << 20)
#define DEFAULT_QUEUED (64LL << 20)
#define DEFAULT_CONNS 4096
#define DEFAULT_PER_IP 256
#define DEFAULT_PREFIX 64
#define MAX_SIZE (1LL << 40)

extern char **environ;

/* parse_duration reads a Go-style duration with one unit (ns, us, ms, s, m,
 * h), or a bare number of seconds; fractions are allowed ("1.5s"). */
static int parse_duration(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno != 0 || v < 0)
		return -1;
	double mult;
	if (*end == 0 || strcmp(end, "s") == 0)
		mult = 1e9;
	else if (strcmp(end, "ms") == 0)
		mult = 1e6;
	else if (strcmp(end, "us") == 0 || strcmp(end, "µs") == 0)
		mult = 1e3;
	else if (strcmp(end, "ns") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60e9;
	else if (strcmp(end, "h") == 0)
		mult = 3600e9;
	else
		return -1;
	v *= mult;
	if (v > 1e18)
		return -1;
	*out = (int64_t)v;
	return 0;
}

/* parse_size reads a byte count as internal/bytesize does: a whole number
 * with an optional unit B, K, KB, KiB, M, MB, MiB, G, GB, GiB (powers of
 * 1024, any case). */
static int parse_size(const char *s, int64_t *out)
{
	const char *p = s;
	while (*p == ' ')
		p++;
	if (!isdigit((unsigned char)*p))
		return -1;
	char *end;
	errno = 0;
	long long n = strtoll(p, &end, 10);
	if (errno != 0)
		return -1;
	while (*end == ' ')
		end++;
	long long mult;
	if (*end == 0 || strcasecmp(end, "b") == 0)
		mult = 1;
	else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") || !strcasecmp(end, "kib"))
		mult = 1LL << 10;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") || !strcasecmp(end, "mib"))
		mult = 1LL << 20;
	else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") || !strcasecmp(end, "gib"))
		mult = 1LL << 30;
	else
		return -1;
	if (n > MAX_SIZE / mult)
		return -1;
	*out = n * mult;
	return 0;
}

static int parse_int(const char *s, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end != 0 || errno != 0)
		return -1;
	*out = v;
	return 0;
}

/* parse_bool: 1/true/yes/on or 0/false/no/off. */
static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off", ""};
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
		if (strcasecmp(s, yes[i]) == 0)
			return *out = 1, 0;
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
		if (strcasecmp(s, no[i]) == 0)
			return *out = 0, 0;
	return -1;
}

static void bad(const char *name, const char *value, const char *want, const char *dflt)
{
	lg_warn("%s=\"%s\" is %s; using the default %s", name, value, want, dflt);
}

static void duration_var(const char *name, int64_t *v, int64_t dflt, const char *dflts)
{
	const char *s = getenv(name);
	*v = dflt;
	if (s == NULL)
		return;
	int64_t d;
	if (parse_duration(s, &d) != 0 || d <= 0)
		bad(name, s, "not a positive duration (like 2s, 500ms or 1m)", dflts);
	else
		*v = d;
}

static void size_var(const char *name, int64_t *v, int64_t dflt, const char *dflts)
{
	const char *s = getenv(name);
	*v = dflt;
	if (s == NULL)
		return;
	int64_t n;
	if (parse_size(s, &n) != 0 || n <= 0)
		bad(name, s, "not a positive size (like 8MiB, 64KiB or 1048576) of at most 1 TiB", dflts);
	else
		*v = n;
}

static void int_var(const char *name, int *v, int dflt, const char *dflts, long lo, long hi, const char *want)
{
	const char *s = getenv(name);
	*v = dflt;
	if (s == NULL)
		return;
	long n;
	if (parse_int(s, &n) != 0 || n < lo || n > hi)
		bad(name, s, want, dflts);
	else
		*v = (int)n;
}

static void bool_var(const char *name, int *v)
{
	const char *s = getenv(name);
	*v = 0;
	if (s != NULL && parse_bool(s, v) != 0)
		bad(name, s, "not 1 or 0", "0");
}

/* Names the library knows, and LINGER_BACKEND, which package linger's own
 * tests set and a preloaded child process may inherit. */
static const char *const known[] = {
	"LINGER_DISABLE", "LINGER_IDLE_TIMEOUT", "LINGER_MAX_HOLD", "LINGER_MAX_DISCARD",
	"LINGER_MAX_QUEUED", "LINGER_MAX_CONNS", "LINGER_MAX_CONNS_PER_IP", "LINGER_IPV6_PREFIX",
	"LINGER_SO_LINGER", "LINGER_OUTBOUND", "LINGER_LOG", "LINGER_LOG_SUMMARY", "LINGER_BACKEND",
	"LINGER_HELPER_ARGS",
};

static void unknown_vars(void)
{
	for (char **e = environ; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, "LINGER_", 7) != 0)
			continue;
		size_t n = strcspn(*e, "=");
		int found = 0;
		for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
			if (strlen(known[i]) == n && strncmp(*e, known[i], n) == 0)
				found = 1;
		if (!found)
			lg_warn("%.*s is not a variable of liblinger; ignored", (int)n, *e);
	}
}

void lg_config_load(void)
{
	bool_var("LINGER_DISABLE", &lg_cfg.disabled);
	if (lg_cfg.disabled)
		return;
	unknown_vars();
	duration_var("LINGER_MAX_HOLD", &lg_cfg.max_hold_ns, DEFAULT_HOLD, "30s");
	const char *idle = getenv("LINGER_IDLE_TIMEOUT");
	duration_var("LINGER_IDLE_TIMEOUT", &lg_cfg.idle_ns, DEFAULT_IDLE, "2s");
	if (lg_cfg.idle_ns > lg_cfg.max_hold_ns) {
		/* As in package linger: a MaxHold below the default idle timeout
		 * is the tighter bound asked for; an explicit idle timeout above
		 * MaxHold is an error there, here a warning. */
		if (idle != NULL && lg_cfg.idle_ns != DEFAULT_IDLE)
			lg_warn("LINGER_IDLE_TIMEOUT=\"%s\" exceeds LINGER_MAX_HOLD; using LINGER_MAX_HOLD", idle);
		lg_cfg.idle_ns = lg_cfg.max_hold_ns;
	}
	size_var("LINGER_MAX_DISCARD", &lg_cfg.max_discard, DEFAULT_DISCARD, "8MiB");
	size_var("LINGER_MAX_QUEUED", &lg_cfg.max_queued, DEFAULT_QUEUED, "64MiB");
	int_var("LINGER_MAX_CONNS", &lg_cfg.max_conns, DEFAULT_CONNS, "4096", 1, 1 << 24,
	        "not a whole number from 1 to 16777216");
	int_var("LINGER_MAX_CONNS_PER_IP", &lg_cfg.max_conns_per_ip, DEFAULT_PER_IP, "256", -1, 1 << 24,
	        "not a whole number from 1 to 16777216, or -1 for no cap");
	if (lg_cfg.max_conns_per_ip == 0) {
		lg_warn("LINGER_MAX_CONNS_PER_IP=\"0\" is not a whole number from 1 to 16777216, or -1 for no cap; using the default 256");
		lg_cfg.max_conns_per_ip = DEFAULT_PER_IP;
	}
	if (lg_cfg.max_conns_per_ip < 0)
		lg_cfg.max_conns_per_ip = 0;
	int_var("LINGER_IPV6_PREFIX", &lg_cfg.ipv6_prefix, DEFAULT_PREFIX, "64", 1, 128,
	        "not a prefix length from 1 to 128");
	const char *sl = getenv("LINGER_SO_LINGER");
	if (sl != NULL) {
		if (strcasecmp(sl, "ignore") == 0)
			lg_cfg.so_linger_ignore = 1;
		else if (strcasecmp(sl, "honour") != 0 && strcasecmp(sl, "honor") != 0)
			bad("LINGER_SO_LINGER", sl, "not honour or ignore", "honour");
	}
	bool_var("LINGER_OUTBOUND", &lg_cfg.outbound);
	const char *lp = getenv("LINGER_LOG");
	if (lp != NULL && *lp != 0)
		lg_cfg.log_path = strdup(lp);
	const char *ls = getenv("LINGER_LOG_SUMMARY");
	if (ls != NULL) {
		int64_t d;
		long n;
		if (parse_int(ls, &n) == 0 && n > 0 && n < 1000000000L)
			lg_cfg.summary_ns = n * SEC;
		else if (parse_duration(ls, &d) == 0 && d >= 1000000)
			lg_cfg.summary_ns = d;
		else
			bad("LINGER_LOG_SUMMARY", ls, "not a positive number of seconds", "off (a line per connection)");
	}
}
