/* api.c: the route table, the guard of each route (admin key or client token, checked on the
 * headers by api_admit and again on the complete request), deferred answers (api_submit),
 * and what more than one handler file uses: response, error and paging helpers, loading
 * the caller's subscription, name lookups.
 *
 * A route is a method and a path pattern whose '*' segments are captured; captured ids are
 * checked for shape before any handler sees them (a malformed id is simply not found).
 * Runs on HTTP threads; keeps no state between requests.
 */
#define _POSIX_C_SOURCE 200809L
#include "api.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

enum guard { G_NONE, G_CLIENT, G_ADMIN };

struct route {
	const char *method;
	const char *pattern;
	enum guard guard;
	void (*fn)(struct call *c);
};

static void api_healthz(struct call *c)
{
	api_ok(c, "ok", json_pack("{s:s, s:s}", "status", "ok", "version", LABHOOK_VERSION));
}

static void api_metrics(struct call *c);

static const struct route routes[] = {
    {"GET", "/healthz", G_NONE, api_healthz},
    {"GET", "/console", G_NONE, api_console_get},
    {"GET", "/console/*", G_NONE, api_console_get},
    {"GET", "/openapi.json", G_NONE, api_openapi},
    {"GET", "/metrics", G_ADMIN, api_metrics},
    {"POST", "/client/auth/token", G_NONE, api_auth_token},
    {"POST", "/client/auth/token/refresh", G_NONE, api_auth_refresh},
    {"GET", "/client/labs", G_CLIENT, api_client_labs},
    {"POST", "/client/events/subscribe", G_CLIENT, api_subscribe},
    {"GET", "/client/events/subscriptions", G_CLIENT, api_subs_list},
    {"GET", "/client/events/subscriptions/*", G_CLIENT, api_sub_get},
    {"PATCH", "/client/events/subscriptions/*", G_CLIENT, api_sub_patch},
    {"DELETE", "/client/events/subscriptions/*", G_CLIENT, api_sub_delete},
    {"GET", "/client/events/subscriptions/*/secret", G_CLIENT, api_sub_secret},
    {"POST", "/client/events/subscriptions/*/secret/rotate", G_CLIENT, api_sub_secret_rotate},
    {"GET", "/client/events/subscriptions/*/deliveries", G_CLIENT, api_sub_deliveries},
    {"POST", "/client/events/subscriptions/*/recover", G_CLIENT, api_sub_recover},
    {"POST", "/client/events/subscriptions/*/test", G_CLIENT, api_sub_test},
    {"POST", "/client/events/deliveries/*/retry", G_CLIENT, api_delivery_retry},
    {"POST", "/client/billing/create", G_CLIENT, api_billing_create},
    {"GET", "/client/bills/*", G_CLIENT, api_bill_get},
    {"GET", "/client/bills/*/reports/*", G_CLIENT, api_client_report_get},
    {"GET", "/reports/*/*", G_NONE, api_report_link_get},
    {"POST", "/client/crm/lead/create", G_CLIENT, api_lead_create},
    {"GET", "/client/crm/tests", G_CLIENT, api_crm_tests},
    {"GET", "/client/crm/packages", G_CLIENT, api_crm_packages},
    {"POST", "/lab/bills", G_ADMIN, api_lab_bill_create},
    {"GET", "/lab/bills/*", G_ADMIN, api_lab_bill_get},
    {"POST", "/lab/leads", G_ADMIN, api_lab_lead_create},
    {"POST", "/lab/bills/*/reports/*/complete", G_ADMIN, api_lab_report_complete},
    {"DELETE", "/lab/bills/*", G_ADMIN, api_lab_bill_delete},
    {"POST", "/lab/leads/*/convert", G_ADMIN, api_lab_lead_convert},
    {"POST", "/admin/accounts", G_ADMIN, api_admin_accounts_create},
    {"GET", "/admin/accounts", G_ADMIN, api_admin_accounts_list},
    {"GET", "/admin/accounts/*", G_ADMIN, api_admin_account_get},
    {"PATCH", "/admin/accounts/*", G_ADMIN, api_admin_account_patch},
    {"POST", "/admin/accounts/*/secret/rotate", G_ADMIN, api_admin_account_rotate},
    {"POST", "/admin/accounts/*/labs", G_ADMIN, api_admin_labs_create},
    {"GET", "/admin/accounts/*/labs", G_ADMIN, api_admin_labs_list},
    {"POST", "/admin/accounts/*/parties", G_ADMIN, api_admin_parties_create},
    {"GET", "/admin/accounts/*/parties", G_ADMIN, api_admin_parties_list},
    {"POST", "/admin/labs/*/catalog", G_ADMIN, api_admin_catalog_import},
    {"GET", "/admin/labs/*/catalog/tests", G_ADMIN, api_admin_catalog_tests},
    {"GET", "/admin/labs/*/catalog/packages", G_ADMIN, api_admin_catalog_packages},
    {"GET", "/admin/labs/*/catalog/rates/*", G_ADMIN, api_admin_catalog_rates},
    {"PUT", "/admin/labs/*/catalog/tests/*", G_ADMIN, api_admin_catalog_test_put},
    {"DELETE", "/admin/labs/*/catalog/tests/*", G_ADMIN, api_admin_catalog_test_delete},
    {"PUT", "/admin/labs/*/catalog/packages/*", G_ADMIN, api_admin_catalog_package_put},
    {"DELETE", "/admin/labs/*/catalog/packages/*", G_ADMIN, api_admin_catalog_package_delete},
    {"PUT", "/admin/labs/*/catalog/tests/*/rates/*", G_ADMIN, api_admin_catalog_test_rate_put},
    {"DELETE", "/admin/labs/*/catalog/tests/*/rates/*", G_ADMIN,
     api_admin_catalog_test_rate_delete},
    {"PUT", "/admin/labs/*/catalog/packages/*/rates/*", G_ADMIN,
     api_admin_catalog_package_rate_put},
    {"DELETE", "/admin/labs/*/catalog/packages/*/rates/*", G_ADMIN,
     api_admin_catalog_package_rate_delete},
};
#define N_ROUTES (COUNTOF(routes))
_Static_assert(N_ROUTES < METRICS_MAX_ROUTES, "each route row has its metrics cell");

#define ROUTE_LABEL_CAP 96

/* The route's pattern as its metrics label: each '*' (an id) becomes "{id}". */
static void route_label(const char *pattern, char out[ROUTE_LABEL_CAP])
{
	size_t o = 0;
	for (const char *p = pattern; *p && o + 5 < ROUTE_LABEL_CAP; p++) {
		if (*p == '*') {
			memcpy(out + o, "{id}", 4);
			o += 4;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

/* A rendered text as an http_stream (owned: text_free frees it). */
struct text_body {
	char *p;
	size_t len;
};

static ssize_t text_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	const struct text_body *t = arg;
	size_t n = pos < t->len ? t->len - (size_t)pos : 0;
	if (n > max)
		n = max;
	memcpy(buf, t->p + pos, n);
	return n ? (ssize_t)n : -1;
}

static void text_free(void *arg)
{
	struct text_body *t = arg;
	free(t->p);
	free(t);
}

/* The store's figures, read at most once a second whoever asks: the counts take the
 * store's reader (on SQLite, the one every API read waits for) for as long as the backlog
 * is long, and the unauthenticated metrics-listen port must not let anyone hold it. */
static enum lh_err store_stats_cached(struct store *store, struct store_stats *out)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static struct store_stats last;
	static int64_t last_us; /* 0: none yet */
	static const struct store *last_of;
	enum lh_err e = LH_OK;
	pthread_mutex_lock(&mu);
	int64_t now = util_mono_us();
	if (!last_us || last_of != store || now - last_us >= 1000000) {
		struct store_stats st;
		if ((e = store->ops->stats(store, &st)) == LH_OK) {
			last = st;
			last_us = now;
			last_of = store;
		}
	}
	if (e == LH_OK)
		*out = last;
	pthread_mutex_unlock(&mu);
	return e;
}

/* GET /metrics: the Prometheus text exposition. If the store cannot say its figures, the
 * rest is still answered (and the failure logged): the counters do not depend on it. */
static void api_metrics(struct call *c)
{
	char labels[N_ROUTES][ROUTE_LABEL_CAP];
	const char *lp[N_ROUTES];
	struct store_stats st;
	size_t len = 0;

	for (size_t i = 0; i < N_ROUTES; i++) {
		route_label(routes[i].pattern, labels[i]);
		lp[i] = labels[i];
	}
	enum lh_err e = store_stats_cached(c->app->store, &st);
	if (e != LH_OK)
		LOG(LOG_WARN, "api", "rid=%s err=%s the store's figures are left out of /metrics",
		    c->rq->rid, err_code(e));
	struct text_body *t = malloc(sizeof *t);
	if (!t || !(t->p = metrics_render(lp, N_ROUTES, e == LH_OK ? &st : NULL, &len))) {
		free(t);
		api_fail_internal(c, LH_ENOMEM, "render metrics");
		return;
	}
	t->len = len;
	c->rs->stream =
	    (struct http_stream){.size = len, .read = text_read, .arg = t, .free_arg = text_free};
	http_resp_header(c->rs, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	http_resp_header(c->rs, "Cache-Control", "no-store");
	c->rs->status = 200;
}

/* Matches path against pattern; captured segments are copied into segs (NUL-separated). */
static int match(const char *pattern, const char *path, char *buf, size_t cap,
                 const char *arg[API_MAX_ARGS])
{
	size_t o = 0;
	int na = 0;
	const char *p = pattern, *s = path;

	while (*p && *s) {
		if (*p == '*') {
			size_t n = strcspn(s, "/");
			if (n == 0 || na == API_MAX_ARGS || o + n + 1 > cap)
				return 0;
			memcpy(buf + o, s, n);
			buf[o + n] = '\0';
			arg[na++] = buf + o;
			o += n + 1;
			p++;
			s += n;
		} else if (*p == *s) {
			p++;
			s++;
		} else {
			return 0;
		}
	}
	return *p == '\0' && *s == '\0';
}

static int id_shape_ok(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n < ID_CAP &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int check_admin(struct call *c)
{
	const char *h = http_header(c->rq, "Authorization");
	unsigned char got[32];
	if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
		c->rs->www_auth = 1;
		return api_fail(c, LH_EUNAUTH, "unauthorized", NULL,
		                "send the admin key as 'Authorization: Bearer <key>'");
	}
	util_sha256(h + 7, strlen(h + 7), got);
	if (!util_ct_equal(got, c->app->admin_key_hash, 32)) {
		c->rs->www_auth = 1;
		return api_fail(c, LH_EUNAUTH, "unauthorized", NULL, "the admin key is not valid");
	}
	return 0;
}

static int check_client(struct call *c)
{
	enum lh_err e =
	    auth_verify_bearer(c->app->auth, http_header(c->rq, "Authorization"), &c->acct);
	if (e == LH_EUNAUTH) {
		c->rs->www_auth = 1;
		return api_fail(
		    c, e, "invalid_token", NULL,
		    "a valid access token is required: 'Authorization: Bearer <authToken>' from POST /client/auth/token (missing, malformed, expired or revoked)");
	}
	if (e != LH_OK)
		return api_fail_internal(c, e, "verify token");
	return 0;
}

/* Finds rq's route, checks its guard and the shape of its ids. Returns the route, or NULL
 * once c's answer is made (503 while starting, 404, 405, 401). Runs twice per request:
 * on the headers (api_admit) and on the complete request (api_dispatch), which starts at
 * the row the first found (rs->route); checked tokens are cached, so the second check
 * costs a lookup. metrics_only: the metrics listener,
 * where /metrics is the only route and needs no credentials. Sets rs->route. */
static const struct route *route_find(struct call *c, char *buf, size_t cap, int metrics_only)
{
	const struct http_req *rq = c->rq;
	struct http_resp *rs = c->rs;
	int path_found = 0;

	if (!__atomic_load_n(&c->app->ready, __ATOMIC_ACQUIRE)) {
		/* The listener opens a moment before the last start-up step completes. */
		rs->retry_after = 1;
		api_fail(c, LH_EIO, "starting", NULL, "the service is starting; retry in a second");
		rs->status = 503;
		return NULL;
	}
	/* HEAD is GET without the body (libmicrohttpd drops it). */
	const char *method = strcmp(rq->method, "HEAD") == 0 ? "GET" : rq->method;
	/* On the complete request, admit's look left the path's first row: no row before it
	 * matches the path. */
	size_t first = rs->route > 0 && (size_t)rs->route <= N_ROUTES ? (size_t)rs->route - 1 : 0;
	rs->allow[0] = '\0';
	rs->route = 0;
	for (size_t i = first; i < N_ROUTES; i++) {
		const struct route *r = &routes[i];
		const char *arg[API_MAX_ARGS] = {0};
		if ((metrics_only && r->fn != api_metrics) ||
		    !match(r->pattern, rq->path, buf, cap, arg))
			continue;
		if (!rs->route)
			rs->route = (int)i + 1; /* the first row of this path: its pattern */
		if (!strstr(rs->allow, r->method)) {
			size_t n = strlen(rs->allow);
			snprintf(rs->allow + n, sizeof rs->allow - n, "%s%s", n ? ", " : "",
			         r->method);
		}
		path_found = 1;
		if (strcmp(r->method, method) != 0)
			continue;
		rs->allow[0] = '\0';
		memcpy(c->arg, arg, sizeof arg);
		enum guard guard = metrics_only ? G_NONE : r->guard;
		if ((guard == G_ADMIN && check_admin(c)) || (guard == G_CLIENT && check_client(c)))
			return NULL;
		/* (The console's '*' is a file name, looked up in its own table.) */
		for (int k = 0; k < API_MAX_ARGS && r->fn != api_console_get; k++)
			if (c->arg[k] && !id_shape_ok(c->arg[k])) {
				api_fail(c, LH_ENOTFOUND, "not_found", NULL, "no such resource");
				return NULL;
			}
		return r;
	}
	if (path_found)
		api_fail(c, LH_EMETHOD, "method_not_allowed", NULL,
		         "method %s is not allowed on this path", rq->method);
	else
		api_fail(c, LH_ENOTFOUND, "not_found", NULL, "no such endpoint");
	return NULL;
}

static size_t admit(void *ctx, const struct http_req *rq, struct http_resp *rs, int metrics_only)
{
	struct call c = {.app = ctx, .rq = rq, .rs = rs};
	char buf[1024];
	const struct route *r = route_find(&c, buf, sizeof buf, metrics_only);
	if (!r)
		return 0;
	if (r->guard == G_NONE || metrics_only)
		return API_OPEN_BODY_MAX;
	/* The one route that takes a report document: up to report-max-size of it. */
	const char *ct = http_header(rq, "Content-Type");
	if (r->fn == api_lab_report_complete && ct && strncasecmp(ct, "application/pdf", 15) == 0)
		return (size_t)c.app->cfg.report_max_size;
	return (size_t)c.app->cfg.max_body;
}

static void dispatch(void *ctx, const struct http_req *rq, struct http_resp *rs, int metrics_only)
{
	struct call c = {.app = ctx, .rq = rq, .rs = rs};
	char buf[1024];
	const struct route *r = route_find(&c, buf, sizeof buf, metrics_only);
	if (r)
		r->fn(&c);
}

size_t api_admit(void *ctx, const struct http_req *rq, struct http_resp *rs)
{
	return admit(ctx, rq, rs, 0);
}

void api_dispatch(void *ctx, const struct http_req *rq, struct http_resp *rs)
{
	dispatch(ctx, rq, rs, 0);
}

size_t api_metrics_admit(void *ctx, const struct http_req *rq, struct http_resp *rs)
{
	return admit(ctx, rq, rs, 1);
}

void api_metrics_dispatch(void *ctx, const struct http_req *rq, struct http_resp *rs)
{
	dispatch(ctx, rq, rs, 1);
}

/* A request waiting for its job's commit (api_submit). */
struct pending {
	struct app *app;
	struct account acct;
	void *job;
	api_finish_fn finish;
	enum lh_err result;
	struct http_deferred *d;
};

/* On the store's thread: the job is durable (or failed). */
static void pending_done(void *arg, enum lh_err result)
{
	struct pending *p = arg;
	struct http_deferred *d = p->d;
	p->result = result;
	http_ready(d);
}

/* On a server thread, once ready: the answer. */
static void pending_finish(void *arg, const struct http_req *rq, struct http_resp *rs)
{
	struct pending *p = arg;
	struct call c = {.app = p->app, .rq = rq, .rs = rs, .acct = p->acct};
	p->finish(rq ? &c : NULL, p->job, p->result);
	free(p);
}

void api_submit(struct call *c, store_tx_fn fn, void *tx_arg, unsigned flags, api_finish_fn finish,
                void *job)
{
	struct pending *p = malloc(sizeof *p);
	if (!p) {
		finish(c, job, LH_ENOMEM);
		return;
	}
	*p = (struct pending){
	    .app = c->app, .acct = c->acct, .job = job, .finish = finish, .result = LH_ESTORE};
	p->d = http_defer(c->rq, pending_finish, p);
	c->app->store->ops->submit_async(c->app->store, fn, tx_arg, flags, pending_done, p);
}

int api_fail(struct call *c, enum lh_err e, const char *code, const char *field, const char *fmt,
             ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *err = json_pack("{s:s, s:s}", "code", code ? code : err_code(e), "message", msg);
	if (err && field && *field)
		json_object_set_new(err, "field", json_string(field));
	json_decref(c->rs->json);
	c->rs->json = json_pack("{s:b, s:o*}", "success", 0, "error", err);
	c->rs->status = err_http_status(e);
	return -1;
}

int api_fail_verr(struct call *c, const struct verr *v)
{
	if (v->err == LH_ENOMEM) /* the server's trouble, not the body's */
		return api_fail_internal(c, LH_ENOMEM, "validate the body");
	return api_fail(c, v->err, v->code, v->field, "%s", v->message);
}

int api_fail_internal(struct call *c, enum lh_err e, const char *what)
{
	LOG(LOG_ERROR, "api", "rid=%s op=\"%s\" err=%s request failed", c->rq->rid, what,
	    err_code(e));
	if (e == LH_OK || err_http_status(e) < 500)
		e = LH_EIO;
	if (err_http_status(e) == 503) {
		/* The disk, not the request: the same request can succeed once space is back. */
		c->rs->retry_after = 5;
		return api_fail(
		    c, e, err_code(e), NULL,
		    "the service's storage is %s; the change was not applied; retry later (request id %s)",
		    e == LH_EFULL ? "full" : "failing", c->rq->rid);
	}
	return api_fail(
	    c, e, err_code(e), NULL,
	    "the service could not complete the request; it was not applied; retry later (request id %s)",
	    c->rq->rid);
}

void api_ok(struct call *c, const char *msg, json_t *fields)
{
	json_t *o = json_pack("{s:b, s:s}", "success", 1, "message", msg);
	if (o && fields)
		json_object_update(o, fields);
	json_decref(fields);
	if (!o) {
		api_fail_internal(c, LH_ENOMEM, "build response");
		return;
	}
	json_decref(c->rs->json);
	c->rs->json = o;
	c->rs->status = 200;
}

json_t *api_body(struct call *c, const struct field_spec *specs, size_t n)
{
	struct verr v;
	json_t *j = NULL;
	if (validate_parse_object(c->rq->body, c->rq->body_len, &j, &v) ||
	    validate_object(j, specs, n, &v)) {
		json_decref(j);
		api_fail_verr(c, &v);
		return NULL;
	}
	return j;
}

int api_paging(struct call *c, const char *prefix, size_t *limit, const char **cursor)
{
	const char *l = http_query(c->rq, "limit");
	const char *cur = http_query(c->rq, "cursor");
	*limit = 50;
	if (l) {
		char *end;
		long v = strtol(l, &end, 10);
		if (*l == '\0' || *end != '\0' || v < 1 || v > 500)
			return api_fail(c, LH_EINVAL, "invalid_value", "limit",
			                "'limit' must be an integer from 1 to 500");
		*limit = (size_t)v;
	}
	*cursor = "";
	if (cur && *cur) {
		if (!util_id_valid(cur, prefix))
			return api_fail(c, LH_EINVAL, "invalid_value", "cursor",
			                "'cursor' is not a cursor this list returned");
		*cursor = cur;
	}
	return 0;
}

struct subscription *api_load_sub(struct call *c)
{
	struct subscription *s = malloc(sizeof *s);
	if (!s) {
		api_fail_internal(c, LH_ENOMEM, "load subscription");
		return NULL;
	}
	enum lh_err e = c->app->store->ops->sub_get(c->app->store, c->acct.client_id, c->arg[0], s);
	if (e == LH_OK)
		return s;
	free(s);
	if (e == LH_ENOTFOUND)
		api_fail(c, e, "subscription_not_found", NULL, "no subscription with this id");
	else
		api_fail_internal(c, e, "load subscription");
	return NULL;
}

int api_name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

int api_etag_listed(const char *h, const char *etag)
{
	size_t n = strlen(etag);
	if (!h)
		return 0;
	for (const char *p = h; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '*')
			return 1;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return 1;
		p += strcspn(p, ",");
	}
	return 0;
}

static ssize_t blob_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	const struct api_blob *b = arg;
	if (pos >= *b->len)
		return -1;
	size_t n = *b->len - (size_t)pos < max ? *b->len - (size_t)pos : max;
	memcpy(buf, b->data + pos, n);
	return (ssize_t)n;
}

void api_send_blob(struct call *c, const struct api_blob *b)
{
	struct http_resp *rs = c->rs;
	char etag[70];
	snprintf(etag, sizeof etag, "\"%s\"", b->sha256);
	http_resp_header(rs, "ETag", "%s", etag);
	http_resp_header(rs, "Cache-Control", "no-cache");
	json_decref(rs->json);
	rs->json = NULL;
	if (api_etag_listed(http_header(c->rq, "If-None-Match"), etag)) {
		rs->status = 304;
		rs->no_body = 1;
		return;
	}
	http_resp_header(rs, "Content-Type", "%s", b->content_type);
	/* The bytes are the binary's: nothing to free. */
	rs->stream = (struct http_stream){.size = *b->len, .read = blob_read, .arg = (void *)b};
	rs->status = 200;
}

json_t *api_time(int64_t t)
{
	char buf[32];
	util_rfc3339(t, buf);
	return json_string(buf);
}
