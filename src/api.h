/* api.h: the HTTP API: one router (api.c) and one file per resource (api_auth.c,
 * api_admin.c, api_subs.c, api_deliveries.c, api_events.c, api_reports.c, api_catalog.c,
 * api_openapi.c).
 * Handlers run on HTTP
 * threads, several at once; they keep no state of their own between requests.
 */
#ifndef LH_API_H
#define LH_API_H

#include <jansson.h>

#include "app.h"
#include "http.h"
#include "validate.h"

#define API_MAX_ARGS 3

struct call {
	struct app *app;
	const struct http_req *rq;
	struct http_resp *rs;
	const char *arg[API_MAX_ARGS]; /* path segments matched by '*' */
	struct account acct;           /* the caller, for client routes */
};

/* The request entry point handed to http_start; ctx is the struct app. */
void api_dispatch(void *ctx, const struct http_req *rq, struct http_resp *rs);
/* The http_admit_fn: on the headers alone, answers what api_dispatch would answer before
 * reading a body (unknown route or method, missing or bad credentials), else returns the
 * body size the route accepts: API_OPEN_BODY_MAX on routes without credentials (token
 * requests are small), so an unauthenticated client cannot make the server buffer more. */
#define API_OPEN_BODY_MAX (16 * 1024)
size_t api_admit(void *ctx, const struct http_req *rq, struct http_resp *rs);

/* The same pair for the metrics listener (metrics-listen): GET /metrics without
 * credentials, 404 for every other path. */
size_t api_metrics_admit(void *ctx, const struct http_req *rq, struct http_resp *rs);
void api_metrics_dispatch(void *ctx, const struct http_req *rq, struct http_resp *rs);

/* Runs fn(tx, tx_arg) in the store's writer and answers once it is durable, without holding
 * this thread meanwhile: finish(c, job, result) then builds the answer on a server thread
 * (c->rq is this request again) and frees job (which holds tx_arg). If the client has gone
 * by then, finish gets c NULL and only frees job. The handler returns right after this. */
typedef void (*api_finish_fn)(struct call *c, void *job, enum lh_err result);
void api_submit(struct call *c, store_tx_fn fn, void *tx_arg, unsigned flags, api_finish_fn finish,
                void *job);

/* Error response: {"success": false, "error": {code, message, field?}}. Returns -1. */
int api_fail(struct call *c, enum lh_err e, const char *code, const char *field, const char *fmt,
             ...) __attribute__((format(printf, 5, 6)));
/* api_fail for what validate.c refused (out of memory while validating: api_fail_internal). */
int api_fail_verr(struct call *c, const struct verr *v);
/* Error response for an unexpected internal failure (logged, generic message). */
int api_fail_internal(struct call *c, enum lh_err e, const char *what);
/* Success: {"success": true, "message": msg, ...fields}; takes ownership of fields. */
void api_ok(struct call *c, const char *msg, json_t *fields);
/* Parses the body as an object and checks it against specs; on failure responds and
 * returns NULL. Returns owned, json_decref. */
json_t *api_body(struct call *c, const struct field_spec *specs, size_t n);
/* Reads limit (1..500, default 50) and cursor (a `prefix` id) query args; responds 400. */
int api_paging(struct call *c, const char *prefix, size_t *limit, const char **cursor);

/* The caller's subscription named by the first path segment, or NULL after answering 404
 * (or 500). Returns owned, free with free(). */
struct subscription *api_load_sub(struct call *c);

/* The index of s in names[0..n), or -1 (also for s NULL). */
int api_name_index(const char *const *names, size_t n, const char *s);

/* Whether an If-None-Match / If-Range header value h (NULL: none) names etag, a quoted
 * entity tag ("*" matches any; W/ is ignored). */
int api_etag_listed(const char *h, const char *etag);
/* A file compiled into the binary by cmake/embed.cmake (its generated data, len, sha256). */
struct api_blob {
	const char *content_type;
	const unsigned char *data;
	const size_t *len;
	const char *sha256; /* hex */
};
/* Answers with b: 200 streamed from the binary's bytes, or 304 when If-None-Match names its
 * ETag (its SHA-256); Cache-Control no-cache, so a new binary's file is fetched at once. */
void api_send_blob(struct call *c, const struct api_blob *b);

/* RFC 3339 string for JSON output. */
json_t *api_time(int64_t t);

/* Handlers. */
void api_openapi(struct call *c);
void api_auth_token(struct call *c);
void api_auth_refresh(struct call *c);
void api_client_labs(struct call *c);
void api_subscribe(struct call *c);
void api_subs_list(struct call *c);
void api_sub_get(struct call *c);
void api_sub_patch(struct call *c);
void api_sub_delete(struct call *c);
void api_sub_secret(struct call *c);
void api_sub_secret_rotate(struct call *c);
void api_admin_accounts_create(struct call *c);
void api_admin_accounts_list(struct call *c);
void api_admin_account_get(struct call *c);
void api_admin_account_patch(struct call *c);
void api_admin_account_rotate(struct call *c);
void api_admin_labs_create(struct call *c);
void api_admin_labs_list(struct call *c);
void api_admin_parties_create(struct call *c);
void api_admin_parties_list(struct call *c);
void api_sub_deliveries(struct call *c);
void api_delivery_retry(struct call *c);
void api_sub_recover(struct call *c);
void api_sub_test(struct call *c);
void api_billing_create(struct call *c);
void api_bill_get(struct call *c);
void api_lead_create(struct call *c);
void api_lab_bill_create(struct call *c);
void api_lab_bill_get(struct call *c);
void api_lab_lead_create(struct call *c);
void api_lab_report_complete(struct call *c);
void api_report_link_get(struct call *c);
void api_client_report_get(struct call *c);
void api_lab_bill_delete(struct call *c);
void api_lab_bill_get(struct call *c);
void api_console_get(struct call *c);
void api_lab_lead_convert(struct call *c);
void api_crm_tests(struct call *c);
void api_crm_packages(struct call *c);
void api_admin_catalog_import(struct call *c);
void api_admin_catalog_tests(struct call *c);
void api_admin_catalog_packages(struct call *c);
void api_admin_catalog_rates(struct call *c);
void api_admin_catalog_test_put(struct call *c);
void api_admin_catalog_test_delete(struct call *c);
void api_admin_catalog_package_put(struct call *c);
void api_admin_catalog_package_delete(struct call *c);
void api_admin_catalog_test_rate_put(struct call *c);
void api_admin_catalog_test_rate_delete(struct call *c);
void api_admin_catalog_package_rate_put(struct call *c);
void api_admin_catalog_package_rate_delete(struct call *c);

#endif
