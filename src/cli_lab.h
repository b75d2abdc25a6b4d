/* cli_lab.h: the lab side from the command line with flags instead of JSON (`labhook lab
 * create-bill|get-bill|create-lead`) and the calls `labhook trigger` makes with the admin key
 * in <data-dir>/admin.key. Single-threaded; runs in its own process.
 */
#ifndef LH_CLI_LAB_H
#define LH_CLI_LAB_H

#include <stdio.h>

#include <jansson.h>

#include "cli_http.h"
#include "config.h"

/* The service and the admin key to call it with (cleansed by cli_lab_close). */
struct cli_lab {
	const char *tool;
	char base[1100];
	char key[160];
	int json; /* --json: print the API's answers */
};

/* Reads the admin key of cfg's data directory and the service's URL (url_flag, the demo's,
 * or the listen setting). CLI_OK, or CLI_EAPI after a message when there is no key. */
int cli_lab_open(const char *tool, const struct config *cfg, const char *url_flag,
                 struct cli_lab *out);
void cli_lab_close(struct cli_lab *l);

/* One admin-key call: CLI_OK with *out (free with cli_resp_free) on a 2xx, else the exit
 * code after a message. body borrowed, may be NULL. */
int cli_lab_call(struct cli_lab *l, const char *method, const char *path, json_t *body,
                 struct cli_resp *out);

/* `labhook lab create-bill` (with flags), `get-bill`, `create-lead`: -1 when words[0] is
 * none of these (admin_cli's table has it), else the exit code. */
int cli_lab_main(const struct config *cfg, const char *url_flag, const char *const *words,
                 size_t nw);
void cli_lab_usage(FILE *f);
/* The same commands as roff lines "labhook lab COMMAND ..." for the man page. */
void cli_lab_print_man(FILE *f);

/* Prints the bill's id, status and reports (id, status, name) from a GET /lab/bills/{id}
 * answer. */
void cli_lab_print_bill(FILE *f, json_t *bill);

#endif
