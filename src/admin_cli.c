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

#include "config.h"

struct cmd {
	const char *group, *verb;
	const char *method;
	const char *path; /* "%s" stands for the account id */
	int positional;   /* 1: takes CLIENT_ID; 2: CLIENT_ID and a value for `valfield` */
	const char *valfield;
	const char *flags[3]; /* --flag VALUE -> body field of the same name */
	const char *help;
};

static const struct cmd cmds[] = {
	{"accounts", "create", "POST", "/admin/accounts", 0, NULL, {"name", "mode", NULL},
	 "accounts create --name NAME [--mode catch-all|party-scoped]"},
	{"accounts", "list", "GET", "/admin/accounts", 0, NULL, {NULL}, "accounts list"},
	{"accounts", "get", "GET", "/admin/accounts/%s", 1, NULL, {NULL}, "accounts get CLIENT_ID"},
	{"accounts", "set-mode", "PATCH", "/admin/accounts/%s", 2, "mode", {NULL},
	 "accounts set-mode CLIENT_ID catch-all|party-scoped"},
	{"accounts", "rotate-secret", "POST", "/admin/accounts/%s/secret/rotate", 1, NULL, {NULL},
	 "accounts rotate-secret CLIENT_ID"},
	{"labs", "create", "POST", "/admin/accounts/%s/labs", 1, NULL, {"name", NULL},
	 "labs create CLIENT_ID --name NAME"},
	{"labs", "list", "GET", "/admin/accounts/%s/labs", 1, NULL, {NULL}, "labs list CLIENT_ID"},
	{"parties", "create", "POST", "/admin/accounts/%s/parties", 1, NULL, {"kind", "name", NULL},
	 "parties create CLIENT_ID --kind corporateUser|organization --name NAME"},
	{"parties", "list", "GET", "/admin/accounts/%s/parties", 1, NULL, {NULL},
	 "parties list CLIENT_ID"},
};
#define N_CMDS (sizeof cmds / sizeof cmds[0])

static void admin_usage(FILE *f)
{
	fprintf(f, "Usage: labhook admin [--data-dir DIR] [--listen HOST:PORT] [--url URL] COMMAND\n"
		   "Calls the admin API of a running labhook with the key in DIR/admin.key.\n"
		   "--url defaults to http://<listen>. Commands:\n");
	for (size_t i = 0; i < N_CMDS; i++)
		fprintf(f, "  %s\n", cmds[i].help);
}

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t len = size * nmemb;
	if (b->n + len > 16 * 1024 * 1024)
		return 0; /* an admin answer is small; refuse anything absurd */
	char *np = realloc(b->p, b->n + len + 1);
	if (!np)
		return 0;
	memcpy(np + b->n, ptr, len);
	b->p = np;
	b->n += len;
	b->p[b->n] = '\0';
	return len;
}

static int read_key(const char *data_dir, char *out, size_t cap)
{
	char path[CFG_PATH_CAP + 16];
	snprintf(path, sizeof path, "%s/admin.key", data_dir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(out, (int)cap, f)) {
		fprintf(stderr, "labhook admin: cannot read %s (has `labhook serve` run with this "
				"--data-dir?)\n",
			path);
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	out[strcspn(out, "\r\n")] = '\0';
	return 0;
}

int admin_cli_main(int argc, char **argv, char **env)
{
	struct config cfg;
	const char *rest[32];
	size_t nrest = 0;
	char err[512], key[160], url[2048], auth[200];
	const char *base = NULL, *pos[2] = {NULL, NULL};
	const char *flagv[3] = {NULL, NULL, NULL};
	const struct cmd *c = NULL;
	struct buf resp = {NULL, 0};
	json_t *body = NULL;
	char *body_text = NULL;
	CURL *h = NULL;
	struct curl_slist *hdrs = NULL;
	int rc = 1, npos = 0;

	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			admin_usage(stdout);
			return 0;
		}
	if (config_load(&cfg, argc, argv, env, rest, 32, &nrest, err, sizeof err) != 0) {
		fprintf(stderr, "labhook admin: %s\n", err);
		return 2;
	}
	/* --url may stand anywhere; the first two other words name the command. */
	const char *words[32];
	size_t nw = 0;
	for (size_t i = 0; i < nrest; i++) {
		if (!strcmp(rest[i], "--url") && i + 1 < nrest)
			base = rest[++i];
		else if (!strncmp(rest[i], "--url=", 6))
			base = rest[i] + 6;
		else
			words[nw++] = rest[i];
	}
	if (nw < 2)
		goto usage;
	for (size_t i = 0; i < N_CMDS; i++)
		if (!strcmp(words[0], cmds[i].group) && !strcmp(words[1], cmds[i].verb))
			c = &cmds[i];
	if (!c)
		goto usage;
	for (size_t i = 2; i < nw; i++) {
		const char *a = words[i];
		int matched = 0;
		for (int k = 0; k < 3 && c->flags[k]; k++) {
			if (!strncmp(a, "--", 2) && !strcmp(a + 2, c->flags[k]) && i + 1 < nw) {
				flagv[k] = words[++i];
				matched = 1;
			}
		}
		if (matched)
			continue;
		if (!strncmp(a, "--", 2) || npos >= 2) {
			fprintf(stderr, "labhook admin: unexpected argument '%s'\n", a);
			goto usage;
		}
		pos[npos++] = a;
	}
	if (npos != c->positional)
		goto usage;
	if (read_key(cfg.data_dir, key, sizeof key) != 0)
		return 1;
	if (c->flags[0] || c->valfield) {
		body = json_object();
		for (int k = 0; k < 3 && c->flags[k]; k++)
			if (flagv[k])
				json_object_set_new(body, c->flags[k], json_string(flagv[k]));
		if (c->valfield)
			json_object_set_new(body, c->valfield, json_string(pos[1]));
		body_text = json_dumps(body, JSON_COMPACT);
	}
	char path[512];
	const char *mark = strstr(c->path, "%s");
	if (mark) {
		char *esc = curl_easy_escape(NULL, pos[0], 0);
		snprintf(path, sizeof path, "%.*s%s%s", (int)(mark - c->path), c->path,
			 esc ? esc : "", mark + 2);
		curl_free(esc);
	} else {
		snprintf(path, sizeof path, "%s", c->path);
	}
	if (base)
		snprintf(url, sizeof url, "%s%s", base, path);
	else
		snprintf(url, sizeof url, "http://%s%s%s:%d%s",
			 strchr(cfg.listen_host, ':') ? "[" : "", cfg.listen_host,
			 strchr(cfg.listen_host, ':') ? "]" : "", cfg.listen_port, path);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	OPENSSL_cleanse(key, sizeof key);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	h = curl_easy_init();
	if (!h)
		goto out;
	hdrs = curl_slist_append(hdrs, auth);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (body_text)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_text);
	CURLcode cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		fprintf(stderr, "labhook admin: %s: %s (is `labhook serve` running? try --url)\n",
			url, curl_easy_strerror(cc));
		goto out;
	}
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	json_t *j = resp.p ? json_loads(resp.p, 0, NULL) : NULL;
	char *pretty = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	fprintf(status >= 200 && status < 300 ? stdout : stderr, "%s\n",
		pretty ? pretty : (resp.p ? resp.p : ""));
	free(pretty);
	json_decref(j);
	rc = status >= 200 && status < 300 ? 0 : 1;
out:
	OPENSSL_cleanse(auth, sizeof auth);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	free(resp.p);
	free(body_text);
	json_decref(body);
	return rc;
usage:
	admin_usage(stderr);
	return 2;
}
