/* http.h: the HTTP server glue over libmicrohttpd.
 *
 * Reads each request body into one buffer capped at what admit allows (max-body; a report
 * document's route report-max-size: 413 beyond, without reading the rest), gives the handler
 * a complete request, sends its response (JSON, or a body streamed piece by piece from an
 * http_stream), logs one line per request (method, path, status, duration, request id;
 * never headers or bodies) and counts it in the metrics (route, method, status, duration).
 * Handlers run on libmicrohttpd's pool threads, several at once. A handler that waits for
 * something slow (a durable commit) defers its answer instead of holding its thread: the
 * connection is parked, and the answer is made once the work is done (http_defer).
 */
#ifndef LH_HTTP_H
#define LH_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "config.h"
#include "err.h"

struct MHD_Connection;
struct http_deferred;

struct http_req {
	const char *method;
	const char *path; /* without the query string */
	/* NUL-terminated; body_len excludes the NUL. Valid until the request is done: for a
	 * deferred answer, until its finish has run. */
	const char *body;
	size_t body_len;
	const char *rid; /* request id, echoed as X-Request-Id */
	const char *ip;  /* client address, text */
	struct MHD_Connection *conn;
	struct http_deferred *defer_slot; /* the server's; see http_defer */
};

/* A body made piece by piece instead of JSON (a stored document): read(arg, pos, buf, max)
 * writes up to max bytes of the body from offset pos into buf and returns their count
 * (> 0), or -1 on failure (the connection is then cut: the client sees a short body). It
 * runs on a server thread, once per piece, for as long as the client reads. free_arg(arg)
 * runs once the response is done or dropped. size is the body's length (Content-Length). */
typedef ssize_t (*http_read_fn)(void *arg, uint64_t pos, char *buf, size_t max);
struct http_stream {
	uint64_t size;
	http_read_fn read; /* NULL: no stream */
	void *arg;
	void (*free_arg)(void *arg);
};

#define HTTP_MAX_HEADERS 10
struct http_kv {
	char name[40];
	char value[200];
};

struct http_resp {
	int status;
	json_t *json;    /* owned by the server once set; sent and freed */
	int retry_after; /* seconds, sent as Retry-After when > 0 */
	int www_auth;    /* send WWW-Authenticate: Bearer */
	char allow[64];  /* methods for the Allow header of a 405, or "" */
	int route;       /* for the metrics: 0 (no route), or 1 + the route table's first row
	                  * of the path's pattern; the admit function's value counts, and the
	                  * handler finds it set (where to start looking) */
	/* Set instead of json: the body comes from the stream (owned by the server once set),
	 * and the headers say what it is (Content-Type among them; no Cache-Control default). */
	struct http_stream stream;
	int no_body; /* with stream unset and json NULL: an empty body (304) */
	struct http_kv headers[HTTP_MAX_HEADERS];
	size_t nheaders;
};

/* Adds a response header (dropped past HTTP_MAX_HEADERS or if too long: callers send few
 * and short ones). */
void http_resp_header(struct http_resp *rs, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef void (*http_handler_fn)(void *ctx, const struct http_req *rq, struct http_resp *rs);
/* Runs once a request's headers are in, before any of its body is read (rq->body is NULL):
 * returns the largest body this request may send (413 above), or fills rs->json to answer
 * at once, in which case the body is never buffered. So credentials are checked before a
 * body can cost memory. A request allowed more than max-body is a large upload (a report
 * document): at most report-max-uploads of them are received at once, the next gets 503
 * with Retry-After, so their buffers are bounded in total. */
typedef size_t (*http_admit_fn)(void *ctx, const struct http_req *rq, struct http_resp *rs);

struct http_server;

/* Where a server listens: an IP address literal (or localhost) and a port (0: a free one),
 * with how many threads serve it, and the setting that named them (for the message when
 * the address cannot be had). */
struct http_listen {
	const char *host;
	int port;
	int threads;
	const char *setting;
};

/* Starts listening at `at` (limits and deadlines are cfg's); *port_out gets the bound
 * port. Each request goes through
 * admit (headers) and then fn (complete request). Connections whose headers or body are not
 * complete within header-timeout / body-timeout are closed, however steadily they trickle.
 * Returns owned, stop with http_stop. On failure why (whycap bytes) gets a sentence naming
 * the address, the system's reason and the setting to change (at->setting). */
enum lh_err http_start(const struct config *cfg, const struct http_listen *at, http_admit_fn admit,
                       http_handler_fn fn, void *ctx, struct http_server **out, int *port_out,
                       char *why, size_t whycap);
/* Stops accepting, lets running handlers finish, closes everything. Accepts NULL. */
void http_stop(struct http_server *srv);

/* Makes the handler's answer wait: when the handler returns, nothing is sent yet. Once
 * http_ready(handle) has been called (from any thread, exactly once), finish(arg, rq, rs)
 * runs on a server thread and fills rs, which is sent. If the connection is closed first,
 * finish still runs once, with rq NULL, to release arg (what it puts in rs is dropped): on
 * a server thread if it was ready, else inside http_ready, on its caller's thread, so arg
 * is never released while the work that calls http_ready still uses it.
 * Returns the handle; call at most once per request. */
typedef void (*http_finish_fn)(void *arg, const struct http_req *rq, struct http_resp *rs);
struct http_deferred *http_defer(const struct http_req *rq, http_finish_fn finish, void *arg);
void http_ready(struct http_deferred *handle);

/* A query-string argument or request header (borrowed for the request), or NULL. */
const char *http_query(const struct http_req *rq, const char *key);
const char *http_header(const struct http_req *rq, const char *key);

#endif
