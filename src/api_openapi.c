/* api_openapi.c: GET /openapi.json, the OpenAPI 3.1 document of this API (docs/openapi.json),
 * compiled into the binary at build time (cmake/embed.cmake), so the service always serves
 * the description of the routes it has. Its SHA-256, also computed at build time, is the
 * ETag. Runs on HTTP threads; the document is constant.
 */
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include "api.h"

/* From the generated openapi_doc.c. */
extern const unsigned char lh_openapi_json[];
extern const size_t lh_openapi_json_len;
extern const char lh_openapi_json_sha256[];

static ssize_t doc_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	(void)arg;
	if (pos >= lh_openapi_json_len)
		return -1;
	size_t n = lh_openapi_json_len - (size_t)pos;
	if (n > max)
		n = max;
	memcpy(buf, lh_openapi_json + pos, n);
	return (ssize_t)n;
}

void api_openapi(struct call *c)
{
	struct http_resp *rs = c->rs;
	char etag[70];
	snprintf(etag, sizeof etag, "\"%s\"", lh_openapi_json_sha256);
	http_resp_header(rs, "ETag", "%s", etag);
	/* Anyone may keep it, but must ask again: a new binary serves a new document. */
	http_resp_header(rs, "Cache-Control", "no-cache");
	json_decref(rs->json);
	rs->json = NULL;
	if (api_etag_listed(http_header(c->rq, "If-None-Match"), etag)) {
		rs->status = 304;
		rs->no_body = 1;
		return;
	}
	http_resp_header(rs, "Content-Type", "application/json");
	rs->stream = (struct http_stream){.size = lh_openapi_json_len, .read = doc_read};
	rs->status = 200;
}
