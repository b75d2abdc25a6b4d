/* loadgen.c: the benchmark's HTTP load generator (one thread).
 *
 * POSTs one fixed body to one URL, COUNT times, over at most CONCURRENCY kept-alive
 * HTTP/1.1 connections, either as fast as the server answers (closed loop) or at a fixed
 * offered RATE per second (open loop).
 * - https:// URLs (the raw-client ceiling) go through libcurl multi: easy handles are made
 *   once and re-added after each request, so connections and TLS sessions stay cached.
 * - http:// URLs (labhook's API) go through a minimal epoll client: the benchmark's client
 *   shares the machine's two cores with labhook, and libcurl spent ~50 us of CPU per
 *   request where this spends ~15, CPU that otherwise is taken from the server measured.
 * Prints one summary line of key=value pairs on stdout, with its own CPU time (user + system)
 * from right before the first request to right after the last answer (cpu_s, and per
 * request: cpu_us_per_req, the raw client's cost the benchmark compares labhook's with);
 * with --out, one line per 2xx
 * answer: when the answer arrived and when the request was sent (wall clock, Unix ms),
 * and the "billID" the answer carried.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

/* CPU seconds (user + system) this process has used so far. */
static double cpu_now(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
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

/* What a run produced, whichever engine ran it. */
struct tally {
	double *lat; /* per 2xx: seconds from the (scheduled) start to the answer */
	long ok, failed;
	double wall_first, wall_last;
	double cpu_first, cpu_last; /* cpu_now() before the first request, after the last answer */
	char first_error[256];
	FILE *out;
};

/* An answer arrived: resp holds its first bytes (for the billID). */
static void tally_answer(struct tally *t, long status, double t_start, double wall_sent,
                         const char *resp, const char *error)
{
	if (!error && status >= 200 && status < 300) {
		double arrived = wall_now();
		t->lat[t->ok++] = mono_now() - t_start;
		t->wall_last = arrived;
		if (t->out) {
			char id[64];
			find_bill_id(resp, id, sizeof id);
			fprintf(t->out, "%.3f %.3f %s\n", arrived * 1000, wall_sent * 1000, id);
		}
		return;
	}
	if (t->failed++ == 0)
		snprintf(t->first_error, sizeof t->first_error, "%s/%ld:%.120s",
		         error ? error : "HTTP", status, resp);
}

/* When the next request may start: now in closed loop, on its schedule in open loop. */
static double due_at(const struct opts *o, double t0, long started, double now)
{
	return o->rate > 0 ? t0 + (double)started / o->rate : now;
}

/* ---- https: libcurl multi ---- */

static int run_curl(const struct opts *o, const char *body, size_t body_len, struct tally *t)
{
	struct slot *slots = NULL, *free_list = NULL;
	struct curl_slist *hdrs = NULL;
	CURLM *multi = NULL;
	long started = 0, finished = 0;
	double t0;
	int rc = -1;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -1;
	slots = calloc((size_t)o->concurrency, sizeof *slots);
	multi = curl_multi_init();
	if (!slots || !multi)
		goto out;
	/* One connection per handle, all kept: the cache must hold every one of them. */
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, o->concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, o->concurrency);

	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
	for (int i = 0; i < o->n_headers; i++)
		hdrs = curl_slist_append(hdrs, o->headers[i]);
	if (!hdrs)
		goto out;
	for (long i = 0; i < o->concurrency; i++) {
		struct slot *sl = &slots[i];
		if (!(sl->h = curl_easy_init()))
			goto out;
		curl_easy_setopt(sl->h, CURLOPT_URL, o->url);
		curl_easy_setopt(sl->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(sl->h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(sl->h, CURLOPT_POSTFIELDSIZE, (long)body_len);
		curl_easy_setopt(sl->h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(sl->h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(sl->h, CURLOPT_WRITEDATA, sl);
		curl_easy_setopt(sl->h, CURLOPT_PRIVATE, sl);
		curl_easy_setopt(sl->h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(sl->h, CURLOPT_TIMEOUT_MS, REQ_TIMEOUT_MS);
		if (o->cacert)
			curl_easy_setopt(sl->h, CURLOPT_CAINFO, o->cacert);
		sl->next_free = free_list;
		free_list = sl;
	}

	t0 = mono_now();
	while (finished < o->count) {
		int running, left;
		CURLMsg *msg;
		long wait_ms = 1000;
		double now = mono_now();

		/* Start what may start: a free handle, and (open loop) a request that is due. */
		while (started < o->count && free_list) {
			double due = due_at(o, t0, started, now);
			struct slot *sl = free_list;
			if (due > now) {
				wait_ms = (long)ceil((due - now) * 1000);
				break;
			}
			free_list = sl->next_free;
			/* Open loop: latency counts from the scheduled time, so a server that
			 * falls behind is not hidden by requests waiting for a free handle. */
			sl->t_start = due;
			sl->len = 0;
			sl->resp[0] = '\0';
			if (started == 0)
				t->cpu_first = cpu_now();
			sl->wall_sent = wall_now();
			if (started == 0)
				t->wall_first = sl->wall_sent;
			if (curl_multi_add_handle(multi, sl->h) != CURLM_OK) {
				fprintf(stderr, "loadgen: curl_multi_add_handle failed\n");
				goto out;
			}
			started++;
		}
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			goto out;
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct slot *sl;
			long status = 0;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			tally_answer(t, status, sl->t_start, sl->wall_sent, sl->resp,
			             msg->data.result == CURLE_OK
			                 ? NULL
			                 : curl_easy_strerror(msg->data.result));
			curl_multi_remove_handle(multi, sl->h);
			sl->next_free = free_list;
			free_list = sl;
			finished++;
		}
		/* A handle freed just now may start at once: do not sleep in poll then. */
		if (free_list && started < o->count &&
		    due_at(o, t0, started, mono_now()) <= mono_now())
			wait_ms = 0;
		if (finished < o->count &&
		    curl_multi_poll(multi, NULL, 0, (int)wait_ms, NULL) != CURLM_OK)
			goto out;
	}
	t->cpu_last = cpu_now();
	rc = 0;
out:
	for (long i = 0; slots && i < o->concurrency; i++) {
		if (slots[i].h) {
			curl_multi_remove_handle(multi, slots[i].h);
			curl_easy_cleanup(slots[i].h);
		}
	}
	curl_multi_cleanup(multi);
	curl_slist_free_all(hdrs);
	curl_global_cleanup();
	free(slots);
	return rc;
}

/* ---- http: a minimal epoll client ---- */

/* One kept-alive connection with at most one request out. */
struct conn {
	int fd;   /* -1: not connected */
	int busy; /* a request is out */
	struct conn *next_free;
	size_t sent; /* bytes of the request written */
	size_t rcvd; /* bytes of the answer read */
	size_t need; /* head + Content-Length, once the head is in; 0 before */
	long status;
	int close_after; /* the server said Connection: close */
	double t_start;  /* scheduled (open loop) or actual start */
	double t_sent;   /* actual start, for the timeout */
	double wall_sent;
	size_t len; /* bytes kept in resp */
	char resp[RESP_CAP];
};

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
}

/* Opens a connection (blocking connect: the target is on loopback), then non-blocking. */
static int conn_open(struct conn *c, const struct addrinfo *ai, int ep)
{
	int one = 1;
	c->fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
	if (c->fd < 0)
		return -1;
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		conn_close(c);
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int fl = fcntl(c->fd, F_GETFL);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		conn_close(c);
		return -1;
	}
	return 0;
}

/* Writes what is left of the request; asks for EPOLLOUT if the socket is full. */
static int conn_send(struct conn *c, const char *req, size_t req_len, int ep)
{
	while (c->sent < req_len) {
		ssize_t w = send(c->fd, req + c->sent, req_len - c->sent, MSG_NOSIGNAL);
		if (w > 0) {
			c->sent += (size_t)w;
			continue;
		}
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
			return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
		}
		return -1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Reads what has arrived. Returns 1 when the answer is complete, 0 when more is to come,
 * -1 on a closed or broken connection or an answer this client does not handle. */
static int conn_recv(struct conn *c)
{
	char buf[65536];
	for (;;) {
		ssize_t r = read(c->fd, buf, sizeof buf);
		if (r == 0)
			return -1;
		if (r < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		size_t take = (size_t)r < RESP_CAP - 1 - c->len ? (size_t)r : RESP_CAP - 1 - c->len;
		memcpy(c->resp + c->len, buf, take);
		c->len += take;
		c->resp[c->len] = '\0';
		c->rcvd += (size_t)r;
		if (!c->need) {
			char *end = strstr(c->resp, "\r\n\r\n");
			if (!end && c->len == RESP_CAP - 1)
				return -1; /* a head this long is not labhook's */
			if (!end)
				continue;
			*end = '\0'; /* the head alone, for the searches below */
			const char *cl = strcasestr(c->resp, "\r\ncontent-length:");
			c->status = strtol(c->resp + strcspn(c->resp, " "), NULL, 10);
			c->close_after = strcasestr(c->resp, "\r\nconnection: close") != NULL;
			size_t head = (size_t)(end - c->resp) + 4;
			if (!cl)
				return -1; /* labhook always sends Content-Length */
			c->need = head + strtoul(cl + 17, NULL, 10);
			/* The body after the head, for the billID. */
			memmove(c->resp, c->resp + head, c->len - head + 1);
			c->len -= head;
		}
		if (c->rcvd >= c->need)
			return 1;
	}
}

static int run_http(const struct opts *o, const char *body, size_t body_len, struct tally *t)
{
	char host[256], port[16] = "80", *req = NULL;
	const char *hp = o->url + strlen("http://"), *path = strchr(hp, '/');
	size_t hl = path ? (size_t)(path - hp) : strlen(hp), req_len = 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	struct conn *conns = NULL, *free_list = NULL;
	long started = 0, finished = 0;
	int ep = -1, rc = -1;

	if (hl == 0 || hl >= sizeof host)
		return -1;
	memcpy(host, hp, hl);
	host[hl] = '\0';
	char *colon = strrchr(host, ':');
	if (colon) {
		snprintf(port, sizeof port, "%s", colon + 1);
		*colon = '\0';
	}
	if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
		fprintf(stderr, "loadgen: cannot resolve %s\n", host);
		return -1;
	}
	/* The request, made once. */
	size_t cap = body_len + 1024;
	for (int i = 0; i < o->n_headers; i++)
		cap += strlen(o->headers[i]) + 2;
	if (!(req = malloc(cap)))
		goto out;
	req_len = (size_t)snprintf(req, cap,
	                           "POST %s HTTP/1.1\r\nHost: %s:%s\r\n"
	                           "Content-Type: application/json\r\nContent-Length: %zu\r\n",
	                           path ? path : "/", host, port, body_len);
	for (int i = 0; i < o->n_headers; i++)
		req_len += (size_t)snprintf(req + req_len, cap - req_len, "%s\r\n", o->headers[i]);
	req_len += (size_t)snprintf(req + req_len, cap - req_len, "\r\n");
	memcpy(req + req_len, body, body_len);
	req_len += body_len;

	if ((ep = epoll_create1(0)) < 0 || !(conns = calloc((size_t)o->concurrency, sizeof *conns)))
		goto out;
	for (long i = o->concurrency - 1; i >= 0; i--) {
		conns[i].fd = -1;
		conns[i].next_free = free_list;
		free_list = &conns[i];
	}
	double t0 = mono_now(), next_timeout_check = t0 + 1;
	while (finished < o->count) {
		double now = mono_now();
		int wait_ms = 1000;
		while (started < o->count && free_list) {
			double due = due_at(o, t0, started, now);
			if (due > now) {
				wait_ms = (int)ceil((due - now) * 1000);
				break;
			}
			struct conn *c = free_list;
			free_list = c->next_free;
			c->busy = 1;
			c->sent = c->rcvd = c->need = c->len = 0;
			c->status = 0;
			c->close_after = 0;
			c->resp[0] = '\0';
			c->t_start = due;
			c->t_sent = now;
			if (started == 0)
				t->cpu_first = cpu_now();
			c->wall_sent = wall_now();
			if (started++ == 0)
				t->wall_first = c->wall_sent;
			if ((c->fd < 0 && conn_open(c, ai, ep) != 0) ||
			    conn_send(c, req, req_len, ep) != 0) {
				tally_answer(t, 0, c->t_start, c->wall_sent, "", strerror(errno));
				conn_close(c);
				c->busy = 0;
				c->next_free = free_list;
				free_list = c;
				finished++;
			}
		}
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, finished < o->count ? wait_ms : 0);
		if (n < 0 && errno != EINTR)
			goto out;
		for (int k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			int done = 0;
			if (!c->busy) { /* the server closed an idle kept-alive connection */
				conn_close(c);
				continue;
			}
			if ((evs[k].events & EPOLLOUT) && conn_send(c, req, req_len, ep) != 0)
				done = -1;
			if (!done && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				done = conn_recv(c);
			if (!done)
				continue;
			tally_answer(t, c->status, c->t_start, c->wall_sent, c->resp,
			             done < 0 ? "connection closed or bad answer" : NULL);
			if (done < 0 || c->close_after)
				conn_close(c);
			c->busy = 0;
			c->next_free = free_list;
			free_list = c;
			finished++;
		}
		now = mono_now();
		if (now >= next_timeout_check) { /* requests out for too long fail */
			next_timeout_check = now + 1;
			for (long i = 0; i < o->concurrency; i++) {
				struct conn *c = &conns[i];
				if (c->busy && now - c->t_sent > REQ_TIMEOUT_MS / 1000.0) {
					tally_answer(t, 0, c->t_start, c->wall_sent, "", "timeout");
					conn_close(c);
					c->busy = 0;
					c->next_free = free_list;
					free_list = c;
					finished++;
				}
			}
		}
	}
	t->cpu_last = cpu_now();
	rc = 0;
out:
	for (long i = 0; conns && i < o->concurrency; i++)
		conn_close(&conns[i]);
	if (ep >= 0)
		close(ep);
	freeaddrinfo(ai);
	free(conns);
	free(req);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct tally t;
	char *body = NULL;
	size_t body_len = 0;
	int rc = 1;

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if (o.concurrency > o.count)
		o.concurrency = o.count;
	memset(&t, 0, sizeof t);
	if (!(body = read_file(o.body_file, &body_len))) {
		fprintf(stderr, "loadgen: cannot read %s: %s\n", o.body_file, strerror(errno));
		return 2;
	}
	if (o.out && !(t.out = fopen(o.out, "w"))) {
		fprintf(stderr, "loadgen: cannot write %s: %s\n", o.out, strerror(errno));
		goto out;
	}
	if (!(t.lat = malloc((size_t)o.count * sizeof *t.lat)))
		goto out;
	double t0 = mono_now();
	int e = strncmp(o.url, "http://", 7) == 0 ? run_http(&o, body, body_len, &t)
	                                          : run_curl(&o, body, body_len, &t);
	if (e != 0)
		goto out;
	double elapsed = mono_now() - t0;
	qsort(t.lat, (size_t)t.ok, sizeof *t.lat, cmp_double);
	double cpu = t.cpu_last - t.cpu_first;
	printf("ok=%ld fail=%ld elapsed_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f "
	       "max_ms=%.3f t_first=%.3f t_last=%.3f cpu_s=%.6f cpu_us_per_req=%.2f\n",
	       t.ok, t.failed, elapsed, (double)t.ok / elapsed,
	       percentile(t.lat, t.ok, 0.50) * 1000, percentile(t.lat, t.ok, 0.99) * 1000,
	       percentile(t.lat, t.ok, 1.0) * 1000, t.wall_first, t.wall_last, cpu,
	       cpu * 1e6 / (double)(t.ok + t.failed));
	if (t.failed)
		fprintf(stderr, "loadgen: %ld failed; first: %s\n", t.failed, t.first_error);
	rc = t.failed ? 1 : 0;
out:
	if (t.out && fclose(t.out) != 0)
		rc = 1;
	free(t.lat);
	free(body);
	return rc;
}
