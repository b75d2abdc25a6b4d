/* config.c: the settings table and its four layers. See config.h.
 *
 * Each entry names a parser that validates the text form and writes the typed field; the
 * same parser serves defaults, file, environment and command line, so a default can never
 * be something the user could not have written.
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

enum layer { L_DEFAULT, L_FILE, L_ENV, L_CLI };
static const char *const layer_names[] = {"default", "config file", "environment", "command line"};

struct setting;
typedef int (*parse_fn)(const struct setting *s, struct config *c, const char *v, int first,
                        char *why, size_t whycap);

struct setting {
	const char *name;
	const char *def;
	parse_fn parse;
	size_t off;
	int64_t min, max; /* for integers and durations (ms) */
	int is_list;
	const char *help;
};

#define FIELD(f) offsetof(struct config, f)

static int p_string(const struct setting *s, struct config *c, const char *v, int first, char *why,
                    size_t whycap)
{
	(void)first;
	size_t cap = (size_t)s->max;
	if (strlen(v) >= cap) {
		snprintf(why, whycap, "longer than %zu bytes", cap - 1);
		return -1;
	}
	memcpy((char *)c + s->off, v, strlen(v) + 1);
	return 0;
}

static int p_nonempty_path(const struct setting *s, struct config *c, const char *v, int first,
                           char *why, size_t whycap)
{
	if (*v == '\0') {
		snprintf(why, whycap, "must not be empty");
		return -1;
	}
	return p_string(s, c, v, first, why, whycap);
}

static int p_int(const struct setting *s, struct config *c, const char *v, int first, char *why,
                 size_t whycap)
{
	(void)first;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno) {
		snprintf(why, whycap, "not an integer");
		return -1;
	}
	if (n < s->min || n > s->max) {
		snprintf(why, whycap, "must be between %lld and %lld", (long long)s->min,
		         (long long)s->max);
		return -1;
	}
	*(int *)((char *)c + s->off) = (int)n;
	return 0;
}

static int p_bool(const struct setting *s, struct config *c, const char *v, int first, char *why,
                  size_t whycap)
{
	(void)first;
	int b;
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
		b = 1;
	else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
		b = 0;
	else {
		snprintf(why, whycap, "must be true or false");
		return -1;
	}
	*(int *)((char *)c + s->off) = b;
	return 0;
}

static int p_duration(const struct setting *s, struct config *c, const char *v, int first,
                      char *why, size_t whycap)
{
	(void)first;
	int64_t ms;
	if (util_parse_duration_ms(v, &ms) != 0) {
		snprintf(why, whycap, "not a duration (e.g. 500ms, 5s, 2m, 1h, 30d)");
		return -1;
	}
	if (ms < s->min || ms > s->max) {
		snprintf(why, whycap, "must be between %lldms and %lldms", (long long)s->min,
		         (long long)s->max);
		return -1;
	}
	*(int64_t *)((char *)c + s->off) = ms;
	return 0;
}

static int p_bytes(const struct setting *s, struct config *c, const char *v, int first, char *why,
                   size_t whycap)
{
	(void)first;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	long long mult = 1;
	if (!strcmp(end, "k") || !strcmp(end, "KiB"))
		mult = 1024;
	else if (!strcmp(end, "m") || !strcmp(end, "MiB"))
		mult = 1024 * 1024;
	else if (*end != '\0')
		mult = 0;
	if (*v == '\0' || !isdigit((unsigned char)*v) || errno || mult == 0 || n > s->max / mult ||
	    n * mult < s->min) {
		snprintf(why, whycap, "must be a size between %lld and %lld bytes (e.g. 1MiB)",
		         (long long)s->min, (long long)s->max);
		return -1;
	}
	*(int64_t *)((char *)c + s->off) = n * mult;
	return 0;
}

/* HOST:PORT (an IP address literal, [v6]:port, or localhost) into host (cap bytes), *port. */
static int parse_host_port(const char *v, char *host_out, size_t cap, int *port_out, char *why,
                           size_t whycap)
{
	const char *colon = strrchr(v, ':');
	char *end;
	struct ip_addr a;
	if (!colon || colon == v) {
		snprintf(why, whycap, "must be HOST:PORT");
		return -1;
	}
	size_t hlen = (size_t)(colon - v);
	if (hlen >= cap) {
		snprintf(why, whycap, "host too long");
		return -1;
	}
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
		snprintf(why, whycap, "port must be 0-65535");
		return -1;
	}
	char host[256];
	if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') {
		v++; /* [::1]:8080: keep the address, not its URL brackets */
		hlen -= 2;
	}
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	if (addr_parse_literal(host, &a) != 0 && strcmp(host, "localhost") != 0) {
		snprintf(why, whycap, "host must be an IP address or localhost");
		return -1;
	}
	memcpy(host_out, host, hlen + 1);
	*port_out = (int)port;
	return 0;
}

static int p_listen(const struct setting *s, struct config *c, const char *v, int first, char *why,
                    size_t whycap)
{
	(void)s;
	(void)first;
	return parse_host_port(v, c->listen_host, sizeof c->listen_host, &c->listen_port, why,
	                       whycap);
}

/* Like listen, or empty: no metrics listener. */
static int p_metrics_listen(const struct setting *s, struct config *c, const char *v, int first,
                            char *why, size_t whycap)
{
	(void)s;
	(void)first;
	if (*v == '\0') {
		c->metrics_host[0] = '\0';
		c->metrics_port = 0;
		return 0;
	}
	return parse_host_port(v, c->metrics_host, sizeof c->metrics_host, &c->metrics_port, why,
	                       whycap);
}

/* A comma-separated CIDR list into list[*n] (appending; `first` clears it first). */
static int parse_cidrs(const char *v, int first, struct cidr *list, size_t *n, char *why,
                       size_t whycap)
{
	if (first)
		*n = 0;
	if (*v == '\0')
		return 0; /* an empty value clears the list */
	char buf[256];
	const char *p = v;
	while (*p) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len >= sizeof buf) {
			snprintf(why, whycap, "empty or overlong entry");
			return -1;
		}
		memcpy(buf, p, len);
		buf[len] = '\0';
		if (*n >= CFG_MAX_CIDR) {
			snprintf(why, whycap, "at most %d ranges", CFG_MAX_CIDR);
			return -1;
		}
		if (addr_parse_cidr(buf, &list[*n]) != 0) {
			snprintf(why, whycap, "'%.64s' is not a CIDR (e.g. 127.0.0.0/8, ::1/128)",
			         buf);
			return -1;
		}
		(*n)++;
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

static int p_cidr(const struct setting *s, struct config *c, const char *v, int first, char *why,
                  size_t whycap)
{
	(void)s;
	return parse_cidrs(v, first, c->allow_net, &c->n_allow_net, why, whycap);
}

static int p_proxies(const struct setting *s, struct config *c, const char *v, int first, char *why,
                     size_t whycap)
{
	(void)s;
	return parse_cidrs(v, first, c->trusted_proxy, &c->n_trusted_proxy, why, whycap);
}

static int p_schedule(const struct setting *s, struct config *c, const char *v, int first,
                      char *why, size_t whycap)
{
	(void)s;
	(void)first;
	int64_t tmp[CFG_MAX_RETRY];
	size_t n = 0;
	char buf[32];
	const char *p = v;
	if (*v == '\0') {
		snprintf(why, whycap, "needs at least one delay");
		return -1;
	}
	while (*p) {
		size_t len = strcspn(p, ",");
		while (len > 0 && p[0] == ' ') {
			p++;
			len--;
		}
		if (len == 0 || len >= sizeof buf || n >= CFG_MAX_RETRY) {
			snprintf(why, whycap, "a list of at most %d delays like 0,5s,30s,2m",
			         CFG_MAX_RETRY);
			return -1;
		}
		memcpy(buf, p, len);
		buf[len] = '\0';
		if (util_parse_duration_ms(buf, &tmp[n]) != 0 || tmp[n] > 7LL * 86400 * 1000) {
			snprintf(why, whycap, "'%s' is not a delay of at most 7d", buf);
			return -1;
		}
		n++;
		p += len;
		if (*p == ',')
			p++;
	}
	memcpy(c->retry_ms, tmp, n * sizeof tmp[0]);
	c->n_retry = n;
	return 0;
}

static int p_url(const struct setting *s, struct config *c, const char *v, int first, char *why,
                 size_t whycap)
{
	if (*v != '\0' && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
		snprintf(why, whycap, "must start with http:// or https://");
		return -1;
	}
	return p_string(s, c, v, first, why, whycap);
}

/* "sqlite", or a libpq connection URI (postgresql://user:password@host:port/db?...). */
static int p_store(const struct setting *s, struct config *c, const char *v, int first, char *why,
                   size_t whycap)
{
	if (strcmp(v, "sqlite") != 0 && strncmp(v, "postgresql://", 13) != 0 &&
	    strncmp(v, "postgres://", 11) != 0) {
		snprintf(why, whycap, "must be sqlite or a postgresql:// connection URI");
		return -1;
	}
	return p_string(s, c, v, first, why, whycap);
}

void config_store_text(const char *v, char *out, size_t cap)
{
	char buf[CFG_PATH_CAP + 8];
	size_t o = 0;
	const char *p = v, *scheme = strstr(v, "://");
	const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
	const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
	if (at && colon && colon < at) { /* user:password@ */
		o = (size_t)snprintf(buf, sizeof buf, "%.*s***", (int)(colon + 1 - v), v);
		p = at;
	}
	for (; *p && o + 4 < sizeof buf; p++) {
		if (strncmp(p, "password=", 9) == 0 && (p[-1] == '?' || p[-1] == '&')) {
			o += (size_t)snprintf(buf + o, sizeof buf - o, "password=***");
			p += 9;
			while (*p && *p != '&')
				p++;
			if (!*p)
				break;
		}
		buf[o++] = *p;
	}
	buf[o] = '\0';
	log_escape(buf, out, cap);
}

static int p_ca_file(const struct setting *s, struct config *c, const char *v, int first, char *why,
                     size_t whycap)
{
	if (*v != '\0') {
		struct stat stt;
		FILE *f = NULL;
		/* stat before open: opening a FIFO would wait for a writer, forever. */
		if (stat(v, &stt) == 0 && !S_ISREG(stt.st_mode)) {
			snprintf(why, whycap, "'%.200s' is not a file of PEM certificates", v);
			return -1;
		}
		if (!(f = fopen(v, "r"))) {
			snprintf(why, whycap, "cannot read '%.200s': %s", v, strerror(errno));
			return -1;
		}
		fclose(f);
	}
	return p_string(s, c, v, first, why, whycap);
}

static int p_level(const struct setting *s, struct config *c, const char *v, int first, char *why,
                   size_t whycap)
{
	(void)s;
	(void)first;
	if (log_parse_level(v, &c->log_level) != 0) {
		snprintf(why, whycap, "must be debug, info, warn or error");
		return -1;
	}
	return 0;
}

static int p_log_format(const struct setting *s, struct config *c, const char *v, int first,
                        char *why, size_t whycap)
{
	(void)s;
	(void)first;
	if (log_parse_format(v, &c->log_format) != 0) {
		snprintf(why, whycap, "must be text or json");
		return -1;
	}
	return 0;
}

/* clang-format off */
#define RETRY_DEFAULT "0,5s,30s,2m,10m,30m,1h,3h,6h,12h,24h,24h"
/* name, default, parser, field of struct config, min, max, repeatable; then the --help text */
static const struct setting settings[] = {
	{"config",                     "",               p_string,        FIELD(config_file),                0,         CFG_PATH_CAP,         0,
	 "settings file (key = value lines); read before the environment"},
	{"data-dir",                   "./var",          p_nonempty_path, FIELD(data_dir),                   0,         CFG_PATH_CAP,         0,
	 "where the SQLite database and admin.key live (created if absent)"},
	{"store",                      "sqlite",         p_store,         FIELD(store),                      0,         CFG_PATH_CAP,         0,
	 "where state lives: sqlite (a file in data-dir, one node) or a postgresql:// URI (shared by nodes)"},
	{"listen",                     "127.0.0.1:8080", p_listen,        0,                                 0,         0,                    0,
	 "HTTP listener HOST:PORT (port 0 picks a free one)"},
	{"metrics-listen",             "",               p_metrics_listen, 0,                                0,         0,                    0,
	 "a second listener HOST:PORT serving only GET /metrics, without the admin key (empty: none)"},
	{"trusted-proxy",              "",               p_proxies,       0,                                 0,         0,                    1,
	 "reverse proxies (repeatable CIDR) whose X-Forwarded-For names the client's address"},
	{"allow-net",                  "",               p_cidr,          0,                                 0,         0,                    1,
	 "admit a blocked address range for delivery (repeatable CIDR)"},
	{"ca-file",                    "",               p_ca_file,       FIELD(ca_file),                    0,         CFG_PATH_CAP,         0,
	 "extra CA certificates (PEM) to trust for endpoints"},
	{"retry-schedule",             RETRY_DEFAULT,    p_schedule,      0,                                 0,         0,                    0,
	 "delays before each delivery attempt, comma-separated"},
	{"public-url",                 "",               p_url,           FIELD(public_url),                 0,         512,                  0,
	 "base URL for reportURL links (default http://<listen>)"},
	{"log-level",                  "info",           p_level,         0,                                 0,         0,                    0,
	 "debug, info, warn or error"},
	{"log-format",                 "text",           p_log_format,    0,                                 0,         0,                    0,
	 "text (time level module key=value ... message) or json (one JSON object per line)"},
	{"http-threads",               "8",              p_int,           FIELD(http_threads),               1,         64,                   0,
	 "threads serving HTTP requests (changes making events do not hold one)"},
	{"max-connections",            "1024",           p_int,           FIELD(max_connections),            1,         100000,               0,
	 "concurrent HTTP connections accepted"},
	{"max-connections-per-ip",     "256",            p_int,           FIELD(max_connections_per_ip),     1,         100000,               0,
	 "concurrent HTTP connections from one address"},
	{"conn-timeout",               "30s",            p_duration,      FIELD(conn_timeout_ms),            1000,      3600 * 1000,          0,
	 "idle or slow HTTP connection is closed after this"},
	{"header-timeout",             "10s",            p_duration,      FIELD(header_timeout_ms),          1000,      3600 * 1000,          0,
	 "a request's headers must be complete within this"},
	{"body-timeout",               "30s",            p_duration,      FIELD(body_timeout_ms),            1000,      3600 * 1000,          0,
	 "a request's body must be complete within this of its headers"},
	{"max-body",                   "1MiB",           p_bytes,         FIELD(max_body),                   1024,      64 * 1024 * 1024,     0,
	 "largest request body accepted (413 above)"},
	{"refresh-ttl",                "30d",            p_duration,      FIELD(refresh_ttl_ms),             60 * 1000, 365LL * 86400 * 1000, 0,
	 "refresh tokens expire after this long unused"},
	{"auth-max-failures",          "10",             p_int,           FIELD(auth_max_failures),          1,         100000,               0,
	 "failed logins per client id or address before 429"},
	{"auth-lockout",               "5m",             p_duration,      FIELD(auth_lockout_ms),            1000,      86400 * 1000,         0,
	 "window for counting failed logins, and the lockout length"},
	{"demo",                       "false",          p_bool,          FIELD(demo),                       0,         0,                    0,
	 "demo accounts (kept in <data-dir>/demo.json) and what labhook listen needs: a development CA, loopback endpoints"},
	{"timeout",                    "15s",            p_duration,      FIELD(delivery_timeout_ms),        100,       300 * 1000,           0,
	 "a delivery attempt must get its answer within this"},
	{"connect-timeout",            "5s",             p_duration,      FIELD(connect_timeout_ms),         100,       60 * 1000,            0,
	 "a delivery attempt must connect within this"},
	{"max-in-flight",              "256",            p_int,           FIELD(max_in_flight),              1,         100000,               0,
	 "delivery requests in flight at once, in total"},
	{"max-in-flight-per-endpoint", "16",             p_int,           FIELD(max_in_flight_per_endpoint), 1,         10000,                0,
	 "delivery requests in flight to one subscription"},
	{"disable-after",              "5d",             p_duration,      FIELD(disable_after_ms),           1000,      365LL * 86400 * 1000, 0,
	 "a subscription failing this long without a success is disabled"},
	{"disable-min-span",           "12h",            p_duration,      FIELD(disable_min_span_ms),        0,         365LL * 86400 * 1000, 0,
	 "...and only when its failures span at least this long"},
	{"lease-time",                 "15s",            p_duration,      FIELD(lease_ms),                   3000,      600 * 1000,           0,
	 "on PostgreSQL: a node that stops renewing loses its subscriptions to the other nodes after this"},
	{"delivery-window",            "20000",          p_int,           FIELD(delivery_window),            16,        10000000,             0,
	 "pending deliveries held in memory; the rest wait on disk"},
	{"retention",                  "30d",            p_duration,      FIELD(retention_ms),               0,         3650LL * 86400 * 1000, 0,
	 "finished deliveries, their attempts and events are removed this long after; 0 keeps everything"},
	{"report-max-size",            "10MiB",          p_bytes,         FIELD(report_max_size),            1024,      256 * 1024 * 1024,    0,
	 "largest report document (PDF) accepted when completing a report (413 above)"},
	{"report-link-ttl",            "7d",             p_duration,      FIELD(report_link_ttl_ms),         1000,      365LL * 86400 * 1000, 0,
	 "a reportURL link is valid this long after its event"},
	{"report-max-uploads",         "4",              p_int,            FIELD(report_max_uploads),         1,         1024,                 0,
	 "report documents received at once (each held in memory until stored; 503 beyond)"},
};
/* clang-format on */
#define N_SETTINGS (COUNTOF(settings))

static const struct setting *find_setting(const char *name, size_t len)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
			return &settings[i];
	return NULL;
}

struct loader {
	struct config *cfg;
	enum layer layer_of[N_SETTINGS];
	char *err;
	size_t errcap;
};

static int apply(struct loader *ld, const struct setting *s, const char *v, enum layer layer,
                 const char *where)
{
	char why[256] = "";
	size_t idx = (size_t)(s - settings);
	int first = ld->layer_of[idx] != layer;
	if (s->parse(s, ld->cfg, v, first, why, sizeof why) != 0) {
		/* The value as read, quoted, so a stray character or a comment taken for part of
		 * it shows; a store URI with its password masked; control bytes as '?'. */
		char shown[256];
		if (s->parse == p_store)
			config_store_text(v, shown, sizeof shown);
		else
			snprintf(shown, sizeof shown, "%.200s%s", v, strlen(v) > 200 ? "..." : "");
		for (char *q = shown; *q; q++)
			if ((unsigned char)*q < 0x20 || *q == 0x7f)
				*q = '?';
		snprintf(ld->err, ld->errcap, "bad setting %s = '%s' (%s%s): %s", s->name, shown,
		         layer_names[layer], where, why);
		return -1;
	}
	ld->layer_of[idx] = layer;
	return 0;
}

#define CFG_LINE_CAP 4096 /* bytes per line, newline included */

static int load_file(struct loader *ld, const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, where[CFG_PATH_CAP + 32];
	size_t linecap = 0;
	ssize_t len;
	int lineno = 0, rc = 0;

	if (!f) {
		snprintf(ld->err, ld->errcap, "bad setting config: cannot read '%.200s': %s", path,
		         strerror(errno));
		return -1;
	}
	/* Whole lines: with a fixed buffer the tail of a long (comment) line would be read as
	 * a line of its own, and a NUL would hide the rest of its line. */
	while ((len = getline(&line, &linecap, f)) > 0) {
		lineno++;
		if (len > CFG_LINE_CAP || memchr(line, '\0', (size_t)len)) {
			snprintf(ld->err, ld->errcap, "bad line in config file %.900s:%d: %s", path,
			         lineno,
			         len > CFG_LINE_CAP ? "longer than 4096 bytes"
			                            : "contains a NUL byte");
			rc = -1;
			break;
		}
		char *p = line, *e;
		line[strcspn(line, "\r\n")] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		size_t klen = strcspn(p, " \t=");
		char *v = p + klen;
		while (isspace((unsigned char)*v))
			v++;
		if (*v == '=')
			v++;
		while (isspace((unsigned char)*v))
			v++;
		/* A '#' after a blank starts a comment ("port = 8080  # why"); one inside a
		 * word ("a#b") stays part of the value. */
		for (e = v; *e; e++)
			if (*e == '#' && (e == v || isspace((unsigned char)e[-1]))) {
				*e = '\0';
				break;
			}
		e = v + strlen(v);
		while (e > v && isspace((unsigned char)e[-1]))
			*--e = '\0';
		const struct setting *s = find_setting(p, klen);
		snprintf(where, sizeof where, " %.900s:%d", path, lineno);
		if (!s || s->parse == p_string) { /* "config" cannot nest */
			snprintf(ld->err, ld->errcap, "unknown setting '%.*s' (config file%s)",
			         (int)(klen > 64 ? 64 : klen), p, where);
			rc = -1;
			break;
		}
		if (apply(ld, s, v, L_FILE, where) != 0) {
			rc = -1;
			break;
		}
	}
	free(line);
	fclose(f);
	return rc;
}

static void env_name(const char *name, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "LABHOOK_");
	for (; *name && o + 1 < cap; name++)
		out[o++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
	out[o] = '\0';
}

static const char *env_get(char **env, const char *key)
{
	size_t klen = strlen(key);
	for (; env && *env; env++)
		if (strncmp(*env, key, klen) == 0 && (*env)[klen] == '=')
			return *env + klen + 1;
	return NULL;
}

int config_load(struct config *cfg, int argc, char **argv, char **env, const char **rest,
                size_t rest_cap, size_t *n_rest, char *err, size_t errcap)
{
	struct loader ld = {.cfg = cfg, .err = err, .errcap = errcap};
	char key[64];
	const char *cfg_path = NULL;

	memset(cfg, 0, sizeof *cfg);
	for (size_t i = 0; i < N_SETTINGS; i++) {
		ld.layer_of[i] = L_DEFAULT;
		if (settings[i].parse(&settings[i], cfg, settings[i].def, 1, err, errcap) != 0)
			return -1; /* a broken default is a programming error */
	}
	/* The file is named by the environment or the command line. */
	env_name("config", key, sizeof key);
	cfg_path = env_get(env, key);
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			cfg_path = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			cfg_path = argv[i] + 9;
	}
	if (cfg_path && *cfg_path) {
		if (apply(&ld, &settings[0], cfg_path, L_CLI, "") != 0 || load_file(&ld, cfg_path))
			return -1;
	}
	for (size_t i = 0; i < N_SETTINGS; i++) {
		env_name(settings[i].name, key, sizeof key);
		const char *v = env_get(env, key);
		if (v && i != 0 && apply(&ld, &settings[i], v, L_ENV, "") != 0) {
			size_t n = strlen(err);
			snprintf(err + n, errcap - n, " [%s]", key);
			return -1;
		}
	}
	if (n_rest)
		*n_rest = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const struct setting *s = NULL;
		const char *v = NULL;
		if (strncmp(a, "--", 2) == 0) {
			const char *eq = strchr(a, '=');
			size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
			s = find_setting(a + 2, len);
			if (s && eq)
				v = eq + 1;
			else if (s && s->parse == p_bool)
				v = "true";
			else if (s && i + 1 < argc)
				v = argv[++i];
			else if (s) {
				snprintf(err, errcap,
				         "bad setting %s (command line): needs a value", s->name);
				return -1;
			}
		}
		if (!s) {
			if (!rest) {
				snprintf(err, errcap, "unknown option '%.100s' (try --help)", a);
				return -1;
			}
			if (*n_rest >= rest_cap) {
				snprintf(err, errcap, "too many arguments");
				return -1;
			}
			rest[(*n_rest)++] = a;
			continue;
		}
		if (s != &settings[0] && apply(&ld, s, v, L_CLI, "") != 0)
			return -1;
	}
	return 0;
}

void config_print_help(FILE *f)
{
	fprintf(
	    f, "Settings (default < --config file < LABHOOK_<NAME> environment < command line):\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		char env[64];
		env_name(settings[i].name, env, sizeof env);
		fprintf(f, "  --%-18s %s%s\n  %-20s   default: %s; env %s\n", settings[i].name,
		        settings[i].help, settings[i].is_list ? " [repeatable]" : "", "",
		        *settings[i].def ? settings[i].def : "(none)", env);
	}
}

void config_print_man(FILE *f)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		char env[64];
		env_name(settings[i].name, env, sizeof env);
		fputs(".TP\n\\fB\\-\\-", f);
		util_roff_text(f, settings[i].name, 1);
		fputs("\\fR \\fIvalue\\fR\n", f);
		util_roff_text(f, settings[i].help, 0);
		fputs(settings[i].is_list ? " (repeatable; comma-separated)\n" : "\n", f);
		fputs(".br\nDefault: ", f);
		if (*settings[i].def) {
			fputs("\\fB", f);
			util_roff_text(f, settings[i].def, 1);
			fputs("\\fR", f);
		} else {
			fputs("none", f);
		}
		fputs(". Environment: \\fB", f);
		util_roff_text(f, env, 1);
		fputs("\\fR.\n", f);
	}
}

/* "a/n,b/m" into out, or "-" for none. */
static void cidrs_text(const struct cidr *list, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	snprintf(out, cap, "-");
	for (size_t i = 0; i < n && o < cap; i++) {
		char a[64];
		inet_ntop(list[i].family, list[i].addr, a, sizeof a);
		o += (size_t)snprintf(out + o, cap - o, "%s%s/%d", i ? "," : "", a, list[i].prefix);
	}
}

/* A setting's effective value as text, written the way the setting is given (durations
 * in ms, sizes in bytes, lists comma-separated, "-" for empty). */
static void show_value(const struct setting *s, const struct config *c, char *out, size_t cap)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};
	const char *base = (const char *)c + s->off;
	if (s->parse == p_int || s->parse == p_bool)
		snprintf(out, cap, "%d", *(const int *)(const void *)base);
	else if (s->parse == p_duration)
		snprintf(out, cap, "%lldms", (long long)*(const int64_t *)(const void *)base);
	else if (s->parse == p_bytes)
		snprintf(out, cap, "%lld", (long long)*(const int64_t *)(const void *)base);
	else if (s->parse == p_listen)
		snprintf(out, cap, "%s:%d", c->listen_host, c->listen_port);
	else if (s->parse == p_metrics_listen && c->metrics_host[0])
		snprintf(out, cap, "%s:%d", c->metrics_host, c->metrics_port);
	else if (s->parse == p_metrics_listen)
		snprintf(out, cap, "-");
	else if (s->parse == p_cidr)
		cidrs_text(c->allow_net, c->n_allow_net, out, cap);
	else if (s->parse == p_proxies)
		cidrs_text(c->trusted_proxy, c->n_trusted_proxy, out, cap);
	else if (s->parse == p_store)
		config_store_text(c->store, out, cap);
	else if (s->parse == p_level)
		snprintf(out, cap, "%s", levels[c->log_level]);
	else if (s->parse == p_log_format)
		snprintf(out, cap, "%s", log_format_name(c->log_format));
	else if (s->parse == p_schedule) {
		size_t o = 0;
		snprintf(out, cap, "-");
		for (size_t i = 0; i < c->n_retry && o < cap; i++)
			o += (size_t)snprintf(out + o, cap - o, "%s%lldms", i ? "," : "",
			                      (long long)c->retry_ms[i]);
	} else /* the string settings */
		log_escape(*base ? base : "-", out, cap);
}

void config_log_effective(const struct config *c)
{
	char line[2048], value[600];
	size_t o = 0;
	for (size_t i = 0; i < N_SETTINGS && o < sizeof line; i++) {
		char key[64];
		snprintf(key, sizeof key, "%s", settings[i].name);
		for (char *k = key; *k; k++)
			*k = *k == '-' ? '_' : *k;
		show_value(&settings[i], c, value, sizeof value);
		o += (size_t)snprintf(line + o, sizeof line - o, "%s=%s ", key, value);
	}
	LOG(LOG_INFO, "config", "%seffective configuration", line);
}
