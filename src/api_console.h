/* api_console.h: the web console's files (console/), compiled into the binary at build time
 * by cmake/embed_console.cmake, and the handler that serves them at /console.
 *
 * The table is constant data: any thread may read it.
 */
#ifndef LH_API_CONSOLE_H
#define LH_API_CONSOLE_H

#include <stddef.h>

struct console_file {
	const char *name; /* "index.html", "console.js", ... */
	const char *content_type;
	const char *etag; /* quoted, from the file's SHA-256 */
	const unsigned char *data;
	size_t size;
};

extern const struct console_file console_files[];
extern const size_t console_nfiles;

/* The file called name, or NULL. */
const struct console_file *console_file_find(const char *name);

#endif
