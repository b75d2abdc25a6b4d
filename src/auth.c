/* auth.c: see auth.h. */
#define _POSIX_C_SOURCE 200809L
#include "auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>

#include "log.h"
#include "util.h"

#define RL_SLOTS 4096
#define RL_PROBE 8
#define RL_KEY   (ID_CAP + 112) /* kind, a client id cut to ID_CAP + 40, an address */
/* An address's failures against all client ids together, past which it is held back, in
 * multiples of auth-max-failures (against one client id it is held back at 1x). So a
 * client's slips, or a few bad requests from a shared address, lock no one out; an
 * address trying many ids is stopped. Failures against one id from all addresses past the
 * same multiple are logged (distributed guessing), never refused: the id is no secret. */
#define RL_SPRAY 10

struct rl_slot {
	char key[RL_KEY];
	int64_t start_ms;
	int fails;
};

/* A token whose signature and header were checked: what it says. */
struct tok_slot {
	char tok[AUTH_TOKEN_CAP]; /* "" when free */
	struct auth_claims c;
};

#define TOK_SLOTS 256 /* a power of two */

struct auth {
	struct store *st;
	unsigned char key[32];
	int64_t refresh_ttl_s;
	int max_failures;
	int64_t window_ms;
	pthread_mutex_t mu;
	uint64_t rl_basis; /* random: the limiter's hash is keyed */
	struct rl_slot slots[RL_SLOTS];
	/* Clients send the same access token with every request: the checked ones are kept
	 * (direct-mapped by a hash of the text) so that the signature, the base64 and the JSON
	 * are not redone each time. Expiry and revocation are still checked on every use. */
	pthread_mutex_t tmu;
	struct tok_slot toks[TOK_SLOTS];
};

enum lh_err auth_new(struct store *st, const struct config *cfg, struct auth **out)
{
	unsigned char raw[32];
	char fresh[64], stored[64];
	struct auth *a;
	enum lh_err e;

	if ((e = util_random(raw, sizeof raw)) != LH_OK)
		return e;
	util_b64_encode(raw, sizeof raw, fresh, sizeof fresh);
	OPENSSL_cleanse(raw, sizeof raw);
	/* First node to start writes the key; every later start (and node) reads it back. */
	e = st->ops->meta_get_or_put(st, "jwt_hs256_key", fresh, stored, sizeof stored);
	OPENSSL_cleanse(fresh, sizeof fresh);
	if (e != LH_OK)
		return e;
	a = calloc(1, sizeof *a);
	if (!a)
		return LH_ENOMEM;
	if (util_b64_decode(stored, strlen(stored), a->key, sizeof a->key) != 32) {
		LOG(LOG_ERROR, "auth", "the stored token key is damaged");
		free(a);
		return LH_ESTORE;
	}
	OPENSSL_cleanse(stored, sizeof stored);
	a->st = st;
	a->refresh_ttl_s = cfg->refresh_ttl_ms / 1000;
	a->max_failures = cfg->auth_max_failures;
	a->window_ms = cfg->auth_lockout_ms;
	util_random(&a->rl_basis, sizeof a->rl_basis);
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->tmu, NULL);
	*out = a;
	return LH_OK;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->tmu);
	OPENSSL_cleanse(a->key, sizeof a->key);
	free(a);
}

void auth_hash_secret(const char *secret, unsigned char out[32])
{
	/* Secrets are 256 random bits, so a fast hash is enough: nothing to brute-force. */
	util_sha256(secret, strlen(secret), out);
}

enum lh_err auth_new_client_secret(char out[AUTH_SECRET_CAP], unsigned char hash[32])
{
	char tmp[AUTH_SECRET_CAP];
	enum lh_err e = util_random_token("cs_", 32, tmp, sizeof tmp);
	if (e != LH_OK)
		return e;
	auth_hash_secret(tmp, hash);
	memcpy(out, tmp, sizeof tmp);
	OPENSSL_cleanse(tmp, sizeof tmp);
	return LH_OK;
}

enum lh_err auth_check_client(struct auth *a, const char *client_id, const char *secret,
                              struct account *acct)
{
	struct account tmp;
	unsigned char h[32];
	static const unsigned char dummy[32];
	enum lh_err e = LH_ENOTFOUND;

	if (strlen(client_id) < ID_CAP)
		e = a->st->ops->account_get(a->st, client_id, &tmp);
	if (e != LH_OK && e != LH_ENOTFOUND)
		return e;
	/* Hash and compare even for unknown ids, so timing does not tell ids apart. */
	auth_hash_secret(secret, h);
	int same = util_ct_equal(h, e == LH_OK ? tmp.secret_hash : dummy, 32);
	if (e != LH_OK || !same)
		return LH_EUNAUTH;
	*acct = tmp;
	return LH_OK;
}

static enum lh_err sign_access(struct auth *a, const struct account *acct,
                               char access[AUTH_TOKEN_CAP])
{
	jwt_t *jwt = NULL;
	char *tok = NULL, jti[ID_CAP];
	int64_t now = util_now();
	enum lh_err e = LH_EIO;

	if (util_new_id("at_", jti) != LH_OK || jwt_new(&jwt) != 0)
		goto out;
	if (jwt_add_grant(jwt, "iss", "labhook") || jwt_add_grant(jwt, "sub", acct->client_id) ||
	    jwt_add_grant(jwt, "jti", jti) || jwt_add_grant_int(jwt, "iat", (long)now) ||
	    jwt_add_grant_int(jwt, "exp", (long)(now + AUTH_ACCESS_TTL)) ||
	    jwt_add_grant_int(jwt, "ver", (long)acct->secret_version) ||
	    jwt_set_alg(jwt, JWT_ALG_HS256, a->key, sizeof a->key))
		goto out;
	tok = jwt_encode_str(jwt);
	if (!tok || strlen(tok) >= AUTH_TOKEN_CAP)
		goto out;
	memcpy(access, tok, strlen(tok) + 1);
	e = LH_OK;
out:
	if (tok)
		free(tok);
	jwt_free(jwt);
	return e;
}

enum lh_err auth_issue(struct auth *a, const struct account *acct, char access[AUTH_TOKEN_CAP],
                       char refresh[AUTH_SECRET_CAP])
{
	char family[ID_CAP], rt[AUTH_SECRET_CAP];
	unsigned char h[32];
	enum lh_err e;

	if ((e = util_new_id("rtf_", family)) != LH_OK ||
	    (e = util_random_token("rt_", 32, rt, sizeof rt)) != LH_OK)
		return e;
	auth_hash_secret(rt, h);
	if ((e = a->st->ops->refresh_insert(a->st, h, acct->client_id, family,
	                                    util_now() + a->refresh_ttl_s)) != LH_OK)
		return e;
	if ((e = sign_access(a, acct, access)) != LH_OK)
		return e;
	memcpy(refresh, rt, sizeof rt);
	return LH_OK;
}

enum lh_err auth_refresh(struct auth *a, const char *client_id, const char *refresh_token,
                         char access[AUTH_TOKEN_CAP], char refresh_out[AUTH_SECRET_CAP],
                         const char **why)
{
	struct account acct;
	char rt[AUTH_SECRET_CAP];
	unsigned char h[32], nh[32];
	enum refresh_result r;
	enum lh_err e;
	int64_t now = util_now();

	*why = "unknown";
	if (strlen(client_id) >= ID_CAP || strlen(refresh_token) >= AUTH_SECRET_CAP)
		return LH_EUNAUTH;
	e = a->st->ops->account_get(a->st, client_id, &acct);
	if (e == LH_ENOTFOUND)
		return LH_EUNAUTH;
	if (e != LH_OK)
		return e;
	if ((e = util_random_token("rt_", 32, rt, sizeof rt)) != LH_OK)
		return e;
	auth_hash_secret(refresh_token, h);
	auth_hash_secret(rt, nh);
	e = a->st->ops->refresh_rotate(a->st, h, client_id, now, nh, now + a->refresh_ttl_s, &r);
	if (e != LH_OK)
		return e;
	if (r != REFRESH_OK) {
		*why = r == REFRESH_REUSED    ? "reused_family_revoked"
		       : r == REFRESH_EXPIRED ? "expired"
		                              : "unknown_or_revoked";
		return LH_EUNAUTH;
	}
	if ((e = sign_access(a, &acct, access)) != LH_OK)
		return e;
	memcpy(refresh_out, rt, sizeof rt);
	return LH_OK;
}

/* Only {"alg":"HS256"} (with an optional "typ":"JWT") passes: no "none", no switching. */
static int header_is_hs256(const char *tok)
{
	const char *dot = strchr(tok, '.');
	char b64[512];
	unsigned char raw[384];
	size_t n = dot ? (size_t)(dot - tok) : 0;
	json_t *h = NULL;
	int ok = 0;

	if (n == 0 || n + 4 >= sizeof b64)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = tok[i];
		b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
	}
	long len = util_b64_decode(b64, n, raw, sizeof raw);
	if (len <= 0)
		return 0;
	h = json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(h))
		goto out;
	const char *key;
	json_t *v;
	json_object_foreach(h, key, v)
	{
		if (strcmp(key, "alg") == 0)
			ok = json_is_string(v) && strcmp(json_string_value(v), "HS256") == 0;
		else if (strcmp(key, "typ") != 0)
			goto fail; /* kid, jku, crit ...: nothing we issue */
	}
	goto out;
fail:
	ok = 0;
out:
	json_decref(h);
	return ok;
}

int auth_token_check(const unsigned char *key, size_t keylen, const char *tok,
                     struct auth_claims *out)
{
	jwt_t *jwt = NULL;
	int ok = 0;

	if (!header_is_hs256(tok))
		return 0;
	if (jwt_decode(&jwt, tok, key, (int)keylen) != 0 || !jwt)
		goto out;
	if (jwt_get_alg(jwt) != JWT_ALG_HS256)
		goto out;
	const char *iss = jwt_get_grant(jwt, "iss");
	const char *sub = jwt_get_grant(jwt, "sub");
	if (!iss || strcmp(iss, "labhook") != 0 || !sub || strlen(sub) >= sizeof out->sub)
		goto out;
	memcpy(out->sub, sub, strlen(sub) + 1);
	out->exp = jwt_get_grant_int(jwt, "exp");
	out->ver = jwt_get_grant_int(jwt, "ver");
	ok = 1;
out:
	jwt_free(jwt);
	return ok;
}

const char *auth_bearer_token(const char *header)
{
	if (!header || strncasecmp(header, "Bearer ", 7) != 0)
		return NULL;
	const char *tok = header + 7;
	while (*tok == ' ')
		tok++;
	size_t n = strlen(tok);
	if (n == 0 || n >= AUTH_TOKEN_CAP ||
	    strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != n)
		return NULL;
	return tok;
}

enum lh_err auth_verify_bearer(struct auth *a, const char *header, struct account *acct)
{
	struct account tmp;
	struct tok_slot t;
	const char *tok = auth_bearer_token(header);
	enum lh_err e;

	if (!tok)
		return LH_EUNAUTH;
	size_t n = strlen(tok);
	struct tok_slot *slot = &a->toks[util_fnv1a(UTIL_FNV_BASIS, tok) & (TOK_SLOTS - 1)];
	pthread_mutex_lock(&a->tmu);
	int hit = strcmp(slot->tok, tok) == 0;
	if (hit)
		t = *slot;
	pthread_mutex_unlock(&a->tmu);
	if (!hit) {
		if (!auth_token_check(a->key, sizeof a->key, tok, &t.c))
			return LH_EUNAUTH;
		memcpy(t.tok, tok, n + 1);
		pthread_mutex_lock(&a->tmu);
		*slot = t;
		pthread_mutex_unlock(&a->tmu);
	}
	if (t.c.exp <= util_now())
		return LH_EUNAUTH;
	e = a->st->ops->account_get(a->st, t.c.sub, &tmp);
	if (e == LH_ENOTFOUND || (e == LH_OK && tmp.secret_version != t.c.ver))
		return LH_EUNAUTH; /* the account is gone or its secret was rotated */
	if (e == LH_OK)
		*acct = tmp;
	return e;
}

/* ---- failed-login limiter: fixed window per key, small open-addressed table ---- */

/* Finds the slot for key (caller holds mu). Slots are picked by a hash keyed with a random
 * basis, so that no one can choose client ids whose keys land on (and evict) the slot
 * that holds an address back. If absent and create is set, claims a probed slot: a free
 * or expired one, else the one with the fewest failures, so an entry holding someone back
 * is the last to go. */
static struct rl_slot *rl_slot(struct auth *a, const char *key, int create, int64_t now)
{
	uint64_t h = util_fnv1a(a->rl_basis, key);
	struct rl_slot *victim = NULL;
	int victim_rank = 0;
	for (int i = 0; i < RL_PROBE; i++) {
		struct rl_slot *s = &a->slots[(h + (uint64_t)i) % RL_SLOTS];
		if (strcmp(s->key, key) == 0)
			return s;
		int rank = (!s->key[0] || now - s->start_ms >= a->window_ms) ? 0 : s->fails;
		if (!victim || rank < victim_rank ||
		    (rank == victim_rank && s->start_ms < victim->start_ms)) {
			victim = s;
			victim_rank = rank;
		}
	}
	if (!create)
		return NULL;
	snprintf(victim->key, sizeof victim->key, "%s", key);
	victim->start_ms = now;
	victim->fails = 0;
	return victim;
}

static int rl_wait(struct auth *a, const char *key, int limit, int64_t now)
{
	struct rl_slot *s = rl_slot(a, key, 0, now);
	if (!s || s->fails < limit || now - s->start_ms >= a->window_ms)
		return 0;
	return (int)((s->start_ms + a->window_ms - now + 999) / 1000);
}

/* Keys: "i:<ip>" (the address), "c:<id>" (the client id, from anywhere) and
 * "p:<id>|<ip>" (that id from that address). */
static void rl_key(char out[RL_KEY], char kind, const char *client_id, const char *ip)
{
	if (kind == 'i')
		snprintf(out, RL_KEY, "i:%s", ip);
	else if (kind == 'c')
		snprintf(out, RL_KEY, "c:%.*s", ID_CAP + 40, client_id);
	else
		snprintf(out, RL_KEY, "p:%.*s|%s", ID_CAP + 40, client_id, ip);
}

int auth_limited(struct auth *a, const char *client_id, const char *ip)
{
	char ki[RL_KEY], kp[RL_KEY];
	int64_t now = util_now_ms();

	rl_key(ki, 'i', NULL, ip);
	if (client_id)
		rl_key(kp, 'p', client_id, ip);
	pthread_mutex_lock(&a->mu);
	int wi = rl_wait(a, ki, RL_SPRAY * a->max_failures, now);
	int wp = client_id ? rl_wait(a, kp, a->max_failures, now) : 0;
	pthread_mutex_unlock(&a->mu);
	return wi > wp ? wi : wp;
}

void auth_note_failure(struct auth *a, const char *client_id, const char *ip)
{
	char k[RL_KEY];
	int64_t now = util_now_ms();
	int spread = 0;
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < 3; i++) {
		if (i > 0 && !client_id)
			break;
		rl_key(k, "ipc"[i], client_id, ip);
		struct rl_slot *s = rl_slot(a, k, 1, now);
		if (now - s->start_ms >= a->window_ms) {
			s->start_ms = now;
			s->fails = 0;
		}
		s->fails++;
		spread = i == 2 && s->fails == RL_SPRAY * a->max_failures;
	}
	pthread_mutex_unlock(&a->mu);
	if (spread) {
		char esc[2 * ID_CAP];
		LOG(LOG_WARN, "auth", "client_id=%s failures=%d failed logins from many addresses",
		    log_escape(client_id, esc, sizeof esc), RL_SPRAY * a->max_failures);
	}
}

void auth_note_success(struct auth *a, const char *client_id, const char *ip)
{
	char k[RL_KEY];
	rl_key(k, 'p', client_id, ip);
	pthread_mutex_lock(&a->mu);
	struct rl_slot *s = rl_slot(a, k, 0, 0);
	if (s)
		s->fails = 0;
	pthread_mutex_unlock(&a->mu);
}
