/* http.c: see http.h. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "addr.h"
#include "jtext.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* Each connection's memory pool (request line, headers, read and write buffers):
 * libmicrohttpd zeroes all of it for every request on the connection, which at 64 KiB was
 * 9% of an API thread's time per bill. 16 KiB takes headers up to about 15 KiB (past that,
 * 431 Request Header Fields Too Large). */
#define CONN_POOL (16 * 1024)

/* The largest JSON answer: far above any page of a list (pages hold at most 100 items);
 * past it the client gets the out-of-memory answer rather than the service growing. */
#define HTTP_ANSWER_MAX ((size_t)64 << 20)

/* A connection's deadline (see reaper): its socket context, from libmicrohttpd's STARTED
 * notification to its CLOSED one. */
struct conn {
	struct conn *prev, *next; /* srv->conns, under conn_mu */
	int fd;
	int64_t deadline_us;   /* monotonic; 0 while a handler or the store has the request */
	const char *phase;     /* "headers" or "body", for the log line */
	struct reqctx *parked; /* under park_mu: its request while parked */
	int watched;           /* under park_mu: parked, and its socket in the watch set */
};

struct http_server {
	struct MHD_Daemon *d;
	const struct config *cfg; /* borrowed; outlives the server */
	http_admit_fn admit;
	http_handler_fn fn;
	void *ctx;
	size_t max_body;
	int uploads, max_uploads; /* large uploads being received (atomic), and their cap */
	int64_t header_us, body_us, idle_us;
	/* The reaper: every connection under conn_mu, and the thread that closes overdue ones
	 * (libmicrohttpd's own timeout is an idle timer, which a client trickling a byte every
	 * few seconds never trips). It also watches the sockets of parked connections, which
	 * libmicrohttpd does not look at while they are suspended, for their client's reset. */
	pthread_mutex_t conn_mu;
	struct conn *conns;
	int reaping;
	int watch_fd; /* epoll: parked connections' sockets (hang-ups only), and wake_fd */
	int wake_fd;  /* eventfd: written to stop the reaper */
	pthread_t reaper;
	/* Deferred answers. Under park_mu: each deferred request's ready/suspended hand-off,
	 * and the counts http_stop waits on (libmicrohttpd must not be stopped while a
	 * connection is suspended). */
	pthread_mutex_t park_mu;
	int busy;     /* requests inside a handler or between it and their suspension */
	int parked;   /* deferred requests suspended and not answered yet */
	int stopping; /* while http_stop waits for the two above: new requests get 503, new
	               * connections are closed (on_accept) */
	int resuming; /* atomic: http_ready calls in MHD_resume_connection (outside park_mu) */
};

/* A deferred answer (http_defer); lives in its request's reqctx. */
struct http_deferred {
	struct http_server *srv;
	struct MHD_Connection *conn;
	http_finish_fn finish;
	void *arg;
};

/* Where a request is, from its first callback to its completion callback. Every move goes
 * through rq_move, which checks it against the table below. Which thread moves it:
 *   BODY -> DRAINING, BODY|DRAINING -> DONE, BODY -> HANDLER -> DONE: its connection's
 *     thread, alone (nothing else knows the request yet);
 *   HANDLER -> DEFERRED (http_defer): the handler, before the handle reaches another thread;
 *   from DEFERRED on, http_ready (any thread) and the reaper may move it: every move is
 *   made under park_mu, except RESUMED -> DONE, made once http_ready is done with the
 *   request.
 * Counts (under park_mu): srv->busy holds HANDLER, DEFERRED and READY requests; srv->parked
 * holds PARKED, ABANDONED, RESUMED and ORPHANED ones, until their answer is queued or
 * dropped. */
enum rq_state {
	RQ_BODY,      /* admitted; its body is read into buf */
	RQ_DRAINING,  /* the body went over body_max: the rest is counted and dropped, then 413 */
	RQ_HANDLER,   /* the handler runs */
	RQ_DEFERRED,  /* the handler called http_defer: parks at libmicrohttpd's next call */
	RQ_READY,     /* http_ready came before it parked: answers at the next call instead */
	RQ_PARKED,    /* the connection is suspended until http_ready */
	RQ_ABANDONED, /* parked, and its client reset: resumed early, to be closed unanswered */
	RQ_RESUMED,   /* http_ready resumed it: finish runs and answers at the next call */
	RQ_ORPHANED,  /* closed before http_ready, which releases the work and the request */
	RQ_DONE,      /* answer queued, or deferred work released: only completion is left */
};

#define RQ_TO(s) (1u << (s))
static const unsigned rq_legal[] = {
    [RQ_BODY] = RQ_TO(RQ_DRAINING) | RQ_TO(RQ_HANDLER) | RQ_TO(RQ_DONE),
    [RQ_DRAINING] = RQ_TO(RQ_DONE),
    [RQ_HANDLER] = RQ_TO(RQ_DEFERRED) | RQ_TO(RQ_DONE),
    [RQ_DEFERRED] = RQ_TO(RQ_READY) | RQ_TO(RQ_PARKED) | RQ_TO(RQ_ORPHANED),
    [RQ_READY] = RQ_TO(RQ_DONE),
    [RQ_PARKED] = RQ_TO(RQ_RESUMED) | RQ_TO(RQ_ABANDONED),
    [RQ_ABANDONED] = RQ_TO(RQ_RESUMED) | RQ_TO(RQ_ORPHANED),
    [RQ_RESUMED] = RQ_TO(RQ_DONE),
    [RQ_ORPHANED] = RQ_TO(RQ_DONE),
    [RQ_DONE] = 0,
};

/* Per-request state: lives from the first callback to the completion callback. */
struct reqctx {
	char *buf;
	size_t len, cap; /* BODY: len + 1 <= cap <= body_max + 1 once buf is there */
	size_t body_max; /* what admit allows this request */
	int upload;      /* counted in srv->uploads until freed (body_max > max-body) */
	enum rq_state state;
	int status; /* of the answer queued, for the log line; 0 until one is */
	int route;  /* for the metrics, from admit (see struct http_resp) */
	int64_t t0;
	char rid[40];
	char method[16];
	char path[160]; /* escaped, for the log line only */
	char ip[INET6_ADDRSTRLEN];
	struct conn *cn; /* its connection's deadline record (may be NULL) */
	struct http_deferred dfr;
};

/* See enum rq_state for who may call it, and when under park_mu. The state is stored and
 * read atomically: the connection's thread looks at it without park_mu (to route its next
 * call) while http_ready may move DEFERRED to READY under park_mu; park() then looks
 * again under the lock, so the unlocked look only routes. */
static void rq_move(struct reqctx *rc, enum rq_state to)
{
	assert(rq_legal[__atomic_load_n(&rc->state, __ATOMIC_ACQUIRE)] & RQ_TO(to));
	(void)rq_legal; /* read by the assert only */
	__atomic_store_n(&rc->state, to, __ATOMIC_RELEASE);
}

static enum rq_state rq_state(const struct reqctx *rc)
{
	return __atomic_load_n(&rc->state, __ATOMIC_ACQUIRE);
}

static void set_deadline(struct conn *cn, const char *phase, int64_t in_us)
{
	if (!cn)
		return;
	__atomic_store_n(&cn->phase, phase, __ATOMIC_RELAXED);
	__atomic_store_n(&cn->deadline_us, in_us ? util_mono_us() + in_us : 0, __ATOMIC_RELAXED);
}

/* The client's address as text: the connection's, or behind a trusted reverse proxy the
 * one its X-Forwarded-For names (trusted-proxy). */
static void client_ip(const struct http_server *srv, struct MHD_Connection *c, char *out,
                      size_t cap)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	struct ip_addr peer, a;
	snprintf(out, cap, "?");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	memset(&peer, 0, sizeof peer);
	peer.family = sa->sa_family;
	if (sa->sa_family == AF_INET)
		memcpy(peer.addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(peer.addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	else
		return;
	addr_forwarded_client(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For"),
	                      &peer, srv->cfg->trusted_proxy, srv->cfg->n_trusted_proxy, &a);
	inet_ntop(a.family, a.addr, out, (socklen_t)cap);
}

static void request_id(struct MHD_Connection *c, char out[40])
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
	size_t n = h ? strlen(h) : 0;
	if (n > 0 && n < 40 && strspn(h, "0123456789abcdefABCDEF-_") == n) {
		memcpy(out, h, n + 1);
		return;
	}
	unsigned char raw[8] = {0};
	util_random(raw, sizeof raw);
	util_hex(raw, sizeof raw, out);
}

void http_resp_header(struct http_resp *rs, const char *name, const char *fmt, ...)
{
	va_list ap;
	if (rs->nheaders >= HTTP_MAX_HEADERS || strlen(name) >= sizeof rs->headers[0].name)
		return;
	struct http_kv *kv = &rs->headers[rs->nheaders];
	va_start(ap, fmt);
	int n = vsnprintf(kv->value, sizeof kv->value, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof kv->value)
		return;
	memcpy(kv->name, name, strlen(name) + 1);
	rs->nheaders++;
}

/* libmicrohttpd's side of an http_stream: the stream itself (owned) is the context. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_stream *st = cls;
	ssize_t n = st->read(st->arg, pos, buf, max);
	return n > 0 ? n : (ssize_t)MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
	struct http_stream *st = cls;
	if (st->free_arg)
		st->free_arg(st->arg);
	free(st);
}

/* The response for rs: a stream, JSON, or nothing; NULL when out of memory (rs's stream is
 * released either way). */
static struct MHD_Response *response_of(struct http_resp *rs)
{
	if (rs->stream.read) {
		struct http_stream *st = malloc(sizeof *st);
		if (!st) {
			if (rs->stream.free_arg)
				rs->stream.free_arg(rs->stream.arg);
			rs->stream.read = NULL;
			return NULL;
		}
		*st = rs->stream;
		rs->stream.read = NULL;
		/* 64 KiB: what libmicrohttpd allocates per response to read pieces into. */
		struct MHD_Response *r = MHD_create_response_from_callback(
		    st->size, 64 * 1024, stream_read, st, stream_free);
		if (!r)
			stream_free(st);
		return r;
	}
	if (!rs->json && rs->no_body)
		return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	char *text = jtext_dump(rs->json, 15, HTTP_ANSWER_MAX);
	json_decref(rs->json);
	rs->json = NULL;
	if (!text) {
		rs->status = 500;
		rs->nheaders = 0;
		text = strdup("{\"success\":false,\"error\":{\"code\":\"out_of_memory\","
		              "\"message\":\"out of memory\"}}");
		if (!text)
			return NULL;
	}
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return NULL;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	return r;
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct reqctx *rc,
                                   struct http_resp *rs)
{
	int streamed = rs->stream.read != NULL;
	struct MHD_Response *r = response_of(rs);
	if (!r)
		return MHD_NO;
	for (size_t i = 0; i < rs->nheaders; i++)
		MHD_add_response_header(r, rs->headers[i].name, rs->headers[i].value);
	if (streamed)
		MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Request-Id", rc->rid);
	if (rs->retry_after > 0) {
		char v[24];
		snprintf(v, sizeof v, "%d", rs->retry_after);
		MHD_add_response_header(r, "Retry-After", v);
	}
	if (rs->www_auth)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
	if (rs->allow[0])
		MHD_add_response_header(r, "Allow", rs->allow);
	if (__atomic_load_n(&rc->dfr.srv->stopping, __ATOMIC_ACQUIRE))
		MHD_add_response_header(r, "Connection", "close"); /* let keep-alive clients go */
	assert(rs->status >= 100 && rs->status <= 599);
	rc->status = rs->status;
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)rs->status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Answers a request that the handler never deferred: nothing runs for it after this. */
static enum MHD_Result answer(struct MHD_Connection *c, struct reqctx *rc, struct http_resp *rs)
{
	rq_move(rc, RQ_DONE);
	return send_answer(c, rc, rs);
}

struct framing {
	int content_length, transfer_encoding, te_chunked_only;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
	struct framing *f = cls;
	(void)kind;
	if (strcasecmp(key, "Content-Length") == 0)
		f->content_length++;
	if (strcasecmp(key, "Transfer-Encoding") == 0) {
		f->transfer_encoding++;
		f->te_chunked_only = value && strcasecmp(value, "chunked") == 0;
	}
	return MHD_YES;
}

/* Answers and closes on ambiguous framing (RFC 9112 6.3): Content-Length with
 * Transfer-Encoding, Content-Length twice, or a transfer coding other than chunked. These
 * are how requests are smuggled past proxies; no honest client sends them. */
static enum MHD_Result check_framing(struct MHD_Connection *c, struct reqctx *rc)
{
	struct framing f = {0, 0, 0};
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
	const char *code = NULL, *msg = NULL;
	int status = 400;
	if (f.transfer_encoding && (f.content_length || f.transfer_encoding > 1)) {
		code = "ambiguous_framing";
		msg = "send either Content-Length or Transfer-Encoding: chunked, not both";
	} else if (f.content_length > 1) {
		code = "ambiguous_framing";
		msg = "send Content-Length once";
	} else if (f.transfer_encoding && !f.te_chunked_only) {
		status = 501;
		code = "unsupported_transfer_encoding";
		msg = "the only transfer coding accepted is chunked";
	}
	if (!code)
		return MHD_YES;
	struct http_resp rs = {.status = status};
	rs.json =
	    json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code", code, "message", msg);
	return answer(c, rc, &rs);
}

static enum MHD_Result send_too_big(struct MHD_Connection *c, struct reqctx *rc)
{
	size_t cap = rc->body_max;
	char msg[96];
	struct http_resp rs = {.status = 413};
	snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes", cap);
	rs.json = json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code",
	                    "payload_too_large", "message", msg);
	return answer(c, rc, &rs);
}

static const char *path_of(const char *url, char *path, size_t cap)
{
	size_t plen = strcspn(url, "?");
	if (plen >= cap)
		plen = cap - 1;
	memcpy(path, url, plen);
	path[plen] = '\0';
	return path;
}

/* Headers in, body not read: the application says how much body this request may send, or
 * answers now (unknown route, bad credentials), so that no body is buffered for it. */
static enum MHD_Result admit(struct http_server *srv, struct MHD_Connection *c, struct reqctx *rc,
                             const char *url, const char *method)
{
	char path[2048];
	struct http_req rq = {
	    .method = method,
	    .path = path_of(url, path, sizeof path),
	    .rid = rc->rid,
	    .ip = rc->ip,
	    .conn = c,
	    .defer_slot = &rc->dfr,
	};
	struct http_resp rs = {.status = 500};
	size_t allowed = srv->admit(srv->ctx, &rq, &rs);
	rc->route = rs.route;
	if (rs.json)
		return answer(c, rc, &rs);
	rc->body_max = allowed;
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
	if (cl && strtoull(cl, NULL, 10) > rc->body_max)
		return send_too_big(c, rc); /* never read it */
	if (allowed > srv->max_body) {
		/* A large upload: its buffer may grow past max-body, so only so many at once. */
		if (__atomic_add_fetch(&srv->uploads, 1, __ATOMIC_ACQ_REL) > srv->max_uploads) {
			__atomic_sub_fetch(&srv->uploads, 1, __ATOMIC_ACQ_REL);
			rs.status = 503;
			rs.retry_after = 2;
			rs.json =
			    json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code",
			              "too_many_uploads", "message",
			              "too many documents are being uploaded at once; retry in a"
			              " few seconds");
			return answer(c, rc, &rs);
		}
		rc->upload = 1;
	}
	return MHD_YES;
}

static void reqctx_free(struct reqctx *rc);
static void upload_done(struct reqctx *rc);

/* The client of a deferred answer is gone: finish runs with no request, only to release
 * its work (whatever it puts in the answer is dropped). */
static void release_work(struct reqctx *rc)
{
	struct http_resp rs = {.status = 500};
	rc->dfr.finish(rc->dfr.arg, NULL, &rs);
	json_decref(rs.json);
}

/* Its deferred answer is queued (or dropped): http_stop need not wait for it any more. */
static void unpark(struct http_server *srv)
{
	pthread_mutex_lock(&srv->park_mu);
	assert(srv->parked > 0);
	srv->parked--;
	pthread_mutex_unlock(&srv->park_mu);
}

/* A piece of the body: into buf up to body_max, then counted and dropped. */
static enum MHD_Result take_body(struct MHD_Connection *c, struct reqctx *rc, const char *data,
                                 size_t n)
{
	if (rc->state == RQ_BODY && rc->len + n > rc->body_max) {
		rq_move(rc, RQ_DRAINING);
		free(rc->buf);
		rc->buf = NULL;
		rc->len += n;
		return MHD_YES;
	}
	if (rc->state != RQ_BODY) {
		/* Drain what the client is still sending so it can read our 413 (closing on
		 * unread data would reset the connection and lose the answer), but only up to a
		 * bound: past it, answer and close anyway. */
		assert(rc->state == RQ_DRAINING || rc->state == RQ_DONE);
		assert(rc->state != RQ_DRAINING || !rc->buf); /* nothing kept past the cap */
		rc->len += n;
		if (rc->state == RQ_DRAINING && rc->len > 8 * rc->body_max)
			return send_too_big(c, rc);
		return MHD_YES;
	}
	if (rc->len + n + 1 > rc->cap) {
		size_t ncap = rc->cap ? rc->cap : 4096;
		while (ncap < rc->len + n + 1)
			ncap *= 2;
		if (ncap > rc->body_max + 1)
			ncap = rc->body_max + 1;
		char *nb = realloc(rc->buf, ncap);
		if (!nb)
			return MHD_NO;
		rc->buf = nb;
		rc->cap = ncap;
	}
	memcpy(rc->buf + rc->len, data, n);
	rc->len += n;
	assert(rc->len + 1 <= rc->cap && rc->cap <= rc->body_max + 1);
	return MHD_YES;
}

/* Under park_mu, as a request parks: the reaper's next sweep watches its socket (see
 * watch_parked). libmicrohttpd does not look at a suspended connection, so a client that
 * resets it is not noticed until the work is done, and until then the connection counts
 * against max-connections and max-connections-per-ip: a client resetting requests faster
 * than commits end would lock its address (or, from many, everyone) out. Only a hang-up
 * (reset, or closed both ways) is reported, not a half-close: such a client still waits for
 * its answer. Not watched without a connection record, or if epoll refuses: it waits for
 * its work, as before. */
static void watch(struct http_server *srv, struct reqctx *rc)
{
	(void)srv;
	if (rc->cn) {
		rc->cn->parked = rc;
		rc->cn->watched = 0;
	}
}

/* Under park_mu, before its connection is resumed (and so may close its descriptor). */
static void unwatch(struct http_server *srv, struct reqctx *rc)
{
	if (!rc->cn || !rc->cn->parked)
		return;
	if (rc->cn->watched)
		epoll_ctl(srv->watch_fd, EPOLL_CTL_DEL, rc->cn->fd, NULL);
	rc->cn->parked = NULL;
	rc->cn->watched = 0;
}

/* Under conn_mu, at each sweep of the reaper: adds the sockets of requests parked since the
 * last sweep to the watch set. A request parks for as long as its commit takes, a
 * millisecond or two, and is resumed long before a sweep comes: watching each at once cost
 * two system calls a request (on the writer's thread, half of them), while a client's reset
 * matters only to a request parked for long, which is watched within a sweep (250 ms). A
 * socket already reset when added is reported at once. */
static void watch_parked(struct http_server *srv)
{
	pthread_mutex_lock(&srv->park_mu);
	for (struct conn *cn = srv->conns; cn; cn = cn->next) {
		if (!cn->parked || cn->watched)
			continue;
		struct epoll_event ev = {.events = 0, .data.fd = cn->fd};
		if (epoll_ctl(srv->watch_fd, EPOLL_CTL_ADD, cn->fd, &ev) == 0)
			cn->watched = 1;
		else
			cn->parked = NULL; /* not watched: it waits for its work, as before */
	}
	pthread_mutex_unlock(&srv->park_mu);
}

/* The call after the handler deferred: parks the request, unless its work is done already,
 * in which case it answers now. */
static enum MHD_Result park(struct http_server *srv, struct MHD_Connection *c, struct reqctx *rc,
                            const struct http_req *rq, struct http_resp *rs)
{
	pthread_mutex_lock(&srv->park_mu);
	assert(srv->busy > 0);
	srv->busy--;
	if (rc->state == RQ_DEFERRED) {
		/* http_ready resumes the connection; the thread serves others. */
		rq_move(rc, RQ_PARKED);
		srv->parked++;
		MHD_suspend_connection(c);
		watch(srv, rc);
		pthread_mutex_unlock(&srv->park_mu);
		return MHD_YES;
	}
	rq_move(rc, RQ_DONE); /* READY: done already */
	pthread_mutex_unlock(&srv->park_mu);
	rc->dfr.finish(rc->dfr.arg, rq, rs);
	return send_answer(c, rc, rs);
}

/* Runs the handler on a complete request, or answers 503 while the server stops. */
static enum MHD_Result handle(struct http_server *srv, struct MHD_Connection *c, struct reqctx *rc,
                              const struct http_req *rq, struct http_resp *rs)
{
	pthread_mutex_lock(&srv->park_mu);
	int stopping = srv->stopping;
	if (!stopping) {
		rq_move(rc, RQ_HANDLER);
		srv->busy++;
	}
	pthread_mutex_unlock(&srv->park_mu);
	if (stopping) {
		rs->status = 503;
		rs->retry_after = 1;
		rs->json = json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code",
		                     "shutting_down", "message", "the server is stopping; retry");
		return answer(c, rc, rs);
	}
	srv->fn(srv->ctx, rq, rs);
	pthread_mutex_lock(&srv->park_mu);
	int deferred = rc->state != RQ_HANDLER; /* DEFERRED, or READY already */
	if (!deferred) {
		assert(srv->busy > 0);
		srv->busy--;
	}
	pthread_mutex_unlock(&srv->park_mu);
	if (deferred) {
		/* Not suspended in this call: libmicrohttpd 0.9.75 keeps a suspended
		 * connection's event-loop state as it was ("read" in this call), and on resume
		 * reads first; a client that had half-closed then gets its connection closed
		 * without our answer. Returning without one lets it settle the state (waiting
		 * for the application), and it calls again at once: the request parks then.
		 * busy stays counted until that call. */
		json_decref(rs->json); /* a handler that defers answers later, not now */
		rs->json = NULL;
		return MHD_YES;
	}
	return answer(c, rc, rs);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct reqctx *rc = *con_cls;
	(void)version;

	if (!rc) {
		rc = calloc(1, sizeof *rc); /* RQ_BODY */
		if (!rc)
			return MHD_NO;
		*con_cls = rc;
		rc->dfr.srv = srv;
		rc->t0 = util_mono_us();
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		rc->cn = ci ? ci->socket_context : NULL;
		set_deadline(rc->cn, "body", srv->body_us);
		request_id(c, rc->rid);
		snprintf(rc->method, sizeof rc->method, "%s", method);
		log_escape(url, rc->path, sizeof rc->path);
		client_ip(srv, c, rc->ip, sizeof rc->ip);
		if (check_framing(c, rc) != MHD_YES || rc->state == RQ_DONE)
			return rc->status ? MHD_YES : MHD_NO;
		return admit(srv, c, rc, url, method);
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;
		*upload_size = 0;
		return take_body(c, rc, upload_data, n);
	}
	switch (rq_state(rc)) {
	case RQ_DONE:
		return MHD_YES; /* response already queued */
	case RQ_DRAINING:
		return send_too_big(c, rc);
	case RQ_ABANDONED:
		return MHD_NO; /* its client is gone: closed now, orphaned until its work is done */
	case RQ_BODY:
	case RQ_DEFERRED:
	case RQ_READY:
	case RQ_RESUMED:
		break;
	default:
		assert(!"no call while in the handler, parked or orphaned");
		return MHD_NO;
	}

	char path[2048];
	struct http_req rq = {
	    .method = method,
	    .path = path_of(url, path, sizeof path),
	    .body = rc->buf ? rc->buf : "",
	    .body_len = rc->len,
	    .rid = rc->rid,
	    .ip = rc->ip,
	    .conn = c,
	    .defer_slot = &rc->dfr,
	};
	if (rc->buf)
		rc->buf[rc->len] = '\0';
	struct http_resp rs = {.status = 500, .route = rc->route};
	enum rq_state st = rq_state(rc);
	if (st == RQ_BODY) {
		set_deadline(rc->cn, "", 0); /* complete: the handler (or the store) has it now */
		return handle(srv, c, rc, &rq, &rs);
	}
	if (st != RQ_RESUMED) /* DEFERRED or READY: the call after the handler */
		return park(srv, c, rc, &rq, &rs);
	/* Resumed: the deferred work is done. http_ready is done with the request. */
	rq_move(rc, RQ_DONE);
	rc->dfr.finish(rc->dfr.arg, &rq, &rs);
	enum MHD_Result ret = send_answer(c, rc, &rs);
	unpark(srv);
	return ret;
}

struct http_deferred *http_defer(const struct http_req *rq, http_finish_fn finish, void *arg)
{
	struct http_deferred *d = rq->defer_slot;
	struct reqctx *rc = (struct reqctx *)(void *)((char *)d - offsetof(struct reqctx, dfr));
	d->finish = finish;
	d->arg = arg;
	d->conn = rq->conn;
	rq_move(rc, RQ_DEFERRED); /* once per request, from its handler only */
	return d;
}

void http_ready(struct http_deferred *d)
{
	struct http_server *srv = d->srv;
	struct reqctx *rc = (struct reqctx *)(void *)((char *)d - offsetof(struct reqctx, dfr));
	pthread_mutex_lock(&srv->park_mu);
	switch (rc->state) {
	case RQ_DEFERRED: /* not parked yet: it answers when it would have parked */
		rq_move(rc, RQ_READY);
		pthread_mutex_unlock(&srv->park_mu);
		return;
	case RQ_PARKED: {
		struct MHD_Connection *conn = d->conn;
		unwatch(srv, rc);
		rq_move(rc, RQ_RESUMED);
		__atomic_add_fetch(&srv->resuming, 1, __ATOMIC_ACQ_REL);
		pthread_mutex_unlock(&srv->park_mu);
		/* Outside the lock (the resume writes to the connection's thread's wake-up
		 * descriptor: every API thread would wait for that system call). Nothing else
		 * moves a RESUMED request, and the connection stays suspended (so open) until
		 * this call. rc may be gone once its connection runs again: not touched after
		 * this; nor srv after the count below (http_stop waits for it: the request may be
		 * answered and unparked before the resume returns). */
		MHD_resume_connection(conn);
		__atomic_sub_fetch(&srv->resuming, 1, __ATOMIC_ACQ_REL);
		return;
	}
	case RQ_ABANDONED: /* resumed already, not closed yet: answers (to no one) as usual */
		rq_move(rc, RQ_RESUMED);
		pthread_mutex_unlock(&srv->park_mu);
		return;
	default:
		assert(rc->state == RQ_ORPHANED); /* http_ready once, after http_defer */
		break;
	}
	rq_move(rc, RQ_DONE);
	pthread_mutex_unlock(&srv->park_mu);
	/* Its connection is gone: release the work here (on the caller's thread), then the
	 * request. Once unparked, srv may be freed by http_stop: not touched after. */
	release_work(rc);
	upload_done(rc);
	unpark(srv);
	reqctx_free(rc);
}

/* Its upload (if it was one) no longer counts; before anything that may let srv go. */
static void upload_done(struct reqctx *rc)
{
	if (rc->upload)
		__atomic_sub_fetch(&rc->dfr.srv->uploads, 1, __ATOMIC_ACQ_REL);
	rc->upload = 0;
}

static void reqctx_free(struct reqctx *rc)
{
	upload_done(rc);
	free(rc->buf);
	free(rc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct reqctx *rc = *con_cls;
	struct http_server *srv = cls;
	(void)c;
	if (!rc)
		return;
	*con_cls = NULL;
	/* A kept-alive connection may idle for conn-timeout, then send its next headers. */
	set_deadline(rc->cn, "headers", srv->idle_us + srv->header_us);
	int64_t dur = util_mono_us() - rc->t0;
	LOG(LOG_INFO, "http", "method=%s path=%s status=%d dur_ms=%.2f rid=%s ip=%s%s", rc->method,
	    rc->path, rc->status, (double)dur / 1000.0, rc->rid, rc->ip,
	    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1");
	if (rc->status) /* answered (a client gone before its answer was queued is not) */
		metrics_http_request(rc->route, rc->method, rc->status, dur);
	pthread_mutex_lock(&srv->park_mu);
	/* libmicrohttpd never closes a suspended connection (and http_stop waits for parked
	 * requests before it stops libmicrohttpd); no handler runs on this thread now. */
	assert(rc->state != RQ_PARKED && rc->state != RQ_HANDLER);
	enum rq_state was = rc->state;
	if (was == RQ_DEFERRED || was == RQ_READY) {
		/* closed between the handler and the call that parks */
		assert(srv->busy > 0);
		srv->busy--;
	}
	if (was == RQ_DEFERRED || was == RQ_ABANDONED) {
		/* Closed (a reset, say) while its job is still queued or running in the store: the
		 * job's owner may not be freed under the writer. http_ready releases both. Counted
		 * as parked, so http_stop waits for it while the store still runs. */
		rq_move(rc, RQ_ORPHANED);
		if (was == RQ_DEFERRED)
			srv->parked++;
		pthread_mutex_unlock(&srv->park_mu);
		return;
	}
	if (was == RQ_READY || was == RQ_RESUMED)
		rq_move(rc, RQ_DONE);
	pthread_mutex_unlock(&srv->park_mu);
	if (was == RQ_READY || was == RQ_RESUMED) {
		/* Closed once ready but before the answer could be sent. */
		release_work(rc);
	}
	if (was == RQ_RESUMED)
		unpark(srv);
	reqctx_free(rc);
}

/* libmicrohttpd's STARTED and CLOSED notifications bracket a connection's deadline record.
 * CLOSED comes before libmicrohttpd closes the descriptor, and removes the record under
 * conn_mu, so the reaper (which shuts sockets down under conn_mu) never touches a
 * descriptor that a new connection reuses. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	struct http_server *srv = cls;
	struct conn *cn = *socket_context;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci || !(cn = calloc(1, sizeof *cn)))
			return; /* no deadline for it; the idle timeout still applies */
		cn->fd = ci->connect_fd;
		cn->phase = "headers";
		cn->deadline_us = util_mono_us() + srv->header_us;
		pthread_mutex_lock(&srv->conn_mu);
		cn->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = cn;
		srv->conns = cn;
		pthread_mutex_unlock(&srv->conn_mu);
		*socket_context = cn;
		return;
	}
	if (!cn)
		return;
	pthread_mutex_lock(&srv->conn_mu);
	if (cn->prev)
		cn->prev->next = cn->next;
	else
		srv->conns = cn->next;
	if (cn->next)
		cn->next->prev = cn->prev;
	pthread_mutex_unlock(&srv->conn_mu);
	free(cn);
	*socket_context = NULL;
}

/* Under conn_mu, for a hang-up the watch set reported on fd: if the request parked there
 * has lost its client, resumes its connection to be closed without an answer (on_request
 * refuses to answer it; its work is released once done, as RQ_ORPHANED). The report may
 * be stale (that request answered meanwhile, fd reused): the socket is looked at again
 * under park_mu, where nothing can park or resume. Returns 1 if it dropped one. */
static int drop_if_gone(struct http_server *srv, int fd)
{
	struct conn *cn = srv->conns;
	while (cn && cn->fd != fd)
		cn = cn->next;
	int gone = 0;
	pthread_mutex_lock(&srv->park_mu);
	struct reqctx *rc = cn && cn->watched ? cn->parked : NULL;
	struct pollfd p = {.fd = fd, .events = 0};
	if (!rc) {
		/* Nothing parked is watched on fd (a request is watched only while cn->parked
		 * names it): make sure no stale registration keeps reporting. */
		epoll_ctl(srv->watch_fd, EPOLL_CTL_DEL, fd, NULL);
	} else if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
		assert(rq_state(rc) == RQ_PARKED);
		unwatch(srv, rc);
		rq_move(rc, RQ_ABANDONED);
		MHD_resume_connection(rc->dfr.conn);
		gone = 1;
	}
	pthread_mutex_unlock(&srv->park_mu);
	return gone;
}

/* Shuts down the sockets of connections past their deadline, four times a second:
 * libmicrohttpd then sees the end of the stream and closes them as usual. Between sweeps
 * it waits on the watch set, and drops parked requests whose client reset at once. */
static void *reaper_main(void *arg)
{
	struct http_server *srv = arg;
	pthread_setname_np(pthread_self(), "lh-http-reaper");
	pthread_mutex_lock(&srv->conn_mu);
	while (srv->reaping) {
		int64_t now = util_mono_us();
		int cut = 0;
		const char *phase = "";
		for (struct conn *cn = srv->conns; cn; cn = cn->next) {
			int64_t due = __atomic_load_n(&cn->deadline_us, __ATOMIC_RELAXED);
			if (!due || now < due)
				continue;
			phase = __atomic_load_n(&cn->phase, __ATOMIC_RELAXED);
			__atomic_store_n(&cn->deadline_us, 0, __ATOMIC_RELAXED);
			shutdown(cn->fd, SHUT_RDWR);
			cut++;
		}
		if (cut) { /* one line per sweep, written outside the lock new connections take */
			pthread_mutex_unlock(&srv->conn_mu);
			LOG(LOG_INFO, "http",
			    "n=%d phase=%s closed connections past their deadline", cut, phase);
			pthread_mutex_lock(&srv->conn_mu);
			continue;
		}
		struct epoll_event ev[64];
		watch_parked(srv);
		pthread_mutex_unlock(&srv->conn_mu);
		int n = epoll_wait(srv->watch_fd, ev, 64, 250);
		pthread_mutex_lock(&srv->conn_mu);
		int gone = 0;
		for (int i = 0; i < n && srv->reaping; i++)
			if (ev[i].data.fd != srv->wake_fd)
				gone += drop_if_gone(srv, ev[i].data.fd);
		if (gone) {
			pthread_mutex_unlock(&srv->conn_mu);
			LOG(LOG_DEBUG, "http", "n=%d closed parked connections whose client reset",
			    gone);
			pthread_mutex_lock(&srv->conn_mu);
		}
	}
	pthread_mutex_unlock(&srv->conn_mu);
	return NULL;
}

/* libmicrohttpd's messages; the attribute tells the compiler fmt is a printf format. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512], esc[600];
	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	LOG(LOG_DEBUG, "http", "mhd=\"%s\"", log_escape(msg, esc, sizeof esc));
}

/* Frees srv, after stopping the reaper if it runs (reaping). */
static void srv_free(struct http_server *srv)
{
	if (srv->reaping) {
		pthread_mutex_lock(&srv->conn_mu);
		srv->reaping = 0;
		pthread_mutex_unlock(&srv->conn_mu);
		uint64_t one = 1;
		if (write(srv->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
			LOG(LOG_WARN, "http", "cannot wake the reaper; it stops within 250 ms");
		pthread_join(srv->reaper, NULL);
	}
	if (srv->watch_fd >= 0)
		close(srv->watch_fd);
	if (srv->wake_fd >= 0)
		close(srv->wake_fd);
	pthread_mutex_destroy(&srv->conn_mu);
	pthread_mutex_destroy(&srv->park_mu);
	free(srv);
}

/* Binds and listens on ss here rather than in libmicrohttpd, which says only "address in
 * use or not local?": the errno is the reason a person needs (in use, not an address of
 * this machine, a port below 1024 without the right). Returns the socket, or -1 with why
 * set. */
static int listen_socket(const struct sockaddr_storage *ss, const struct http_listen *at, char *why,
                         size_t whycap)
{
	int one = 1, err;
	char env[64];
	size_t o;
	socklen_t len =
	    ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = errno;
		goto fail;
	}
	/* As libmicrohttpd does: a restart may bind while old connections linger in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    (ss->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
	    bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, SOMAXCONN) != 0) {
		err = errno;
		close(fd);
		goto fail;
	}
	return fd;
fail:
	o = (size_t)snprintf(env, sizeof env, "LABHOOK_");
	for (const char *p = at->setting; *p && o + 1 < sizeof env; p++)
		env[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
	env[o] = '\0';
	snprintf(why, whycap,
	         "cannot listen on %s%s%s:%d: %s%s; set %s (--%s HOST:PORT, %s or %s in the config"
	         " file) to a free port of this machine",
	         strchr(at->host, ':') ? "[" : "", at->host, strchr(at->host, ':') ? "]" : "",
	         at->port, strerror(err),
	         err == EADDRINUSE
	             ? " (another process listens there: stop it, or choose another port)"
	         : err == EACCES        ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
	         : err == EADDRNOTAVAIL ? " (not an address of this machine)"
	                                : "",
	         at->setting, at->setting, env, at->setting);
	return -1;
}

/* The reaper's watch set (with wake_fd in it) and the reaper itself; LH_ENOMEM if any of
 * them cannot be had (srv_free then releases what was). */
static enum lh_err reaper_start(struct http_server *srv)
{
	srv->watch_fd = epoll_create1(EPOLL_CLOEXEC);
	srv->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = srv->wake_fd};
	if (srv->watch_fd < 0 || srv->wake_fd < 0 ||
	    epoll_ctl(srv->watch_fd, EPOLL_CTL_ADD, srv->wake_fd, &ev) != 0)
		return LH_ENOMEM;
	srv->reaping = 1;
	if (pthread_create(&srv->reaper, NULL, reaper_main, srv) != 0) {
		srv->reaping = 0;
		return LH_ENOMEM;
	}
	return LH_OK;
}

/* libmicrohttpd's accept policy: while the server stops, a new connection is closed as soon
 * as it is accepted. This is instead of MHD_quiesce_daemon, which in 0.9.75 races each busy
 * worker thread for the listening socket's place in that thread's epoll set and aborts the
 * process when it loses (daemon.c: a worker that has seen the quiesce removes the socket
 * itself, and the quiesce then fails with ENOENT; seen at shutdown under load). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
	struct http_server *srv = cls;
	(void)addr;
	(void)len;
	return __atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE) ? MHD_NO : MHD_YES;
}

enum lh_err http_start(const struct config *cfg, const struct http_listen *at,
                       http_admit_fn admit_fn, http_handler_fn fn, void *ctx,
                       struct http_server **out, int *port_out, char *why, size_t whycap)
{
	struct sockaddr_storage ss;
	struct ip_addr a;
	struct http_server *srv;
	unsigned flags =
	    MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;

	memset(&ss, 0, sizeof ss);
	if (strcmp(at->host, "localhost") == 0 || addr_parse_literal(at->host, &a))
		addr_parse_literal("127.0.0.1", &a);
	if (a.family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)at->port);
		memcpy(&sin->sin_addr, a.addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)at->port);
		memcpy(&sin6->sin6_addr, a.addr, 16);
		flags |= MHD_USE_IPv6;
	}
	int lfd = listen_socket(&ss, at, why, whycap);
	if (lfd < 0)
		return LH_EIO;
	srv = calloc(1, sizeof *srv);
	if (!srv) {
		close(lfd);
		snprintf(why, whycap, "out of memory");
		return LH_ENOMEM;
	}
	srv->cfg = cfg;
	srv->admit = admit_fn;
	srv->fn = fn;
	srv->ctx = ctx;
	pthread_mutex_init(&srv->park_mu, NULL);
	pthread_mutex_init(&srv->conn_mu, NULL);
	srv->max_body = (size_t)cfg->max_body;
	srv->max_uploads = cfg->report_max_uploads;
	srv->header_us = cfg->header_timeout_ms * 1000;
	srv->body_us = cfg->body_timeout_ms * 1000;
	srv->idle_us = cfg->conn_timeout_ms * 1000;
	if (reaper_start(srv) != LH_OK) {
		srv_free(srv);
		close(lfd);
		snprintf(why, whycap, "cannot start the connection reaper");
		return LH_ENOMEM;
	}
	srv->d = MHD_start_daemon(
	    flags, 0, on_accept, srv, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)lfd, MHD_OPTION_THREAD_POOL_SIZE,
	    (unsigned)at->threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_POOL, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)(cfg->conn_timeout_ms / 1000), MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_END);
	if (!srv->d) {
		snprintf(why, whycap,
		         "cannot start the HTTP server on %s:%d (libmicrohttpd refused its"
		         " settings)",
		         at->host, at->port);
		srv_free(srv);
		/* lfd is not closed: whether libmicrohttpd closed it on failure depends on its
		 * version, and a second close could hit another thread's new descriptor. The
		 * process exits next. */
		return LH_EIO;
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof bound;
	*port_out = at->port;
	if (getsockname(lfd, (struct sockaddr *)&bound, &blen) == 0)
		*port_out =
		    ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
		                                      : ((struct sockaddr_in *)&bound)->sin_port);
	*out = srv;
	return LH_OK;
}

void http_stop(struct http_server *srv)
{
	if (!srv)
		return;
	/* Deferred answers are waiting for the store, which is still running: let them all be
	 * sent (new requests get 503 meanwhile). libmicrohttpd aborts if stopped with a
	 * connection suspended. */
	int64_t t0 = util_mono_us(), told = t0;
	pthread_mutex_lock(&srv->park_mu);
	__atomic_store_n(&srv->stopping, 1, __ATOMIC_RELEASE); /* and no new connections */
	while (srv->busy || srv->parked || __atomic_load_n(&srv->resuming, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&srv->park_mu);
		if (util_mono_us() - told > 5000000) {
			told = util_mono_us();
			LOG(LOG_WARN, "http", "waited_s=%lld still waiting for deferred answers",
			    (long long)((told - t0) / 1000000));
		}
		nanosleep(&(struct timespec){0, 1000000}, NULL);
		pthread_mutex_lock(&srv->park_mu);
	}
	pthread_mutex_unlock(&srv->park_mu);
	/* Answers are queued; give them (and clients told Connection: close) up to 2 s to
	 * leave before every connection is closed. Idle keep-alive clients use it all. */
	for (int i = 0; i < 400; i++) {
		const union MHD_DaemonInfo *di =
		    MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		if (!di || di->num_connections == 0)
			break;
		nanosleep(&(struct timespec){0, 5000000}, NULL);
	}
	MHD_stop_daemon(srv->d); /* closes the listening socket */
	srv_free(srv);
}

const char *http_query(const struct http_req *rq, const char *key)
{
	return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(const struct http_req *rq, const char *key)
{
	return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, key);
}
