/* cli_http.c: see cli_http.h. */
#define _POSIX_C_SOURCE 200809L
#include "cli_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "demo.h"
#include "util.h"

#define CLI_RESP_CAP                                                                               \
	(16 * 1024 * 1024) /* a command's answers are small: refuse anything absurd                \
	                    */

void cli_resp_free(struct cli_resp *r)
{
	if (!r)
		return;
	json_decref(r->json);
	free(r->body);
	memset(r, 0, sizeof *r);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct cli_resp *b = ud;
	size_t len = size * nmemb;
	if (b->len + len > CLI_RESP_CAP)
		return 0;
	char *np = realloc(b->body, b->len + len + 1);
	if (!np)
		return 0;
	memcpy(np + b->len, ptr, len);
	b->body = np;
	b->len += len;
	b->body[b->len] = '\0';
	return len;
}

int cli_http(const char *tool, const char *method, const char *url, const char *bearer,
             const char *ctype, const char *body, size_t len, const char *const *extra_headers,
             struct cli_resp *out)
{
	struct cli_resp r = {0, NULL, 0, NULL};
	struct curl_slist *hdrs = NULL;
	char auth[4200] = "", ct[160];
	int rc = CLI_EREACH;
	CURL *h = curl_easy_init();
	if (!h) {
		fprintf(stderr, "labhook %s: cannot start libcurl\n", tool);
		return CLI_EAPI;
	}
	if (bearer) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", bearer);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (body) {
		snprintf(ct, sizeof ct, "Content-Type: %s", ctype ? ctype : "application/json");
		hdrs = curl_slist_append(hdrs, ct);
	}
	for (size_t i = 0; extra_headers && extra_headers[i]; i++)
		hdrs = curl_slist_append(hdrs, extra_headers[i]);
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Keys and tokens go straight to the service, never to a proxy from the environment. */
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	CURLcode cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		fprintf(stderr, "labhook %s: %s: %s (is `labhook serve` running? try --url)\n",
		        tool, url, curl_easy_strerror(cc));
		free(r.body);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	r.json = r.body ? json_loads(r.body, 0, NULL) : NULL;
	*out = r;
	rc = CLI_OK;
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	OPENSSL_cleanse(auth, sizeof auth);
	return rc;
}

int cli_http_json(const char *tool, const char *method, const char *url, const char *bearer,
                  json_t *body, struct cli_resp *out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int rc =
	    cli_http(tool, method, url, bearer, NULL, text, text ? strlen(text) : 0, NULL, out);
	if (text) {
		OPENSSL_cleanse(text, strlen(text)); /* a login body holds the client secret */
		free(text);
	}
	return rc;
}

void cli_base_url(const struct config *cfg, const char *url_flag, int use_demo, char *out,
                  size_t cap)
{
	struct demo_state d;
	if (url_flag)
		snprintf(out, cap, "%s", url_flag);
	else if (use_demo && demo_state_read(cfg->data_dir, &d) == 0)
		snprintf(out, cap, "%s", d.url);
	else
		snprintf(out, cap, "http://%s%s%s:%d", strchr(cfg->listen_host, ':') ? "[" : "",
		         cfg->listen_host, strchr(cfg->listen_host, ':') ? "]" : "",
		         cfg->listen_port);
	if (!url_flag && use_demo)
		demo_state_clear(&d);
	size_t n = strlen(out);
	while (n > 0 && out[n - 1] == '/')
		out[--n] = '\0';
}

int cli_api_error(const char *tool, const struct cli_resp *r)
{
	json_t *err = json_object_get(r->json, "error");
	const char *code = json_string_value(json_object_get(err, "code"));
	const char *msg = json_string_value(json_object_get(err, "message"));
	const char *field = json_string_value(json_object_get(err, "field"));
	if (code && msg)
		fprintf(stderr, "labhook %s: %ld %s%s%s%s: %s\n", tool, r->status, code,
		        field ? " (field " : "", field ? field : "", field ? ")" : "", msg);
	else
		fprintf(stderr, "labhook %s: the service answered %ld %.300s\n", tool, r->status,
		        r->body ? r->body : "");
	return CLI_EAPI;
}

int cli_words_read(const char *tool, const char *const *w, size_t n, const char *switches,
                   struct cli_words *out)
{
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(w[i], "--", 2) != 0 || !w[i][2]) {
			if (out->npos == CLI_WORDS_CAP)
				goto many;
			out->pos[out->npos++] = w[i];
			continue;
		}
		if (out->nflag == CLI_WORDS_CAP)
			goto many;
		const char *name = w[i] + 2, *eq = strchr(name, '=');
		char probe[64];
		snprintf(probe, sizeof probe, ",%.*s,",
		         (int)(eq ? (size_t)(eq - name) : strlen(name)), name);
		char list[512];
		snprintf(list, sizeof list, ",%s,", switches ? switches : "");
		out->flag[out->nflag].name = name;
		if (eq) {
			out->flag[out->nflag].value = eq + 1;
		} else if (strstr(list, probe)) {
			out->flag[out->nflag].value = "";
		} else if (i + 1 < n) {
			out->flag[out->nflag].value = w[++i];
		} else {
			fprintf(stderr, "labhook %s: %s needs a value\n", tool, w[i]);
			return -1;
		}
		out->nflag++;
	}
	return 0;
many:
	fprintf(stderr, "labhook %s: too many arguments\n", tool);
	return -1;
}

static int flag_named(const char *flag, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(flag, name, n) && (flag[n] == '\0' || flag[n] == '=');
}

const char *cli_flag(struct cli_words *w, const char *name)
{
	const char *v = NULL;
	for (size_t i = 0; i < w->nflag; i++)
		if (flag_named(w->flag[i].name, name)) {
			w->flag[i].used = 1;
			v = w->flag[i].value;
		}
	return v;
}

size_t cli_flag_all(struct cli_words *w, const char *name, const char **out, size_t cap)
{
	size_t k = 0;
	for (size_t i = 0; i < w->nflag; i++)
		if (flag_named(w->flag[i].name, name)) {
			w->flag[i].used = 1;
			if (k < cap)
				out[k++] = w->flag[i].value;
		}
	return k;
}

int cli_words_check(const char *tool, const struct cli_words *w)
{
	for (size_t i = 0; i < w->nflag; i++)
		if (!w->flag[i].used) {
			fprintf(stderr, "labhook %s: unknown option --%s\n", tool, w->flag[i].name);
			return -1;
		}
	return 0;
}

int cli_start(const char *tool, int argc, char **argv, char **env, const char *switches,
              void (*usage)(FILE *), struct config *cfg, struct cli_words *w)
{
	const char *rest[CLI_WORDS_CAP];
	size_t nrest = 0;
	char err[512];
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return CLI_OK;
		}
	if (config_load(cfg, argc, argv, env, rest, CLI_WORDS_CAP, &nrest, err, sizeof err)) {
		fprintf(stderr, "labhook %s: %s\n", tool, err);
		return CLI_EUSAGE;
	}
	return cli_words_read(tool, rest, nrest, switches, w) ? CLI_EUSAGE : -1;
}

json_t *cli_json_list(const char *csv)
{
	json_t *arr = json_array();
	for (const char *p = csv; arr && *p;) {
		size_t n = strcspn(p, ",");
		if (n)
			json_array_append_new(arr, json_stringn(p, n));
		p += n + (p[n] == ',');
	}
	return arr;
}
