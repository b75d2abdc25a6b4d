/* metrics.c: see metrics.h.
 *
 * The registry is one static struct of atomics, zero at start. Counting is a relaxed atomic
 * add: a scrape may see one counter a moment ahead of another, never a torn value, and no
 * thread waits for another. Histograms count each observation in its own bucket (not
 * cumulatively), and the scrape adds them up, so _count is the +Inf bucket by construction.
 */
#define _GNU_SOURCE /* dirfd */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "events.h"
#include "store.h"
#include "util.h"
#include "version.h"

/* ---- the families' fixed label values ---- */

static const char *const method_names[] = {"GET",   "HEAD",   "POST",    "PUT",
                                           "PATCH", "DELETE", "OPTIONS", "other"};
#define N_METHODS COUNTOF(method_names)

/* The statuses labhook answers (err.c's table, 501 from the framing checks); anything else
 * is counted under its class ("2xx"), so the code label stays a small fixed set. */
static const int exact_codes[] = {200, 400, 401, 404, 405, 409, 413, 429, 500, 501, 503};
#define N_EXACT COUNTOF(exact_codes)
#define N_CODES (N_EXACT + 5) /* then 1xx .. 5xx */

static const char *const outcome_names[MO__COUNT] = {
    [MO_SUCCESS] = "success",   [MO_HTTP_3XX] = "http_3xx", [MO_HTTP_4XX] = "http_4xx",
    [MO_HTTP_5XX] = "http_5xx", [MO_TIMEOUT] = "timeout",   [MO_CONNECT] = "connect",
    [MO_TLS] = "tls",           [MO_DNS] = "dns",           [MO_BLOCKED] = "blocked_address",
    [MO_OTHER] = "other",
};

static const char *const sub_status_names[] = {"active", "paused", "disabled"};

/* ---- histograms ---- */

#define HIST_MAX 20

/* Upper bounds in the stored unit: microseconds, shown as seconds (us set), or jobs. */
struct hist_spec {
	const int64_t *le;
	size_t n;
	int us;
};

struct hist {
	_Atomic uint64_t b[HIST_MAX + 1]; /* b[n]: above the last bound */
	_Atomic uint64_t sum;
};

/* Bucket bounds in microseconds (the seconds shown in the comments), and in jobs. */
#define MS(n)  ((n)*1000LL)
#define SEC(n) ((n)*1000000LL)
/* clang-format off */
/* 0.5ms 1ms 2.5ms 5ms 10ms 25ms 50ms 100ms 250ms 500ms 1s 2.5s 5s 10s */
static const int64_t http_le[] = {500, MS(1), 2500, MS(5), MS(10), MS(25), MS(50), MS(100),
                                  MS(250), MS(500), SEC(1), MS(2500), SEC(5), SEC(10)};
/* 5ms .. 60s (an attempt's timeout is at most 300s) */
static const int64_t attempt_le[] = {MS(5), MS(10), MS(25), MS(50), MS(100), MS(250), MS(500),
                                     SEC(1), MS(2500), SEC(5), SEC(10), SEC(15), SEC(30), SEC(60)};
/* 10ms .. 1 day: a healthy endpoint's lag is milliseconds, a retried one's hours */
static const int64_t lag_le[] = {MS(10), MS(50), MS(100), MS(250), MS(500), SEC(1), MS(2500),
                                 SEC(5), SEC(10), SEC(30), SEC(60), SEC(300), SEC(900),
                                 SEC(3600), SEC(10800), SEC(43200), SEC(86400)};
/* 0.1ms .. 2.5s */
static const int64_t commit_le[] = {100, 250, 500, MS(1), 2500, MS(5), MS(10), MS(25), MS(50),
                                    MS(100), MS(250), MS(500), SEC(1), MS(2500)};
static const int64_t jobs_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
/* clang-format on */
#undef MS
#undef SEC

static const struct hist_spec http_spec = {http_le, COUNTOF(http_le), 1};
static const struct hist_spec attempt_spec = {attempt_le, COUNTOF(attempt_le), 1};
static const struct hist_spec lag_spec = {lag_le, COUNTOF(lag_le), 1};
static const struct hist_spec commit_spec = {commit_le, COUNTOF(commit_le), 1};
static const struct hist_spec jobs_spec = {jobs_le, COUNTOF(jobs_le), 0};
_Static_assert(COUNTOF(lag_le) <= HIST_MAX, "HIST_MAX holds the longest bucket list");

static void hist_observe(struct hist *h, const struct hist_spec *sp, int64_t v)
{
	size_t i = 0;
	if (v < 0)
		v = 0;
	while (i < sp->n && v > sp->le[i])
		i++;
	atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, (uint64_t)v, memory_order_relaxed);
}

/* ---- the registry ---- */

static struct {
	_Atomic uint64_t http[METRICS_MAX_ROUTES][N_METHODS][N_CODES];
	struct hist http_dur[METRICS_MAX_ROUTES];
	_Atomic uint64_t events[EV__COUNT];
	_Atomic uint64_t attempts[MO__COUNT];
	struct hist attempt_dur, lag, commit, jobs;
	_Atomic uint64_t gave_up;
} reg;

static size_t method_index(const char *m)
{
	for (size_t i = 0; i + 1 < N_METHODS; i++)
		if (strcmp(m, method_names[i]) == 0)
			return i;
	return N_METHODS - 1;
}

static size_t code_index(int status)
{
	for (size_t i = 0; i < N_EXACT; i++)
		if (status == exact_codes[i])
			return i;
	int cls = status / 100;
	return N_EXACT + (size_t)(cls >= 1 && cls <= 5 ? cls - 1 : 4);
}

void metrics_http_request(int route, const char *method, int status, int64_t dur_us)
{
	if (route < 0 || route >= METRICS_MAX_ROUTES)
		route = 0;
	atomic_fetch_add_explicit(&reg.http[route][method_index(method)][code_index(status)], 1,
	                          memory_order_relaxed);
	hist_observe(&reg.http_dur[route], &http_spec, dur_us);
}

void metrics_events(int type, uint64_t n)
{
	if (type >= 0 && type < EV__COUNT)
		atomic_fetch_add_explicit(&reg.events[type], n, memory_order_relaxed);
}

void metrics_attempt(enum metrics_outcome outcome, int64_t dur_us)
{
	if ((unsigned)outcome >= MO__COUNT)
		outcome = MO_OTHER;
	atomic_fetch_add_explicit(&reg.attempts[outcome], 1, memory_order_relaxed);
	hist_observe(&reg.attempt_dur, &attempt_spec, dur_us);
}

void metrics_delivered(int64_t lag_ms)
{
	hist_observe(&reg.lag, &lag_spec, lag_ms * 1000);
}

void metrics_gave_up(void)
{
	atomic_fetch_add_explicit(&reg.gave_up, 1, memory_order_relaxed);
}

void metrics_batch(size_t jobs, int64_t commit_us)
{
	hist_observe(&reg.jobs, &jobs_spec, (int64_t)jobs);
	hist_observe(&reg.commit, &commit_spec, commit_us);
}

/* ---- rendering ---- */

#define OUT_CAP (8u << 20) /* far above what the fixed registry can print */

/* The growing text of one scrape; once a write fails (memory, cap) it stays failed. */
struct out {
	char *p;
	size_t len, cap;
	int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	for (int tries = 0; !o->failed && tries < 2; tries++) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t want = o->len + (size_t)n + 1;
		if (want > OUT_CAP || UTIL_GROW(o->p, o->cap, want, 16384)) {
			o->failed = 1;
			return;
		}
	}
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* Adds src's buckets and sum into b[0..n] and *sum (b has HIST_MAX + 1 cells). */
static void hist_add(const struct hist_spec *sp, struct hist *src, uint64_t *b, uint64_t *sum)
{
	for (size_t i = 0; i <= sp->n; i++)
		b[i] += load(&src->b[i]);
	*sum += load(&src->sum);
}

/* One histogram series: labels is "" or `key="value",` (with the trailing comma). */
static void put_hist(struct out *o, const char *name, const char *labels,
                     const struct hist_spec *sp, const uint64_t *b, uint64_t sum)
{
	uint64_t cum = 0;
	for (size_t i = 0; i < sp->n; i++) {
		cum += b[i];
		put(o, "%s_bucket{%sle=\"%.6g\"} %llu\n", name, labels,
		    (double)sp->le[i] / (sp->us ? 1e6 : 1), (unsigned long long)cum);
	}
	cum += b[sp->n];
	put(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
	/* The sum exactly: whole microseconds as seconds with six decimals, or whole jobs. */
	char total[48];
	if (!sp->us)
		snprintf(total, sizeof total, "%llu", (unsigned long long)sum);
	else
		snprintf(total, sizeof total, "%llu.%06llu", (unsigned long long)(sum / 1000000),
		         (unsigned long long)(sum % 1000000));
	size_t ln = strlen(labels);
	if (ln) /* the same labels without the trailing comma */
		put(o, "%s_sum{%.*s} %s\n%s_count{%.*s} %llu\n", name, (int)(ln - 1), labels, total,
		    name, (int)(ln - 1), labels, (unsigned long long)cum);
	else
		put(o, "%s_sum %s\n%s_count %llu\n", name, total, name, (unsigned long long)cum);
}

static void put_one_hist(struct out *o, const char *name, const char *help,
                         const struct hist_spec *sp, struct hist *h)
{
	uint64_t b[HIST_MAX + 1] = {0}, sum = 0;
	hist_add(sp, h, b, &sum);
	family(o, name, "histogram", help);
	put_hist(o, name, "", sp, b, sum);
}

/* 1 if registry route r's label is an earlier route's too: the router counts a path
 * under the first row of its pattern (GET, PATCH and DELETE of one path are one route),
 * so such a row holds nothing and is left out rather than printed as a second series. */
static int route_repeats(const char *const *labels, size_t r)
{
	for (size_t k = 1; r > 0 && k < r; k++)
		if (strcmp(labels[k - 1], labels[r - 1]) == 0)
			return 1;
	return 0;
}

static void put_http(struct out *o, const char *const *labels, size_t n)
{
	size_t nr = n + 1 < METRICS_MAX_ROUTES ? n + 1 : METRICS_MAX_ROUTES;

	family(o, "labhook_http_requests_total", "counter",
	       "HTTP requests answered, by route pattern, method and status code.");
	for (size_t r = 0; r < nr; r++) {
		if (route_repeats(labels, r))
			continue;
		for (size_t m = 0; m < N_METHODS; m++)
			for (size_t c = 0; c < N_CODES; c++) {
				uint64_t v = load(&reg.http[r][m][c]);
				if (!v)
					continue; /* a series appears once it has happened */
				char code[8];
				if (c < N_EXACT)
					snprintf(code, sizeof code, "%d", exact_codes[c]);
				else
					snprintf(code, sizeof code, "%dxx", (int)(c - N_EXACT + 1));
				put(o,
				    "labhook_http_requests_total{route=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
				    r ? labels[r - 1] : "unmatched", method_names[m], code,
				    (unsigned long long)v);
			}
	}

	family(o, "labhook_http_request_duration_seconds", "histogram",
	       "Time from a request's first byte to its answer, by route pattern.");
	for (size_t r = 0; r < nr; r++) {
		uint64_t b[HIST_MAX + 1] = {0}, sum = 0, total = 0;
		if (route_repeats(labels, r))
			continue;
		hist_add(&http_spec, &reg.http_dur[r], b, &sum);
		for (size_t i = 0; i <= http_spec.n; i++)
			total += b[i];
		if (!total)
			continue;
		char lab[160];
		snprintf(lab, sizeof lab, "route=\"%s\",", r ? labels[r - 1] : "unmatched");
		put_hist(o, "labhook_http_request_duration_seconds", lab, &http_spec, b, sum);
	}
}

/* ---- process_* (as the Prometheus client libraries define them) ---- */

struct proc_stat {
	double cpu_s, start_s;
	unsigned long long vsize, rss_bytes;
};

static int read_proc_stat(struct proc_stat *ps)
{
	char buf[1024], *p;
	FILE *f = fopen("/proc/self/stat", "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	if (!(p = strrchr(buf, ')')))
		return -1;
	unsigned long long utime, stime, start, vsize;
	long long rss;
	/* Fields 3..24 of proc(5): state, then 10 skipped, utime, stime, 6 skipped, starttime,
	 * vsize, rss. */
	if (sscanf(p + 1,
	           " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d"
	           " %llu %llu %lld",
	           &utime, &stime, &start, &vsize, &rss) != 5)
		return -1;
	double tck = (double)sysconf(_SC_CLK_TCK);
	long long btime = -1;
	if ((f = fopen("/proc/stat", "r"))) {
		char line[256];
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "btime %lld", &btime) == 1)
				break;
		fclose(f);
	}
	if (tck <= 0 || btime < 0)
		return -1;
	ps->cpu_s = (double)(utime + stime) / tck;
	ps->start_s = (double)btime + (double)start / tck;
	ps->vsize = vsize;
	ps->rss_bytes =
	    rss > 0 ? (unsigned long long)rss * (unsigned long long)sysconf(_SC_PAGESIZE) : 0;
	return 0;
}

/* Open descriptors: the entries of /proc/self/fd but the one reading it. */
static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	long n = 0;
	int self = dirfd(d);
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.' && atoi(e->d_name) != self)
			n++;
	closedir(d);
	return n;
}

static void put_process(struct out *o)
{
	struct proc_stat ps;
	struct rlimit rl;
	long fds = open_fds();
	if (read_proc_stat(&ps) == 0) {
		family(o, "process_cpu_seconds_total", "counter",
		       "Total user and system CPU time spent in seconds.");
		put(o, "process_cpu_seconds_total %.2f\n", ps.cpu_s);
		family(o, "process_resident_memory_bytes", "gauge",
		       "Resident memory size in bytes.");
		put(o, "process_resident_memory_bytes %llu\n", ps.rss_bytes);
		family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
		put(o, "process_virtual_memory_bytes %llu\n", ps.vsize);
		family(o, "process_start_time_seconds", "gauge",
		       "Start time of the process since unix epoch in seconds.");
		put(o, "process_start_time_seconds %.2f\n", ps.start_s);
	}
	if (fds >= 0) {
		family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
		put(o, "process_open_fds %ld\n", fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
		put(o, "process_max_fds %llu\n",
		    rl.rlim_cur == RLIM_INFINITY ? 0ULL : (unsigned long long)rl.rlim_cur);
	}
}

char *metrics_render(const char *const *route_labels, size_t n_routes,
                     const struct store_stats *stats, size_t *len)
{
	struct out o = {.cap = 64 * 1024};
	if (!(o.p = malloc(o.cap)))
		return NULL;

	put_http(&o, route_labels, n_routes);

	family(&o, "labhook_events_total", "counter", "Events committed, by type.");
	for (int t = 0; t < EV__COUNT; t++)
		put(&o, "labhook_events_total{type=\"%s\"} %llu\n", event_name((enum event_type)t),
		    (unsigned long long)load(&reg.events[t]));

	family(&o, "labhook_delivery_attempts_total", "counter",
	       "Delivery attempts finished, by outcome.");
	for (int i = 0; i < MO__COUNT; i++)
		put(&o, "labhook_delivery_attempts_total{outcome=\"%s\"} %llu\n", outcome_names[i],
		    (unsigned long long)load(&reg.attempts[i]));
	put_one_hist(&o, "labhook_delivery_attempt_duration_seconds",
	             "Time a delivery attempt took, from its start to its answer or failure.",
	             &attempt_spec, &reg.attempt_dur);
	put_one_hist(&o, "labhook_delivery_lag_seconds",
	             "Time from an event's creation (its commit) to its successful delivery.",
	             &lag_spec, &reg.lag);
	family(
	    &o, "labhook_deliveries_failed_total", "counter",
	    "Deliveries given up: the retry schedule was used up, or the endpoint answered 410.");
	put(&o, "labhook_deliveries_failed_total %llu\n", (unsigned long long)load(&reg.gave_up));

	put_one_hist(&o, "labhook_store_commit_duration_seconds",
	             "Time the store took to commit one group-commit batch.", &commit_spec,
	             &reg.commit);
	put_one_hist(&o, "labhook_store_batch_jobs", "Jobs in one group-commit batch.", &jobs_spec,
	             &reg.jobs);

	if (stats) {
		family(&o, "labhook_deliveries_pending", "gauge",
		       "Deliveries waiting for an attempt or a retry (in the store).");
		put(&o, "labhook_deliveries_pending %lld\n", (long long)stats->pending);
		family(&o, "labhook_subscriptions", "gauge",
		       "Subscriptions by status (not deleted).");
		for (size_t i = 0; i < COUNTOF(sub_status_names); i++)
			put(&o, "labhook_subscriptions{status=\"%s\"} %lld\n", sub_status_names[i],
			    (long long)stats->subs[i]);
		family(&o, "labhook_store_bytes", "gauge", "Size of the store in bytes.");
		put(&o, "labhook_store_bytes %lld\n", (long long)stats->bytes);
	}

	put_process(&o);
	family(&o, "labhook_build_info", "gauge", "Always 1; the labhook version as a label.");
	put(&o, "labhook_build_info{version=\"%s\"} 1\n", LABHOOK_VERSION);

	if (o.failed) {
		free(o.p);
		return NULL;
	}
	*len = o.len;
	return o.p;
}
