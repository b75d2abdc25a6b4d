/* cli_client.c: see cli_client.h. Each command is a row: words, method, path (each "%s"
 * takes the next positional argument, URL-escaped), a body builder from flags, and a printer
 * for the human-readable answer (--json prints the API's JSON instead).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "util.h"

/* ---- the session ---- */

static int creds_save(const struct cli_session *s)
{
	char tmp[sizeof s->path + 8], dir[sizeof s->path];
	if (!s->path[0])
		return CLI_OK;
	/* the directory: $XDG_CONFIG_HOME/labhook, made 0700 when missing */
	snprintf(dir, sizeof dir, "%s", s->path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		for (char *p = dir + 1;; p++) { /* mkdir -p, each new one 0700 */
			char c = *p;
			if (c != '/' && c != '\0')
				continue;
			*p = '\0';
			int bad = mkdir(dir, 0700) != 0 && errno != EEXIST;
			*p = c;
			if (bad) {
				fprintf(stderr, "labhook %s: cannot make %s: %s\n", s->tool, dir,
				        strerror(errno));
				return CLI_EAPI;
			}
			if (!c)
				break;
		}
	}
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "url", s->base, "clientID", s->client_id,
	                      "authToken", s->access, "refreshToken", s->refresh, "expiresAt",
	                      (json_int_t)s->expires_at);
	char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	json_decref(j);
	snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
	int fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
	size_t len = text ? strlen(text) : 0;
	int ok = fd >= 0 && fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, s->path) == 0;
	if (text) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	if (!ok) {
		fprintf(stderr, "labhook %s: cannot write %s: %s\n", s->tool, s->path,
		        strerror(errno));
		unlink(tmp);
		return CLI_EAPI;
	}
	return CLI_OK;
}

/* Reads the credentials file into s; CLI_ELOGIN after a message when there is none. The
 * URL saved at login is used unless the command line gave one (url_given). */
int cli_session_load(struct cli_session *s, int url_given)
{
	json_error_t je;
	json_t *j = json_load_file(s->path, 0, &je);
	const char *url = json_string_value(json_object_get(j, "url"));
	const char *id = json_string_value(json_object_get(j, "clientID"));
	const char *at = json_string_value(json_object_get(j, "authToken"));
	const char *rt = json_string_value(json_object_get(j, "refreshToken"));
	int ok = id && at && rt && strlen(id) < sizeof s->client_id &&
	         strlen(at) < sizeof s->access && strlen(rt) < sizeof s->refresh;
	if (ok) {
		snprintf(s->client_id, sizeof s->client_id, "%s", id);
		snprintf(s->access, sizeof s->access, "%s", at);
		snprintf(s->refresh, sizeof s->refresh, "%s", rt);
		s->expires_at = json_integer_value(json_object_get(j, "expiresAt"));
		if (url && !url_given && strlen(url) < sizeof s->base)
			snprintf(s->base, sizeof s->base, "%s", url);
	}
	json_decref(j);
	if (!ok) {
		fprintf(stderr, "labhook %s: not logged in (no usable %s): labhook client login\n",
		        s->tool, s->path);
		return CLI_ELOGIN;
	}
	return CLI_OK;
}

/* Takes the tokens of a token or refresh answer. */
static int take_tokens(struct cli_session *s, const struct cli_resp *r)
{
	const char *at = json_string_value(json_object_get(r->json, "authToken"));
	const char *rt = json_string_value(json_object_get(r->json, "refreshToken"));
	json_int_t ttl = json_integer_value(json_object_get(r->json, "expiresIn"));
	if (!at || !rt || strlen(at) >= sizeof s->access || strlen(rt) >= sizeof s->refresh) {
		fprintf(stderr, "labhook %s: the service's token answer is not as expected\n",
		        s->tool);
		return CLI_EAPI;
	}
	snprintf(s->access, sizeof s->access, "%s", at);
	snprintf(s->refresh, sizeof s->refresh, "%s", rt);
	s->expires_at = util_now() + (ttl > 0 ? ttl : 600);
	return creds_save(s);
}

int cli_session_login(struct cli_session *s, const char *client_id, const char *secret,
                      int keep_secret)
{
	char url[1200];
	struct cli_resp r;
	snprintf(url, sizeof url, "%s/client/auth/token", s->base);
	json_t *body = json_pack("{s:s, s:s}", "clientID", client_id, "clientSecret", secret);
	int rc = cli_http_json(s->tool, "POST", url, NULL, body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	if (r.status != 200) {
		rc = cli_api_error(s->tool, &r);
		cli_resp_free(&r);
		return rc;
	}
	snprintf(s->client_id, sizeof s->client_id, "%s", client_id);
	if (keep_secret)
		snprintf(s->secret, sizeof s->secret, "%s", secret);
	rc = take_tokens(s, &r);
	cli_resp_free(&r);
	return rc;
}

/* New tokens from the refresh token (or, for listen, from the secret it holds). */
static int session_refresh(struct cli_session *s)
{
	char url[1200];
	struct cli_resp r;
	snprintf(url, sizeof url, "%s/client/auth/token/refresh", s->base);
	json_t *body =
	    json_pack("{s:s, s:s}", "clientID", s->client_id, "refreshToken", s->refresh);
	int rc = cli_http_json(s->tool, "POST", url, NULL, body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	if (r.status == 200) {
		rc = take_tokens(s, &r);
	} else if (r.status == 401 && s->secret[0]) {
		char id[ID_CAP], sec[AUTH_SECRET_CAP];
		snprintf(id, sizeof id, "%s", s->client_id);
		snprintf(sec, sizeof sec, "%s", s->secret);
		rc = cli_session_login(s, id, sec, 1);
		OPENSSL_cleanse(sec, sizeof sec);
	} else if (r.status == 401) {
		fprintf(stderr,
		        "labhook %s: the saved login no longer works (its refresh token expired or"
		        " was revoked): log in again: labhook client login\n",
		        s->tool);
		rc = CLI_ELOGIN;
	} else {
		rc = cli_api_error(s->tool, &r);
	}
	cli_resp_free(&r);
	return rc;
}

int cli_session_call(struct cli_session *s, const char *method, const char *path, json_t *body,
                     struct cli_resp *out)
{
	char url[2200];
	int rc;
	snprintf(url, sizeof url, "%s%s", s->base, path);
	/* A token about to expire is renewed first: no call is sent to be refused. */
	if (s->expires_at <= util_now() + 5 && (rc = session_refresh(s)) != CLI_OK)
		return rc;
	for (int attempt = 0;; attempt++) {
		if ((rc = cli_http_json(s->tool, method, url, s->access, body, out)) != CLI_OK)
			return rc;
		const char *code =
		    json_string_value(json_object_get(json_object_get(out->json, "error"), "code"));
		if (attempt > 0 || out->status != 401 || !code || strcmp(code, "invalid_token"))
			return CLI_OK;
		cli_resp_free(out);
		if ((rc = session_refresh(s)) != CLI_OK)
			return rc;
	}
}

void cli_session_clear(struct cli_session *s)
{
	OPENSSL_cleanse(s, sizeof *s);
}

/* ---- printing ---- */

static const char *jstr(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : "";
}

/* A list of strings as "a,b,c" into out. */
static void join(json_t *arr, char *out, size_t cap)
{
	size_t i, o = 0;
	json_t *v;
	out[0] = '\0';
	json_array_foreach(arr, i, v)
	{
		int n = snprintf(out + o, cap - o, "%s%s", i ? "," : "", json_string_value(v));
		if (n < 0 || (size_t)n >= cap - o)
			break;
		o += (size_t)n;
	}
}

static void print_sub_row(json_t *sub)
{
	char ev[512];
	join(json_object_get(sub, "events"), ev, sizeof ev);
	printf("%-30s  %-8s  %-30s  %s  %s\n", jstr(sub, "id"), jstr(sub, "status"),
	       jstr(sub, "labID"), jstr(sub, "endpoint"), ev);
}

static void print_sub(json_t *sub)
{
	char ev[512];
	join(json_object_get(sub, "events"), ev, sizeof ev);
	printf("id:           %s\nstatus:       %s\nlab:          %s\nendpoint:     %s\n"
	       "events:       %s\nauth token:   %s\ncreated:      %s\nupdated:      %s\n",
	       jstr(sub, "id"), jstr(sub, "status"), jstr(sub, "labID"), jstr(sub, "endpoint"), ev,
	       json_is_true(json_object_get(sub, "hasAuthToken")) ? "set" : "none",
	       jstr(sub, "createdAt"), jstr(sub, "updatedAt"));
	if (json_object_get(sub, "corporateUser"))
		printf("corporateUser: %s\n", jstr(sub, "corporateUser"));
	if (json_object_get(sub, "organization"))
		printf("organization: %s\n", jstr(sub, "organization"));
}

static void out_labs(json_t *r)
{
	size_t i;
	json_t *l;
	printf("%-30s  %s\n", "LAB ID", "NAME");
	json_array_foreach(json_object_get(r, "labs"), i, l)
	{
		printf("%-30s  %s\n", jstr(l, "labID"), jstr(l, "name"));
	}
}

static void out_sub(json_t *r)
{
	print_sub(json_object_get(r, "subscription"));
	if (json_object_get(r, "signingSecret"))
		printf("signing secret: shown by `labhook client secret get %s`\n",
		       jstr(json_object_get(r, "subscription"), "id"));
}

static void out_subs(json_t *r)
{
	size_t i;
	json_t *s;
	printf("%-30s  %-8s  %-30s  %s  %s\n", "ID", "STATUS", "LAB", "ENDPOINT", "EVENTS");
	json_array_foreach(json_object_get(r, "subscriptions"), i, s)
	{
		print_sub_row(s);
	}
	if (json_string_value(json_object_get(r, "nextCursor")))
		printf("(more: --cursor %s)\n", jstr(r, "nextCursor"));
}

static void out_deleted(json_t *r)
{
	printf("deleted %s\n", jstr(r, "id"));
}

static void out_secret(json_t *r)
{
	printf("%s\n", jstr(r, "signingSecret"));
	if (json_object_get(r, "previousSecretExpiresAt"))
		fprintf(stderr, "(the previous secret keeps signing until %s)\n",
		        jstr(r, "previousSecretExpiresAt"));
}

static void out_deliveries(json_t *r)
{
	size_t i, k;
	json_t *d, *a;
	printf("%-30s  %-9s  %-16s  %-8s  %s\n", "DELIVERY", "STATUS", "EVENT", "ATTEMPTS",
	       "CREATED");
	json_array_foreach(json_object_get(r, "deliveries"), i, d)
	{
		printf("%-30s  %-9s  %-16s  %-8lld  %s\n", jstr(d, "id"), jstr(d, "status"),
		       jstr(d, "eventType"),
		       (long long)json_integer_value(json_object_get(d, "attemptCount")),
		       jstr(d, "createdAt"));
		json_array_foreach(json_object_get(d, "attempts"), k, a)
		{
			json_t *sc = json_object_get(a, "statusCode");
			char what[64];
			if (sc)
				snprintf(what, sizeof what, "HTTP %lld",
				         (long long)json_integer_value(sc));
			else
				snprintf(what, sizeof what, "%s", jstr(a, "error"));
			printf("    attempt %lld  %s  %lldms  %s\n",
			       (long long)json_integer_value(json_object_get(a, "attempt")),
			       jstr(a, "at"),
			       (long long)json_integer_value(json_object_get(a, "durationMs")),
			       what);
		}
		if (json_object_get(d, "nextAttemptAt"))
			printf("    next attempt %s\n", jstr(d, "nextAttemptAt"));
	}
	if (json_string_value(json_object_get(r, "nextCursor")))
		printf("(more: --cursor %s)\n", jstr(r, "nextCursor"));
}

static void out_retry(json_t *r)
{
	json_t *d = json_object_get(r, "delivery");
	printf("delivery %s is %s\n", jstr(d, "id"), jstr(d, "status"));
}

static void out_recover(json_t *r)
{
	printf("%lld failed deliveries queued again\n",
	       (long long)json_integer_value(json_object_get(r, "queued")));
}

static void out_test(json_t *r)
{
	printf("test event %s queued\n", jstr(r, "eventID"));
}

/* ---- the commands ---- */

/* Builds the body (or the query, appended to path) from the flags; -1 after a message. */
typedef int (*body_fn)(struct cli_words *w, json_t **body, char *query, size_t cap);

static void set_str(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

static int b_subscribe(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	(void)query;
	(void)cap;
	const char *ev = cli_flag(w, "events");
	json_t *b = json_pack("{s:s, s:o}", "protocol", "https", "events",
	                      cli_json_list(ev ? ev
	                                       : "bill.created,bill.completed,bill.deleted,"
	                                         "report.completed,lead.created,booking.created"));
	set_str(b, "labID", cli_flag(w, "lab"));
	set_str(b, "endpoint", cli_flag(w, "endpoint"));
	set_str(b, "authToken", cli_flag(w, "auth-token"));
	set_str(b, "corporateUser", cli_flag(w, "corporate-user"));
	set_str(b, "organization", cli_flag(w, "organization"));
	*body = b;
	return 0;
}

static int b_patch(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	(void)query;
	(void)cap;
	json_t *b = json_object();
	const char *ev = cli_flag(w, "events");
	if (ev)
		json_object_set_new(b, "events", cli_json_list(ev));
	set_str(b, "endpoint", cli_flag(w, "endpoint"));
	set_str(b, "authToken", cli_flag(w, "auth-token"));
	set_str(b, "status", cli_flag(w, "status"));
	if (cli_flag(w, "clear-auth-token"))
		json_object_set_new(b, "authToken", json_null());
	*body = b;
	return 0;
}

static int b_pause(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	(void)w;
	(void)query;
	(void)cap;
	*body = json_pack("{s:s}", "status", "paused");
	return 0;
}

static int b_resume(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	(void)w;
	(void)query;
	(void)cap;
	*body = json_pack("{s:s}", "status", "active");
	return 0;
}

static int b_recover(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	(void)query;
	(void)cap;
	const char *since = cli_flag(w, "since");
	if (!since) {
		fprintf(stderr, "labhook client: recover needs --since TIME (RFC 3339 or Unix"
		                " seconds)\n");
		return -1;
	}
	*body = json_pack("{s:s}", "since", since);
	return 0;
}

/* Flags that become the query string, URL-escaped. */
static int query_of(struct cli_words *w, const char *const *names, size_t n, char *query,
                    size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		const char *v = cli_flag(w, names[i]);
		if (!v)
			continue;
		char *esc = curl_easy_escape(NULL, v, 0);
		int k = snprintf(query + o, cap - o, "%c%s=%s", o ? '&' : '?',
		                 !strcmp(names[i], "lab") ? "labID" : names[i], esc ? esc : "");
		curl_free(esc);
		if (k < 0 || (size_t)k >= cap - o)
			return -1;
		o += (size_t)k;
	}
	return 0;
}

static int b_subs_query(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	static const char *const names[] = {"lab", "status", "limit", "cursor"};
	*body = NULL;
	return query_of(w, names, COUNTOF(names), query, cap);
}

static int b_dlv_query(struct cli_words *w, json_t **body, char *query, size_t cap)
{
	static const char *const names[] = {"status", "since", "limit", "cursor"};
	*body = NULL;
	return query_of(w, names, COUNTOF(names), query, cap);
}

struct client_cmd {
	const char *group, *verb; /* verb NULL: a one-word command */
	const char *method, *path;
	int positional;
	body_fn body;
	void (*out)(json_t *);
	const char *help;
};

/* clang-format off */
static const struct client_cmd ccmds[] = {
    {"labs", NULL, "GET", "/client/labs", 0, NULL, out_labs,
     "labs"},
    {"subscribe", NULL, "POST", "/client/events/subscribe", 0, b_subscribe, out_sub,
     "subscribe --lab LAB_ID --endpoint https://... [--events a,b (default: all six)]\n"
     "                 [--auth-token T] [--corporate-user CU | --organization ORG]"},
    {"subscriptions", "list", "GET", "/client/events/subscriptions", 0, b_subs_query, out_subs,
     "subscriptions list [--lab LAB_ID] [--status active|paused|disabled] [--limit N] [--cursor C]"},
    {"subscriptions", "get", "GET", "/client/events/subscriptions/%s", 1, NULL, out_sub,
     "subscriptions get SUB_ID"},
    {"subscriptions", "patch", "PATCH", "/client/events/subscriptions/%s", 1, b_patch, out_sub,
     "subscriptions patch SUB_ID [--events a,b] [--endpoint URL] [--auth-token T | --clear-auth-token]\n"
     "                 [--status active|paused]"},
    {"subscriptions", "pause", "PATCH", "/client/events/subscriptions/%s", 1, b_pause, out_sub,
     "subscriptions pause SUB_ID"},
    {"subscriptions", "resume", "PATCH", "/client/events/subscriptions/%s", 1, b_resume, out_sub,
     "subscriptions resume SUB_ID"},
    {"subscriptions", "delete", "DELETE", "/client/events/subscriptions/%s", 1, NULL, out_deleted,
     "subscriptions delete SUB_ID"},
    {"secret", "get", "GET", "/client/events/subscriptions/%s/secret", 1, NULL, out_secret,
     "secret get SUB_ID              (prints the signing secret)"},
    {"secret", "rotate", "POST", "/client/events/subscriptions/%s/secret/rotate", 1, NULL, out_secret,
     "secret rotate SUB_ID           (prints the new signing secret)"},
    {"deliveries", "list", "GET", "/client/events/subscriptions/%s/deliveries", 1, b_dlv_query, out_deliveries,
     "deliveries list SUB_ID [--status pending|delivered|failed|cancelled] [--since T] [--limit N]"},
    {"retry", NULL, "POST", "/client/events/deliveries/%s/retry", 1, NULL, out_retry,
     "retry DELIVERY_ID"},
    {"recover", NULL, "POST", "/client/events/subscriptions/%s/recover", 1, b_recover, out_recover,
     "recover SUB_ID --since TIME"},
    {"test", NULL, "POST", "/client/events/subscriptions/%s/test", 1, NULL, out_test,
     "test SUB_ID                    (sends a webhook.test event)"},
};
/* clang-format on */

static void client_usage(FILE *f)
{
	fprintf(
	    f, "Usage: labhook client [--url URL] [--credentials FILE] [--json] COMMAND\n"
	       "The integrator's side of the API, with the login kept in FILE (mode 0600; default\n"
	       "$XDG_CONFIG_HOME/labhook/credentials.json). --url: the service (default: the one\n"
	       "saved at login, else the demo's in --data-dir, else http://<listen>).\n"
	       "--json prints the API's JSON answer. Commands:\n"
	       "  login [--client-id ID] [--client-secret SECRET|-]   (or LABHOOK_CLIENT_ID and\n"
	       "                 LABHOOK_CLIENT_SECRET; '-' reads the secret from stdin)\n"
	       "  logout\n");
	for (size_t i = 0; i < COUNTOF(ccmds); i++)
		fprintf(f, "  %s\n", ccmds[i].help);
	fprintf(f,
	        "Exit codes: 0 ok, 1 the service refused (its code and message on stderr),\n"
	        "2 usage, 3 the service cannot be reached, 4 not logged in or the login no longer\n"
	        "works (labhook client login).\n");
}

void cli_client_default_path(char **env, char *out, size_t cap)
{
	const char *xdg = NULL, *home = NULL;
	for (char **e = env; e && *e; e++) {
		if (!strncmp(*e, "XDG_CONFIG_HOME=", 16) && (*e)[16])
			xdg = *e + 16;
		else if (!strncmp(*e, "HOME=", 5) && (*e)[5])
			home = *e + 5;
	}
	if (xdg)
		snprintf(out, cap, "%s/labhook/credentials.json", xdg);
	else
		snprintf(out, cap, "%s/.config/labhook/credentials.json", home ? home : ".");
}

static const char *env_get(char **env, const char *name)
{
	size_t n = strlen(name);
	for (char **e = env; e && *e; e++)
		if (!strncmp(*e, name, n) && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

int cli_client_credentials(struct cli_words *w, char **env, const char **id,
                           char secret[AUTH_SECRET_CAP + 8])
{
	const char *i = cli_flag(w, "client-id"), *sec = cli_flag(w, "client-secret");
	if (!i)
		i = env_get(env, "LABHOOK_CLIENT_ID");
	if (!sec)
		sec = env_get(env, "LABHOOK_CLIENT_SECRET");
	if (!i || !i[0] || !sec || !sec[0])
		return -1;
	if (!strcmp(sec, "-")) {
		if (!fgets(secret, AUTH_SECRET_CAP + 8, stdin))
			secret[0] = '\0';
		secret[strcspn(secret, "\r\n")] = '\0';
	} else {
		snprintf(secret, AUTH_SECRET_CAP + 8, "%s", sec);
	}
	*id = i;
	return secret[0] ? 0 : -1;
}

static int do_login(struct cli_session *s, struct cli_words *w, char **env)
{
	const char *id = NULL;
	char line[AUTH_SECRET_CAP + 8] = "";
	int none = cli_client_credentials(w, env, &id, line);
	const char *sec = line;
	int rc = CLI_EUSAGE;
	if (cli_words_check("client", w))
		goto out;
	if (none) {
		fprintf(stderr, "labhook client: login needs --client-id and --client-secret (or"
		                " LABHOOK_CLIENT_ID and LABHOOK_CLIENT_SECRET)\n");
		goto out;
	}
	rc = cli_session_login(s, id, sec, 0);
out:
	OPENSSL_cleanse(line, sizeof line);
	if (rc == CLI_OK)
		printf("logged in as %s at %s (tokens kept in %s)\n", s->client_id, s->base,
		       s->path);
	return rc;
}

/* Fills the path's "%s" with the positional arguments, URL-escaped. */
static void fill_path(const char *fmt, const char *const *pos, char *out, size_t cap)
{
	size_t o = 0, used = 0;
	for (const char *p = fmt; *p && o + 1 < cap;) {
		if (p[0] == '%' && p[1] == 's') {
			char *esc = curl_easy_escape(NULL, pos[used++], 0);
			int k = snprintf(out + o, cap - o, "%s", esc ? esc : "");
			curl_free(esc);
			o = k < 0 ? o : (size_t)k + o >= cap ? cap - 1 : o + (size_t)k;
			p += 2;
		} else {
			out[o++] = *p++;
		}
	}
	out[o] = '\0';
}

static int run(struct cli_session *s, const struct client_cmd *c, struct cli_words *w,
               const char *const *pos, int json)
{
	json_t *body = NULL;
	char path[1024], query[1024] = "", full[2100];
	struct cli_resp r;
	if (c->body && c->body(w, &body, query, sizeof query))
		return CLI_EUSAGE;
	if (cli_words_check("client", w)) {
		json_decref(body);
		return CLI_EUSAGE;
	}
	fill_path(c->path, pos, path, sizeof path);
	snprintf(full, sizeof full, "%s%s", path, query);
	int rc = cli_session_call(s, c->method, full, body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	if (r.status < 200 || r.status > 299) {
		rc = cli_api_error("client", &r);
	} else if (json) {
		char *pretty =
		    r.json ? json_dumps(r.json, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
		printf("%s\n", pretty ? pretty : r.body ? r.body : "");
		free(pretty);
	} else {
		c->out(r.json);
	}
	cli_resp_free(&r);
	return rc;
}

int cli_client_main(int argc, char **argv, char **env)
{
	struct config cfg;
	struct cli_words w;
	struct cli_session s;
	int rc =
	    cli_start("client", argc, argv, env, "json,clear-auth-token", client_usage, &cfg, &w);
	if (rc >= 0)
		return rc;
	rc = CLI_EUSAGE;
	memset(&s, 0, sizeof s);
	s.tool = "client";
	const char *url = cli_flag(&w, "url"), *creds = cli_flag(&w, "credentials");
	int json = cli_flag(&w, "json") != NULL;
	if (creds)
		snprintf(s.path, sizeof s.path, "%s", creds);
	else
		cli_client_default_path(env, s.path, sizeof s.path);
	cli_base_url(&cfg, url, 1, s.base, sizeof s.base);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (w.npos == 1 && !strcmp(w.pos[0], "login")) {
		rc = do_login(&s, &w, env);
		goto out;
	}
	if (w.npos == 1 && !strcmp(w.pos[0], "logout")) {
		if (cli_words_check("client", &w))
			goto out;
		rc = unlink(s.path) == 0 || errno == ENOENT ? CLI_OK : CLI_EAPI;
		if (rc == CLI_OK)
			printf("logged out (removed %s)\n", s.path);
		else
			fprintf(stderr, "labhook client: cannot remove %s: %s\n", s.path,
			        strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < COUNTOF(ccmds); i++) {
		const struct client_cmd *c = &ccmds[i];
		size_t words = c->verb ? 2 : 1;
		if (w.npos < words || strcmp(w.pos[0], c->group) ||
		    (c->verb && strcmp(w.pos[1], c->verb)))
			continue;
		if (w.npos != words + (size_t)c->positional) {
			fprintf(stderr, "Usage: labhook client %s\n", c->help);
			goto out;
		}
		if ((rc = cli_session_load(&s, url != NULL)) == CLI_OK)
			rc = run(&s, c, &w, w.pos + words, json);
		goto out;
	}
	client_usage(stderr);
out:
	cli_session_clear(&s);
	curl_global_cleanup();
	return rc;
}
