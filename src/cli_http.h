/* cli_http.h: what the command-line tools (`labhook admin|lab|client|listen|trigger`) share:
 * one HTTP call to the service with libcurl easy (never through a proxy: keys and tokens go
 * straight to the service), the service's URL, the exit codes, and the reading of the
 * words after a command (flags and positional arguments). Single-threaded; each command
 * runs in its own process.
 */
#ifndef LH_CLI_HTTP_H
#define LH_CLI_HTTP_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"

/* Exit codes of every command (docs/cli.md). */
enum cli_exit {
	CLI_OK = 0,
	CLI_EAPI = 1,   /* the service answered 4xx/5xx (its message printed), or a local failure */
	CLI_EUSAGE = 2, /* the command line is wrong */
	CLI_EREACH = 3, /* the service cannot be reached */
	CLI_ELOGIN = 4, /* no saved login, or it no longer works: labhook client login */
};

/* An answer: status, body (NUL-terminated, owned) and the body as JSON when it is JSON. */
struct cli_resp {
	long status;
	char *body;
	size_t len;
	json_t *json;
};
void cli_resp_free(struct cli_resp *r);

/* One request. bearer may be NULL; body (len bytes, ctype) may be NULL. On CLI_OK *out is
 * the answer, whatever its status (free with cli_resp_free); CLI_EREACH after a message
 * naming the URL when there is no answer. extra_headers: NULL or a NULL-ended list. */
int cli_http(const char *tool, const char *method, const char *url, const char *bearer,
             const char *ctype, const char *body, size_t len, const char *const *extra_headers,
             struct cli_resp *out);
/* The same with a JSON body (borrowed, may be NULL). */
int cli_http_json(const char *tool, const char *method, const char *url, const char *bearer,
                  json_t *body, struct cli_resp *out);

/* The service's base URL, no trailing slash: --url when given, else the URL that `serve
 * --demo` recorded in <data-dir>/demo.json, else http://<listen>. */
void cli_base_url(const struct config *cfg, const char *url_flag, int use_demo, char *out,
                  size_t cap);

/* Prints the service's error answer (its code and message, or the status) on stderr as
 * "labhook TOOL: ..." and returns CLI_EAPI. */
int cli_api_error(const char *tool, const struct cli_resp *r);

/* The words after a command: flags (--name VALUE, --name=VALUE, or a bare switch of the
 * switches list) and positional arguments. Each flag taken with cli_flag is marked; what
 * is left unmarked is an error (cli_words_check). */
#define CLI_WORDS_CAP 48
struct cli_words {
	const char *pos[CLI_WORDS_CAP];
	size_t npos;
	struct {
		const char *name, *value;
		int used;
	} flag[CLI_WORDS_CAP];
	size_t nflag;
};
/* -1 after a message when a flag wants a value that is missing or there are too many. */
int cli_words_read(const char *tool, const char *const *w, size_t n, const char *switches,
                   struct cli_words *out);
/* The last value of --name (marked used), or NULL. Switches have the value "". */
const char *cli_flag(struct cli_words *w, const char *name);
/* Every value of --name in order (marked used), at most cap; their number. */
size_t cli_flag_all(struct cli_words *w, const char *name, const char **out, size_t cap);
/* 0, or -1 after a message naming the first flag no command took. */
int cli_words_check(const char *tool, const struct cli_words *w);

/* The start of every tool: --help prints usage on stdout (CLI_OK), then the settings into
 * *cfg and the other words into *w (switches as for cli_words_read). -1 when the command
 * goes on, else the exit code after a message. */
int cli_start(const char *tool, int argc, char **argv, char **env, const char *switches,
              void (*usage)(FILE *), struct config *cfg, struct cli_words *w);

/* "a,b,c" as a JSON array of strings (empty items left out). Returns owned, json_decref. */
json_t *cli_json_list(const char *csv);

#endif
