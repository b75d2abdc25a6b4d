/* api_openapi.c: GET /openapi.json, the OpenAPI 3.1 document of this API (docs/openapi.json),
 * compiled into the binary at build time (cmake/embed.cmake), so the service always serves
 * the description of the routes it has. Its SHA-256, also computed at build time, is the
 * ETag. Runs on HTTP threads; the document is constant.
 */
#include <stddef.h>

#include "api.h"

/* From the generated openapi_doc.c. */
extern const unsigned char lh_openapi_json[];
extern const size_t lh_openapi_json_len;
extern const char lh_openapi_json_sha256[];

static const struct api_blob doc = {"application/json", lh_openapi_json, &lh_openapi_json_len,
                                    lh_openapi_json_sha256};

void api_openapi(struct call *c)
{
	/* Anyone may keep it, but must ask again: a new binary serves a new document. */
	api_send_blob(c, &doc);
}
