/* api_console.c: GET /console and /console/{file}, the web console (docs/console.md).
 *
 * The files are constant arrays in the binary (api_console.h), streamed as they are. Every
 * answer carries the console's security headers: a Content-Security-Policy that allows only
 * the console's own scripts, styles and API calls, no framing, no referrer. Files are
 * revalidated with their ETag (Cache-Control: no-cache), so a new binary's console is picked
 * up at once. Runs on HTTP threads; keeps no state.
 */
#define _POSIX_C_SOURCE 200809L
#include "api_console.h"

#include <string.h>
#include <sys/types.h>

#include "api.h"

#define CONSOLE_CSP                                                                                \
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"             \
	" img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

const struct console_file *console_file_find(const char *name)
{
	for (size_t i = 0; i < console_nfiles; i++)
		if (strcmp(console_files[i].name, name) == 0)
			return &console_files[i];
	return NULL;
}

static ssize_t file_read(void *arg, uint64_t pos, char *buf, size_t max)
{
	const struct console_file *f = arg;
	if (pos >= f->size)
		return -1;
	size_t n = f->size - (size_t)pos < max ? f->size - (size_t)pos : max;
	memcpy(buf, f->data + pos, n);
	return (ssize_t)n;
}

void api_console_get(struct call *c)
{
	struct http_resp *rs = c->rs;
	const struct console_file *f = console_file_find(c->arg[0] ? c->arg[0] : "index.html");

	http_resp_header(rs, "Content-Security-Policy", "%s", CONSOLE_CSP);
	http_resp_header(rs, "X-Frame-Options", "DENY");
	http_resp_header(rs, "Referrer-Policy", "no-referrer");
	if (!f) {
		api_fail(c, LH_ENOTFOUND, "not_found", NULL, "the console has no such file");
		return;
	}
	http_resp_header(rs, "ETag", "%s", f->etag);
	http_resp_header(rs, "Cache-Control", "no-cache");
	if (api_etag_listed(http_header(c->rq, "If-None-Match"), f->etag)) {
		http_resp_header(rs, "X-Content-Type-Options", "nosniff");
		rs->status = 304;
		rs->no_body = 1;
		return;
	}
	http_resp_header(rs, "Content-Type", "%s", f->content_type);
	json_decref(rs->json);
	rs->json = NULL;
	rs->status = 200;
	/* The data is the binary's: nothing to free. */
	rs->stream = (struct http_stream){.size = f->size, .read = file_read, .arg = (void *)f};
}
