/* api_reports.c: report documents as integrators fetch them (API.md 9): by the signed,
 * expiring reportURL without a token (GET /reports/{bill}/{report}), or with the bill's
 * account's token (GET /client/bills/{bill}/reports/{report}).
 *
 * A document is streamed from the store one chunk (REPORT_CHUNK) at a time: each response
 * holds one chunk in memory, however large the document and however many clients read it.
 * A stream reads the version it started with; a replacement meanwhile cuts it short. Range
 * requests (one range), If-None-Match and If-Range work against the document's sha256 as
 * its ETag. Runs on HTTP threads.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"

/* One response's reading of a document (an http_stream's arg). */
struct doc_reader {
	struct store *st;
	struct report_doc doc;
	uint64_t first; /* the first byte served (a range's start) */
	int64_t chunk;  /* the chunk in buf, -1 none */
	size_t len;     /* its bytes */
	char buf[REPORT_CHUNK];
};

static ssize_t doc_read(void *arg, uint64_t pos, char *out, size_t max)
{
	struct doc_reader *r = arg;
	uint64_t at = r->first + pos;
	int64_t n = (int64_t)(at / REPORT_CHUNK);
	size_t off = (size_t)(at % REPORT_CHUNK);
	if (n != r->chunk) {
		enum lh_err e =
		    r->st->ops->report_doc_chunk(r->st, r->doc.bill_id, r->doc.report_id,
		                                 r->doc.version, n, r->buf, sizeof r->buf, &r->len);
		if (e != LH_OK) {
			LOG(LOG_WARN, "api",
			    "bill=%s report=%s chunk=%" PRId64 " err=%s"
			    " document stream cut (replaced or unreadable)",
			    r->doc.bill_id, r->doc.report_id, n, err_code(e));
			r->chunk = -1;
			return -1;
		}
		r->chunk = n;
	}
	if (off >= r->len)
		return -1; /* the store has fewer bytes than the document's size says */
	size_t k = r->len - off < max ? r->len - off : max;
	memcpy(out, r->buf + off, k);
	return (ssize_t)k;
}

/* Answers with the document that info describes (200, 206, 304 or 416), or 404 when the
 * report has none yet. cache: the Cache-Control value. */
static void serve_doc(struct call *c, const struct report_doc_info *info, const char *cache)
{
	struct http_resp *rs = c->rs;
	const struct report_doc *d = &info->doc;
	char etag[70], sha[65];
	uint64_t size = (uint64_t)d->size, first = 0, last = size ? size - 1 : 0;

	if (info->bill_status == BILL_DELETED) {
		api_fail(c, LH_ENOTFOUND, "bill_not_found", NULL, "no bill with this id");
		return;
	}
	if (!info->has_doc) {
		api_fail(c, LH_ENOTFOUND, "report_not_ready", NULL,
		         "the report has no document yet; it is available once the lab attaches"
		         " it (report.completed with a 'document' tells)");
		return;
	}
	util_hex(d->sha256, 32, sha);
	snprintf(etag, sizeof etag, "\"%s\"", sha);
	http_resp_header(rs, "ETag", "%s", etag);
	http_resp_header(rs, "Cache-Control", "%s", cache);
	http_resp_header(rs, "Accept-Ranges", "bytes");
	if (api_etag_listed(http_header(c->rq, "If-None-Match"), etag)) {
		rs->status = 304;
		rs->no_body = 1;
		return;
	}
	const char *if_range = http_header(c->rq, "If-Range");
	int ranged = 0;
	/* If-Range compares strongly with the one ETag (RFC 9110 13.1.5): no W/, no list. */
	if (!if_range || strcmp(if_range, etag) == 0)
		ranged = util_range_parse(http_header(c->rq, "Range"), size, &first, &last);
	if (ranged < 0) {
		rs->nheaders = 0; /* an error answer: none of the document's caching headers */
		http_resp_header(rs, "Content-Range", "bytes */%" PRIu64, size);
		api_fail(c, LH_ERANGE, "range_not_satisfiable", NULL,
		         "the range asked for is outside the document's %" PRIu64 " bytes", size);
		return;
	}
	struct doc_reader *r = malloc(sizeof *r);
	if (!r) {
		rs->nheaders = 0;
		api_fail_internal(c, LH_ENOMEM, "serve document");
		return;
	}
	r->st = c->app->store;
	r->doc = *d;
	r->first = first;
	r->chunk = -1;
	r->len = 0;
	http_resp_header(rs, "Content-Type", "%s", d->content_type);
	/* Shown inline from the console's origin: a document runs no script of ours. */
	http_resp_header(rs, "Content-Security-Policy", "sandbox");
	http_resp_header(rs, "Content-Disposition", "inline; filename=\"%s-%s.pdf\"", d->bill_id,
	                 d->report_id);
	if (ranged) {
		http_resp_header(rs, "Content-Range", "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64,
		                 first, last, size);
	}
	json_decref(rs->json);
	rs->json = NULL;
	rs->status = ranged ? 206 : 200;
	rs->stream = (struct http_stream){
	    .size = last - first + 1, .read = doc_read, .arg = r, .free_arg = free};
}

/* The report named by the path, of client_id ("" any), into info; answers 404 or 500 and
 * returns -1 otherwise. */
static int load_report(struct call *c, const char *client_id, struct report_doc_info *info)
{
	enum lh_err e = c->app->store->ops->report_doc_get(c->app->store, client_id, c->arg[0],
	                                                   c->arg[1], info);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "report_not_found", NULL,
		                "no bill with this id has this report");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load report");
	return 0;
}

void api_report_link_get(struct call *c)
{
	struct report_doc_info info;
	int64_t expires = 0, now = util_now();
	char when[32], cache[48];
	switch (domain_report_link_check(&c->app->links, c->arg[0], c->arg[1],
	                                 http_query(c->rq, "expires"), http_query(c->rq, "sig"),
	                                 now, &expires)) {
	case LINK_BAD_SIGNATURE:
		api_fail(c, LH_EFORBIDDEN, "invalid_signature", "sig",
		         "the link's signature is missing or does not match its bill, report and"
		         " expiry; use the reportURL exactly as the event carried it");
		return;
	case LINK_EXPIRED:
		util_rfc3339(expires, when);
		api_fail(c, LH_EFORBIDDEN, "link_expired", "expires",
		         "the link expired at %s; fetch the document with GET"
		         " /client/bills/%s/reports/%s and an access token",
		         when, c->arg[0], c->arg[1]);
		return;
	case LINK_OK:
		break;
	}
	if (load_report(c, NULL, &info))
		return;
	/* A cache may keep it while the link is valid, at most a day. */
	int64_t age = expires - now < 86400 ? expires - now : 86400;
	snprintf(cache, sizeof cache, "private, max-age=%" PRId64, age);
	serve_doc(c, &info, cache);
}

void api_client_report_get(struct call *c)
{
	struct report_doc_info info;
	if (load_report(c, c->acct.client_id, &info) == 0)
		serve_doc(c, &info, "private, no-cache");
}
