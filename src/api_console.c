/* api_console.c: GET /console and /console/{file}, the web console (docs/console.md).
 *
 * Its files (console/) are compiled into the binary at build time (cmake/embed.cmake, one
 * lh_console_<file> per file, listed in CMakeLists.txt and in the table below) and streamed
 * as they are. Every answer carries the console's security headers: a
 * Content-Security-Policy that allows only the console's own scripts, styles and API calls,
 * no framing, no referrer. Runs on HTTP threads; keeps no state.
 */
#include <stddef.h>
#include <string.h>

#include "api.h"
#include "util.h"

#define CONSOLE_CSP                                                                                \
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"             \
	" img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

/* From the generated lh_console_*.c. */
#define EMBEDDED(sym)                                                                              \
	extern const unsigned char sym[];                                                          \
	extern const size_t sym##_len;                                                             \
	extern const char sym##_sha256[];
EMBEDDED(lh_console_index_html)
EMBEDDED(lh_console_console_css)
EMBEDDED(lh_console_console_js)
#define FILE_OF(name, type, sym)                                                                   \
	{                                                                                          \
		name,                                                                              \
		{                                                                                  \
			type, sym, &sym##_len, sym##_sha256                                        \
		}                                                                                  \
	}

static const struct {
	const char *name;
	struct api_blob blob;
} files[] = {
    FILE_OF("index.html", "text/html; charset=utf-8", lh_console_index_html),
    FILE_OF("console.css", "text/css; charset=utf-8", lh_console_console_css),
    FILE_OF("console.js", "text/javascript; charset=utf-8", lh_console_console_js),
};

void api_console_get(struct call *c)
{
	const char *name = c->arg[0] ? c->arg[0] : "index.html";
	struct http_resp *rs = c->rs;

	http_resp_header(rs, "Content-Security-Policy", "%s", CONSOLE_CSP);
	http_resp_header(rs, "X-Frame-Options", "DENY");
	http_resp_header(rs, "Referrer-Policy", "no-referrer");
	for (size_t i = 0; i < COUNTOF(files); i++)
		if (strcmp(files[i].name, name) == 0) {
			api_send_blob(c, &files[i].blob);
			if (rs->status == 304) /* (a 200 gets it with every streamed answer) */
				http_resp_header(rs, "X-Content-Type-Options", "nosniff");
			return;
		}
	http_resp_header(rs, "X-Content-Type-Options", "nosniff");
	api_fail(c, LH_ENOTFOUND, "not_found", NULL, "the console has no such file");
}
