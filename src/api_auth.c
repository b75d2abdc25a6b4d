/* api_auth.c: POST /client/auth/token and /client/auth/token/refresh (API.md 2).
 * Every failure looks the same to the caller (401, one message) and counts against the
 * address and the client id; past the limit the address (not the client id: it is no
 * secret) gets 429 with Retry-After (auth.h has the rules).
 */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include <openssl/crypto.h>

#include "api.h"
#include "log.h"

/* client_id NULL: only the address counts (refresh tokens are 256-bit secrets, nothing to
 * guess per client, and a client-id lock would let anyone lock an integrator out). */
static int limited(struct call *c, const char *client_id)
{
	int wait = auth_limited(c->app->auth, client_id, c->rq->ip);
	if (wait <= 0)
		return 0;
	c->rs->retry_after = wait;
	return api_fail(c, LH_ERATE, "rate_limited", NULL,
	                "too many failed attempts; retry after %d seconds", wait);
}

static void send_tokens(struct call *c, const char *access, const char *refresh)
{
	api_ok(c, "Token generated successfully",
	       json_pack("{s:s, s:s, s:i}", "authToken", access, "refreshToken", refresh,
	                 "expiresIn", AUTH_ACCESS_TTL));
}

static void reject(struct call *c, const char *client_id, int count_client, const char *why)
{
	char esc[80];
	auth_note_failure(c->app->auth, count_client ? client_id : NULL, c->rq->ip);
	LOG(LOG_INFO, "auth", "rid=%s client=%s reason=%s login refused", c->rq->rid,
	    log_escape(client_id, esc, sizeof esc), why);
	c->rs->www_auth = 1;
	api_fail(c, LH_EUNAUTH, "invalid_credentials", NULL, "invalid client credentials");
}

void api_auth_token(struct call *c)
{
	static const struct field_spec spec[] = {
	    {"clientID", F_STRING, 1, 256, 0},
	    {"clientSecret", F_STRING, 1, 256, 0},
	};
	char access[AUTH_TOKEN_CAP], refresh[AUTH_SECRET_CAP];
	struct account acct;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b)
		return;
	const char *id = json_string_value(json_object_get(b, "clientID"));
	const char *secret = json_string_value(json_object_get(b, "clientSecret"));
	if (limited(c, id))
		goto out;
	enum lh_err e = auth_check_client(c->app->auth, id, secret, &acct);
	if (e == LH_EUNAUTH) {
		reject(c, id, 1, "bad_secret_or_id");
		goto out;
	}
	if (e == LH_OK)
		e = auth_issue(c->app->auth, &acct, access, refresh);
	if (e != LH_OK) {
		api_fail_internal(c, e, "issue token");
		goto out;
	}
	auth_note_success(c->app->auth, id, c->rq->ip);
	send_tokens(c, access, refresh);
	OPENSSL_cleanse(refresh, sizeof refresh);
out:
	json_decref(b);
}

void api_auth_refresh(struct call *c)
{
	static const struct field_spec spec[] = {
	    {"clientID", F_STRING, 1, 256, 0},
	    {"refreshToken", F_STRING, 1, 256, 0},
	};
	char access[AUTH_TOKEN_CAP], refresh[AUTH_SECRET_CAP];
	const char *why = "";
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b)
		return;
	const char *id = json_string_value(json_object_get(b, "clientID"));
	const char *rt = json_string_value(json_object_get(b, "refreshToken"));
	if (limited(c, NULL))
		goto out;
	enum lh_err e = auth_refresh(c->app->auth, id, rt, access, refresh, &why);
	if (e == LH_EUNAUTH) {
		reject(c, id, 0, why);
		goto out;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "refresh token");
		goto out;
	}
	send_tokens(c, access, refresh);
	OPENSSL_cleanse(refresh, sizeof refresh);
out:
	json_decref(b);
}
