/* admin_cli.c: see admin_cli.h. Each command is one row of a table: words to match, the
 * HTTP method, the path (with the account id when the command takes one) and the flags that
 * become JSON body fields.
 */
#define _POSIX_C_SOURCE 200809L
#include "admin_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "cli_http.h"
#include "cli_lab.h"
#include "config.h"
#include "util.h"

struct cmd {
	const char *tool;         /* "admin" or "lab" */
	const char *group, *verb; /* group NULL: one-word command */
	const char *method;
	const char *path; /* each "%s" takes the next positional argument */
	int positional;   /* positional arguments for the path, then `valfield` if set */
	const char *valfield;
	/* "flag=field": --flag VALUE becomes JSON body field, a string; "flag=#field" a number
	 * (sent as given when it is not one, for the service to name); "flag=@field" a list
	 * of strings from comma-separated VALUE. */
	const char *flags[3];
	/* 1: takes the whole body from --json TEXT or --file PATH; BODY_PDF: an optional
	 * --file PATH sent as the body with Content-Type: application/pdf (a report document) */
	int json_body;
	const char *help;
};

#define BODY_PDF 2

/* clang-format off */
static const struct cmd cmds[] = {
    {"admin", "accounts", "create", "POST", "/admin/accounts", 0, NULL, {"name=name", "mode=mode", NULL}, 0,
     "accounts create --name NAME [--mode catch-all|party-scoped]"},
    {"admin", "accounts", "list", "GET", "/admin/accounts", 0, NULL, {NULL}, 0,
     "accounts list"},
    {"admin", "accounts", "get", "GET", "/admin/accounts/%s", 1, NULL, {NULL}, 0,
     "accounts get CLIENT_ID"},
    {"admin", "accounts", "set-mode", "PATCH", "/admin/accounts/%s", 1, "mode", {NULL}, 0,
     "accounts set-mode CLIENT_ID catch-all|party-scoped"},
    {"admin", "accounts", "rotate-secret", "POST", "/admin/accounts/%s/secret/rotate", 1, NULL, {NULL}, 0,
     "accounts rotate-secret CLIENT_ID"},
    {"admin", "labs", "create", "POST", "/admin/accounts/%s/labs", 1, NULL, {"name=name", NULL}, 0,
     "labs create CLIENT_ID --name NAME"},
    {"admin", "labs", "list", "GET", "/admin/accounts/%s/labs", 1, NULL, {NULL}, 0,
     "labs list CLIENT_ID"},
    {"admin", "parties", "create", "POST", "/admin/accounts/%s/parties", 1, NULL, {"kind=kind", "name=name", NULL}, 0,
     "parties create CLIENT_ID --kind corporateUser|organization --name NAME"},
    {"admin", "parties", "list", "GET", "/admin/accounts/%s/parties", 1, NULL, {NULL}, 0,
     "parties list CLIENT_ID"},
    {"lab", NULL, "complete-report", "POST", "/lab/bills/%s/reports/%s/complete", 2, NULL, {NULL}, BODY_PDF,
     "complete-report BILL_ID REPORT_ID [--file REPORT.pdf]"},
    {"lab", NULL, "delete-bill", "DELETE", "/lab/bills/%s", 1, NULL, {NULL}, 0,
     "delete-bill BILL_ID"},
    {"lab", NULL, "convert-lead", "POST", "/lab/leads/%s/convert", 1, NULL, {"booking-type=bookingType", "scheduled-at=scheduledAt", NULL}, 0,
     "convert-lead LEAD_ID --booking-type TYPE --scheduled-at RFC3339"},
    {"lab", NULL, "create-bill", "POST", "/lab/bills", 0, NULL, {NULL}, 1,
     "create-bill --json '{\"clientID\": ..., body of /client/billing/create}' | --file F"},
    {"lab", "catalog", "add-test", "PUT", "/admin/labs/%s/catalog/tests/%s", 2, NULL, {"name=name", "price=#price", NULL}, 0,
     "catalog add-test LAB_ID TEST_ID --name NAME --price PRICE"},
    {"lab", "catalog", "remove-test", "DELETE", "/admin/labs/%s/catalog/tests/%s", 2, NULL, {NULL}, 0,
     "catalog remove-test LAB_ID TEST_ID"},
    {"lab", "catalog", "list-tests", "GET", "/admin/labs/%s/catalog/tests?limit=500", 1, NULL, {NULL}, 0,
     "catalog list-tests LAB_ID"},
    {"lab", "catalog", "add-package", "PUT", "/admin/labs/%s/catalog/packages/%s", 2, NULL, {"name=name", "price=#price", "tests=@tests"}, 0,
     "catalog add-package LAB_ID PACKAGE_ID --name NAME --price PRICE [--tests TEST_ID,TEST_ID...]"},
    {"lab", "catalog", "remove-package", "DELETE", "/admin/labs/%s/catalog/packages/%s", 2, NULL, {NULL}, 0,
     "catalog remove-package LAB_ID PACKAGE_ID"},
    {"lab", "catalog", "list-packages", "GET", "/admin/labs/%s/catalog/packages?limit=500", 1, NULL, {NULL}, 0,
     "catalog list-packages LAB_ID"},
    {"lab", "catalog", "set-test-rate", "PUT", "/admin/labs/%s/catalog/tests/%s/rates/%s", 3, NULL, {"price=#price", NULL}, 0,
     "catalog set-test-rate LAB_ID TEST_ID PARTY_ID --price PRICE"},
    {"lab", "catalog", "remove-test-rate", "DELETE", "/admin/labs/%s/catalog/tests/%s/rates/%s", 3, NULL, {NULL}, 0,
     "catalog remove-test-rate LAB_ID TEST_ID PARTY_ID"},
    {"lab", "catalog", "set-package-rate", "PUT", "/admin/labs/%s/catalog/packages/%s/rates/%s", 3, NULL, {"price=#price", NULL}, 0,
     "catalog set-package-rate LAB_ID PACKAGE_ID PARTY_ID --price PRICE"},
    {"lab", "catalog", "remove-package-rate", "DELETE", "/admin/labs/%s/catalog/packages/%s/rates/%s", 3, NULL, {NULL}, 0,
     "catalog remove-package-rate LAB_ID PACKAGE_ID PARTY_ID"},
    {"lab", "catalog", "list-rates", "GET", "/admin/labs/%s/catalog/rates/%s?limit=500", 2, NULL, {NULL}, 0,
     "catalog list-rates LAB_ID PARTY_ID"},
    {"lab", "catalog", "import", "POST", "/admin/labs/%s/catalog", 1, NULL, {NULL}, 1,
     "catalog import LAB_ID --file CATALOG.json | --json '{\"tests\": [...], \"packages\": [...]}'"},
};
/* clang-format on */
#define N_CMDS (COUNTOF(cmds))

static void admin_usage(FILE *f, const char *tool)
{
	fprintf(f,
	        "Usage: labhook %s [--data-dir DIR] [--listen HOST:PORT] [--url URL] COMMAND\n"
	        "Calls the %s API of a running labhook with the key in DIR/admin.key.\n"
	        "--url defaults to http://<listen>. Commands:\n",
	        tool, tool);
	for (size_t i = 0; i < N_CMDS; i++)
		if (!strcmp(cmds[i].tool, tool))
			fprintf(f, "  %s\n", cmds[i].help);
	if (!strcmp(tool, "lab"))
		cli_lab_usage(f);
	fprintf(f, "Exit codes: 0 ok, 1 the service refused (its message on stderr), 2 usage,\n"
	           "3 the service cannot be reached.\n");
}

void admin_cli_print_man(FILE *f, const char *tool)
{
	for (size_t i = 0; i < N_CMDS; i++)
		if (!strcmp(cmds[i].tool, tool)) {
			fprintf(f, "labhook %s ", tool);
			util_roff_text(f, cmds[i].help, 1);
			fputc('\n', f);
		}
	if (!strcmp(tool, "lab"))
		cli_lab_print_man(f);
}

/* "flag=field" -> does arg "--flag" name it? */
static int flag_is(const char *spec, const char *arg)
{
	size_t n = strcspn(spec, "=");
	return !strncmp(arg, "--", 2) && strlen(arg + 2) == n && !strncmp(arg + 2, spec, n);
}

/* What the words after the command name say. */
struct args {
	const char *pos[3]; /* positional arguments */
	int npos;
	const char *flagv[3]; /* by index of cmd.flags; NULL when not given */
	const char *json_text, *json_file;
};

/* The tool's command the first words name, and how many words name it; NULL if none. */
static const struct cmd *cmd_find(const char *tool, const char *const *words, size_t nw,
                                  size_t *first)
{
	for (size_t i = 0; i < N_CMDS; i++) {
		const struct cmd *c = &cmds[i];
		if (strcmp(c->tool, tool) != 0)
			continue;
		if (c->group && nw >= 2 && !strcmp(words[0], c->group) &&
		    !strcmp(words[1], c->verb)) {
			*first = 2;
			return c;
		}
		if (!c->group && nw >= 1 && !strcmp(words[0], c->verb)) {
			*first = 1;
			return c;
		}
	}
	return NULL;
}

/* Reads the command's flags and positional arguments; -1 when they do not fit it (after a
 * message for an unexpected one): the caller prints the usage. */
static int cmd_args(const char *tool, const struct cmd *c, const char *const *words, size_t nw,
                    struct args *a)
{
	for (size_t i = 0; i < nw; i++) {
		const char *w = words[i];
		int matched = 0;
		for (int k = 0; k < 3 && c->flags[k]; k++) {
			if (flag_is(c->flags[k], w) && i + 1 < nw) {
				a->flagv[k] = words[++i];
				matched = 1;
			}
		}
		if (c->json_body == 1 && !strcmp(w, "--json") && i + 1 < nw) {
			a->json_text = words[++i];
			matched = 1;
		} else if (c->json_body && !strcmp(w, "--file") && i + 1 < nw) {
			a->json_file = words[++i];
			matched = 1;
		}
		if (matched)
			continue;
		if (!strncmp(w, "--", 2) || a->npos >= 3) {
			fprintf(stderr, "labhook %s: unexpected argument '%s'\n", tool, w);
			return -1;
		}
		a->pos[a->npos++] = w;
	}
	if (a->npos != c->positional + (c->valfield ? 1 : 0) ||
	    (c->json_body == 1 && !a->json_text && !a->json_file))
		return -1;
	return 0;
}

/* The whole file at path into *out (owned, free()) and *len; -1 after a message. A report
 * document is at most a few MiB; 256 MiB (report-max-size's ceiling) bounds the read. */
static int read_file(const char *tool, const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	if (!f) {
		fprintf(stderr, "labhook %s: cannot open %s\n", tool, path);
		return -1;
	}
	for (;;) {
		if (UTIL_GROW(buf, cap, n + 65536, 65536) || cap > 256u * 1024 * 1024) {
			fprintf(stderr, "labhook %s: %s is too large\n", tool, path);
			free(buf);
			fclose(f);
			return -1;
		}
		size_t k = fread(buf + n, 1, cap - n, f);
		n += k;
		if (k == 0)
			break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		fprintf(stderr, "labhook %s: cannot read %s\n", tool, path);
		free(buf);
		return -1;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* The body field a flag spec names, without its type mark. */
static const char *flag_field(const char *spec)
{
	const char *f = strchr(spec, '=') + 1;
	return *f == '#' || *f == '@' ? f + 1 : f;
}

/* A flag's value as its spec types it (see struct cmd). */
static json_t *flag_value(const char *spec, const char *v)
{
	char mark = strchr(spec, '=')[1];
	if (mark == '#') {
		json_t *n = json_loads(v, JSON_DECODE_ANY, NULL);
		if (json_is_number(n))
			return n;
		json_decref(n);
	} else if (mark == '@') {
		return cli_json_list(v);
	}
	return json_string(v);
}

/* The request body as JSON text in *out (owned, free(); NULL when the command sends none),
 * or a document's bytes (*len set, *pdf 1); -1 after a message when --json or --file is
 * not JSON or cannot be read. */
static int cmd_body(const char *tool, const struct cmd *c, const struct args *a, char **out,
                    size_t *len, int *pdf)
{
	json_t *body = NULL;
	*out = NULL;
	*pdf = 0;
	if (c->json_body == BODY_PDF) {
		if (!a->json_file)
			return 0;
		*pdf = 1;
		return read_file(tool, a->json_file, out, len);
	}
	if (c->json_body) {
		json_error_t je;
		body = a->json_file ? json_load_file(a->json_file, JSON_REJECT_DUPLICATES, &je)
		                    : json_loads(a->json_text, JSON_REJECT_DUPLICATES, &je);
		if (!body) {
			fprintf(stderr, "labhook %s: the body is not JSON: %s (line %d)\n", tool,
			        je.text, je.line);
			return -1;
		}
	} else if (c->flags[0] || c->valfield) {
		body = json_object();
		for (int k = 0; k < 3 && c->flags[k]; k++)
			if (a->flagv[k])
				json_object_set_new(body, flag_field(c->flags[k]),
				                    flag_value(c->flags[k], a->flagv[k]));
		if (c->valfield)
			json_object_set_new(body, c->valfield, json_string(a->pos[c->positional]));
	}
	if (body)
		*out = json_dumps(body, JSON_COMPACT);
	*len = *out ? strlen(*out) : 0;
	json_decref(body);
	return 0;
}

/* The URL: the service's base, then the path with each "%s" filled with the next positional
 * argument, URL-escaped. */
static void cmd_url(const char *base, const struct cmd *c, const struct args *a, char *url,
                    size_t cap)
{
	char path[1024];
	size_t o = 0;
	int used = 0;
	for (const char *p = c->path; *p && o + 1 < sizeof path;) {
		if (p[0] == '%' && p[1] == 's' && used < c->positional) {
			char *esc = curl_easy_escape(NULL, a->pos[used++], 0);
			o += (size_t)snprintf(path + o, sizeof path - o, "%s", esc ? esc : "");
			curl_free(esc);
			p += 2;
		} else {
			path[o++] = *p++;
		}
	}
	path[o < sizeof path ? o : sizeof path - 1] = '\0';
	snprintf(url, cap, "%s%s", base, path);
}

/* Sends the request and prints the answer (pretty JSON when it is JSON): on stdout for a
 * 2xx, else on stderr. Returns the exit code (cli_http.h). */
static int cmd_send(const char *tool, const char *method, const char *url, const char *key,
                    const char *body_text, size_t body_len, int pdf)
{
	struct cli_resp r;
	int rc = cli_http(tool, method, url, key, pdf ? "application/pdf" : "application/json",
	                  body_text, body_len, NULL, &r);
	if (rc != CLI_OK)
		return rc;
	char *pretty = r.json ? json_dumps(r.json, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
	fprintf(r.status >= 200 && r.status < 300 ? stdout : stderr, "%s\n",
	        pretty ? pretty : (r.body ? r.body : ""));
	free(pretty);
	rc = r.status >= 200 && r.status < 300 ? CLI_OK : CLI_EAPI;
	cli_resp_free(&r);
	return rc;
}

int admin_cli_main(const char *tool, int argc, char **argv, char **env)
{
	struct config cfg;
	const char *rest[32], *words[32], *base = NULL;
	size_t nrest = 0, nw = 0, first = 0;
	char err[512], url[2200];
	struct cli_lab l;
	struct args a = {{NULL}, 0, {NULL}, NULL, NULL};
	const struct cmd *c;
	char *body_text = NULL;
	size_t body_len = 0;
	int pdf = 0;

	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			admin_usage(stdout, tool);
			return 0;
		}
	if (config_load(&cfg, argc, argv, env, rest, 32, &nrest, err, sizeof err) != 0) {
		fprintf(stderr, "labhook %s: %s\n", tool, err);
		return 2;
	}
	/* --url may stand anywhere; the first two other words name the command. */
	for (size_t i = 0; i < nrest; i++) {
		if (!strcmp(rest[i], "--url") && i + 1 < nrest)
			base = rest[++i];
		else if (!strncmp(rest[i], "--url=", 6))
			base = rest[i] + 6;
		else
			words[nw++] = rest[i];
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!strcmp(tool, "lab")) {
		int lrc = cli_lab_main(&cfg, base, words, nw);
		if (lrc >= 0)
			return lrc;
	}
	if (!(c = cmd_find(tool, words, nw, &first)) ||
	    cmd_args(tool, c, words + first, nw - first, &a)) {
		admin_usage(stderr, tool);
		return 2;
	}
	int rc = cli_lab_open(tool, &cfg, base, &l);
	if (rc != CLI_OK)
		return rc;
	if (cmd_body(tool, c, &a, &body_text, &body_len, &pdf)) {
		cli_lab_close(&l);
		return CLI_EAPI;
	}
	cmd_url(l.base, c, &a, url, sizeof url);
	rc = cmd_send(tool, c->method, url, l.key, body_text, body_len, pdf);
	cli_lab_close(&l);
	free(body_text);
	return rc;
}
