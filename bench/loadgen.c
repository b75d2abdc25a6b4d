/* loadgen.c: the benchmark's HTTP load generator (libcurl multi, one thread).
 *
 * POSTs one fixed body to one URL, COUNT times, over at most CONCURRENCY kept-alive
 * HTTP/1.1 connections, either as fast as the server answers (closed loop) or at a fixed
 * offered RATE per second (open loop). Easy handles are made once and re-added after each
 * request, so connections and TLS sessions stay in the multi handle's cache.
 * Prints one summary line of key=value pairs on stdout; with --out, one line per 2xx
 * answer: when the answer arrived and when the request was sent (wall clock, Unix ms),
 * and the "billID" the answer carried.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define RESP_CAP        4096 /* bytes of an answer kept; the rest is read and dropped */
#define MAX_HEADERS     8
#define MAX_CONCURRENCY 1024
#define REQ_TIMEOUT_MS  60000L

struct opts {
	const char *url;
	const char *body_file;
	const char *cacert;
	const char *out;
	const char *headers[MAX_HEADERS];
	int n_headers;
	long count;
	long concurrency;
	double rate; /* requests per second; 0 = as fast as answers come */
};

/* One in-flight request. resp holds the first RESP_CAP - 1 bytes of the answer. */
struct slot {
	CURL *h;
	struct slot *next_free;
	double t_start;   /* monotonic seconds: scheduled start (open loop) or actual start */
	double wall_sent; /* wall clock when the handle was added (Unix seconds) */
	size_t len;
	char resp[RESP_CAP];
};

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct slot *s = arg;
	size_t len = size * n;
	size_t room = RESP_CAP - 1 - s->len;
	size_t take = len < room ? len : room;

	memcpy(s->resp + s->len, p, take);
	s->len += take;
	s->resp[s->len] = '\0';
	return len;
}

/* Reads a whole file; returns owned (free with free) or NULL, with *len set on success. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto out;
	buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	if (buf) {
		buf[n] = '\0';
		*len = (size_t)n;
	}
out:
	fclose(f);
	return buf;
}

/* Copies the string value of "billID" in a JSON answer into out, or "-" if absent. A
 * string search is enough: labhook's answers are compact JSON and ids have no escapes. */
static void find_bill_id(const char *resp, char *out, size_t cap)
{
	const char *p = strstr(resp, "\"billID\"");
	size_t i = 0;

	snprintf(out, cap, "-");
	if (!p)
		return;
	p += strlen("\"billID\"");
	while (*p == ' ' || *p == ':')
		p++;
	if (*p++ != '"')
		return;
	while (p[i] && p[i] != '"' && i + 1 < cap)
		i++;
	memcpy(out, p, i);
	out[i] = '\0';
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, long n, double p)
{
	long k;

	if (n == 0)
		return 0;
	k = (long)ceil(p * (double)n) - 1;
	return v[k < 0 ? 0 : k];
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: loadgen --url URL --body-file FILE --count N [--concurrency C]\n"
	        "               [--rate PER_S] [--cacert PEM] [--header 'K: V']... [--out FILE]\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->concurrency = 16;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "loadgen: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (strcmp(a, "--url") == 0)
			o->url = v;
		else if (strcmp(a, "--body-file") == 0)
			o->body_file = v;
		else if (strcmp(a, "--cacert") == 0)
			o->cacert = v;
		else if (strcmp(a, "--out") == 0)
			o->out = v;
		else if (strcmp(a, "--count") == 0)
			o->count = strtol(v, NULL, 10);
		else if (strcmp(a, "--concurrency") == 0)
			o->concurrency = strtol(v, NULL, 10);
		else if (strcmp(a, "--rate") == 0)
			o->rate = strtod(v, NULL);
		else if (strcmp(a, "--header") == 0 && o->n_headers < MAX_HEADERS)
			o->headers[o->n_headers++] = v;
		else {
			fprintf(stderr, "loadgen: unknown or repeated option %s\n", a);
			return -1;
		}
	}
	if (!o->url || !o->body_file || o->count <= 0 || o->concurrency <= 0 ||
	    o->concurrency > MAX_CONCURRENCY || o->rate < 0) {
		usage();
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct slot *slots = NULL, *free_list = NULL;
	struct curl_slist *hdrs = NULL;
	CURLM *multi = NULL;
	FILE *out = NULL;
	char *body = NULL;
	double *lat = NULL;
	size_t body_len = 0;
	long started = 0, finished = 0, ok = 0, failed = 0;
	double t0, wall_first = 0, wall_last = 0;
	char first_error[256] = "";
	int rc = 1;

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if (o.concurrency > o.count)
		o.concurrency = o.count;
	if (!(body = read_file(o.body_file, &body_len))) {
		fprintf(stderr, "loadgen: cannot read %s: %s\n", o.body_file, strerror(errno));
		return 2;
	}
	if (o.out && !(out = fopen(o.out, "w"))) {
		fprintf(stderr, "loadgen: cannot write %s: %s\n", o.out, strerror(errno));
		goto out;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		goto out;
	lat = malloc((size_t)o.count * sizeof *lat);
	slots = calloc((size_t)o.concurrency, sizeof *slots);
	multi = curl_multi_init();
	if (!lat || !slots || !multi)
		goto out;
	/* One connection per handle, all kept: the cache must hold every one of them. */
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, o.concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, o.concurrency);

	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
	for (int i = 0; i < o.n_headers; i++)
		hdrs = curl_slist_append(hdrs, o.headers[i]);
	if (!hdrs)
		goto out;
	for (long i = 0; i < o.concurrency; i++) {
		struct slot *s = &slots[i];
		if (!(s->h = curl_easy_init()))
			goto out;
		curl_easy_setopt(s->h, CURLOPT_URL, o.url);
		curl_easy_setopt(s->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)body_len);
		curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
		curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
		curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, REQ_TIMEOUT_MS);
		if (o.cacert)
			curl_easy_setopt(s->h, CURLOPT_CAINFO, o.cacert);
		s->next_free = free_list;
		free_list = s;
	}

	t0 = mono_now();
	while (finished < o.count) {
		int running, left;
		CURLMsg *msg;
		long wait_ms = 1000;
		double now = mono_now();

		/* Start what may start: a free handle, and (open loop) a request that is due. */
		while (started < o.count && free_list) {
			double due = o.rate > 0 ? t0 + (double)started / o.rate : now;
			struct slot *s = free_list;
			if (due > now) {
				wait_ms = (long)ceil((due - now) * 1000);
				break;
			}
			free_list = s->next_free;
			/* Open loop: latency counts from the scheduled time, so a server that
			 * falls behind is not hidden by requests waiting for a free handle. */
			s->t_start = due;
			s->len = 0;
			s->resp[0] = '\0';
			s->wall_sent = wall_now();
			if (started == 0)
				wall_first = s->wall_sent;
			if (curl_multi_add_handle(multi, s->h) != CURLM_OK) {
				fprintf(stderr, "loadgen: curl_multi_add_handle failed\n");
				goto out;
			}
			started++;
		}
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			goto out;
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct slot *s;
			long status = 0;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result == CURLE_OK && status >= 200 && status < 300) {
				double arrived = wall_now();
				lat[ok++] = mono_now() - s->t_start;
				wall_last = arrived;
				if (out) {
					char id[64];
					find_bill_id(s->resp, id, sizeof id);
					fprintf(out, "%.3f %.3f %s\n", arrived * 1000,
					        s->wall_sent * 1000, id);
				}
			} else {
				if (failed++ == 0)
					snprintf(first_error, sizeof first_error, "%s/%ld:%.120s",
					         curl_easy_strerror(msg->data.result), status,
					         s->resp);
			}
			curl_multi_remove_handle(multi, s->h);
			s->next_free = free_list;
			free_list = s;
			finished++;
		}
		/* A handle freed just now may start at once: do not sleep in poll then. */
		if (free_list && started < o.count &&
		    (o.rate <= 0 || t0 + (double)started / o.rate <= mono_now()))
			wait_ms = 0;
		if (finished < o.count &&
		    curl_multi_poll(multi, NULL, 0, (int)wait_ms, NULL) != CURLM_OK)
			goto out;
	}

	{
		double elapsed = mono_now() - t0;
		qsort(lat, (size_t)ok, sizeof *lat, cmp_double);
		printf("ok=%ld fail=%ld elapsed_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f "
		       "max_ms=%.3f t_first=%.3f t_last=%.3f\n",
		       ok, failed, elapsed, (double)ok / elapsed, percentile(lat, ok, 0.50) * 1000,
		       percentile(lat, ok, 0.99) * 1000, percentile(lat, ok, 1.0) * 1000,
		       wall_first, wall_last);
		if (failed)
			fprintf(stderr, "loadgen: %ld failed; first: %s\n", failed, first_error);
	}
	rc = failed ? 1 : 0;
out:
	if (out && fclose(out) != 0)
		rc = 1;
	for (long i = 0; slots && i < o.concurrency; i++) {
		if (slots[i].h) {
			curl_multi_remove_handle(multi, slots[i].h);
			curl_easy_cleanup(slots[i].h);
		}
	}
	curl_multi_cleanup(multi);
	curl_slist_free_all(hdrs);
	curl_global_cleanup();
	free(slots);
	free(lat);
	free(body);
	return rc;
}
