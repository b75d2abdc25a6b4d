/* api_admin.c: the operator's admin API (API.md 1), guarded by the admin key in api.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "accounts.h"
#include "api.h"

static json_t *account_json(const struct account *a)
{
	return json_pack("{s:s, s:s, s:s, s:o}", "clientID", a->client_id, "name", a->name, "mode",
	                 accounts_mode_name(a->mode), "createdAt", api_time(a->created_at));
}

static json_t *lab_json(const struct lab *l)
{
	return json_pack("{s:s, s:s}", "labID", l->lab_id, "name", l->name);
}

static json_t *party_json(const struct party *p)
{
	return json_pack("{s:s, s:s, s:s}", "partyID", p->party_id, "kind",
	                 accounts_kind_name(p->kind), "name", p->name);
}

/* Loads the account named in the path, or responds 404. */
static int load_account(struct call *c, struct account *a)
{
	enum lh_err e = c->app->store->ops->account_get(c->app->store, c->arg[0], a);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "account_not_found", NULL, "no account with this clientID");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load account");
	return 0;
}

static int mode_arg(struct call *c, json_t *b, int required, enum account_mode *out)
{
	json_t *m = json_object_get(b, "mode");
	if (!m) {
		*out = MODE_CATCH_ALL;
		return required
		           ? api_fail(c, LH_EINVAL, "missing_field", "mode", "'mode' is required")
		           : 0;
	}
	int v = accounts_mode_from_name(json_string_value(m));
	if (v < 0)
		return api_fail(c, LH_EINVAL, "invalid_value", "mode",
		                "'mode' must be \"catch-all\" or \"party-scoped\"");
	*out = (enum account_mode)v;
	return 0;
}

void api_admin_accounts_create(struct call *c)
{
	static const struct field_spec spec[] = {
	    {"name", F_STRING, 1, NAME_CAP - 1, 0},
	    {"mode", F_STRING, 0, 32, 0},
	};
	struct account a;
	char secret[AUTH_SECRET_CAP];
	enum account_mode mode = MODE_CATCH_ALL;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b || mode_arg(c, b, 0, &mode))
		goto out;
	enum lh_err e = accounts_create(
	    c->app->store, json_string_value(json_object_get(b, "name")), mode, &a, secret);
	if (e != LH_OK) {
		api_fail_internal(c, e, "create account");
		goto out;
	}
	json_t *f = account_json(&a);
	json_object_set_new(f, "clientSecret", json_string(secret));
	OPENSSL_cleanse(secret, sizeof secret);
	api_ok(c, "Account created; the clientSecret is shown only once", f);
out:
	json_decref(b);
}

void api_admin_accounts_list(struct call *c)
{
	struct account *list = NULL;
	size_t n = 0, limit;
	const char *cursor;
	if (api_paging(c, "cl_", &limit, &cursor))
		return;
	enum lh_err e = c->app->store->ops->account_list(c->app->store, cursor, limit, &list, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list accounts");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, account_json(&list[i]));
	api_ok(c, "ok",
	       json_pack("{s:o, s:s?}", "accounts", arr, "nextCursor",
	                 n == limit ? list[n - 1].client_id : NULL));
	free(list);
}

/* The account with its labs and parties. */
static void send_account(struct call *c, const struct account *a, const char *msg)
{
	struct lab *labs = NULL;
	struct party *parties = NULL;
	size_t nl = 0, np = 0;
	struct store *st = c->app->store;
	enum lh_err e = st->ops->lab_list(st, a->client_id, &labs, &nl);
	if (e == LH_OK)
		e = st->ops->party_list(st, a->client_id, &parties, &np);
	if (e != LH_OK) {
		api_fail_internal(c, e, "load account");
		goto out;
	}
	json_t *f = account_json(a), *jl = json_array(), *jp = json_array();
	for (size_t i = 0; i < nl; i++)
		json_array_append_new(jl, lab_json(&labs[i]));
	for (size_t i = 0; i < np; i++)
		json_array_append_new(jp, party_json(&parties[i]));
	json_object_set_new(f, "labs", jl);
	json_object_set_new(f, "parties", jp);
	api_ok(c, msg, json_pack("{s:o}", "account", f));
out:
	free(labs);
	free(parties);
}

void api_admin_account_get(struct call *c)
{
	struct account a;
	if (load_account(c, &a) == 0)
		send_account(c, &a, "ok");
}

void api_admin_account_patch(struct call *c)
{
	static const struct field_spec spec[] = {{"mode", F_STRING, 1, 32, 0}};
	struct account a;
	struct subscription *subs = NULL;
	size_t n = 0;
	enum account_mode mode = MODE_CATCH_ALL;
	struct store *st = c->app->store;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b || mode_arg(c, b, 1, &mode) || load_account(c, &a))
		goto out;
	if (mode != a.mode) {
		/* Webhooks are bound (or not) to parties by the mode they were made under;
		 * switching under them would silently change who receives what. */
		enum lh_err e = st->ops->sub_list(st, a.client_id, "", -1, "", 1, &subs, &n);
		if (e != LH_OK) {
			api_fail_internal(c, e, "list subscriptions");
			goto out;
		}
		if (n > 0) {
			api_fail(
			    c, LH_ECONFLICT, "account_has_subscriptions", "mode",
			    "the account still has webhooks registered under mode %s; delete them before changing the mode",
			    accounts_mode_name(a.mode));
			goto out;
		}
		e = st->ops->account_set_mode(st, a.client_id, mode, &a);
		if (e != LH_OK) {
			api_fail_internal(c, e, "set mode");
			goto out;
		}
	}
	send_account(c, &a, "Account updated");
out:
	free(subs);
	json_decref(b);
}

void api_admin_account_rotate(struct call *c)
{
	struct account a;
	char secret[AUTH_SECRET_CAP];
	unsigned char hash[32];
	if (load_account(c, &a))
		return;
	enum lh_err e = auth_new_client_secret(secret, hash);
	if (e == LH_OK)
		e = c->app->store->ops->account_set_secret(c->app->store, a.client_id, hash, &a);
	if (e != LH_OK) {
		api_fail_internal(c, e, "rotate secret");
		return;
	}
	api_ok(
	    c,
	    "Secret rotated; the old secret, its access tokens and refresh tokens no longer work",
	    json_pack("{s:s, s:s}", "clientID", a.client_id, "clientSecret", secret));
	OPENSSL_cleanse(secret, sizeof secret);
}

void api_admin_labs_create(struct call *c)
{
	static const struct field_spec spec[] = {{"name", F_STRING, 1, NAME_CAP - 1, 0}};
	struct account a;
	struct lab l;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b || load_account(c, &a))
		goto out;
	enum lh_err e = accounts_add_lab(c->app->store, a.client_id,
	                                 json_string_value(json_object_get(b, "name")), &l);
	if (e != LH_OK) {
		api_fail_internal(c, e, "create lab");
		goto out;
	}
	api_ok(c, "Lab created", lab_json(&l));
out:
	json_decref(b);
}

void api_admin_labs_list(struct call *c)
{
	struct account a;
	struct lab *labs = NULL;
	size_t n = 0;
	if (load_account(c, &a))
		return;
	enum lh_err e = c->app->store->ops->lab_list(c->app->store, a.client_id, &labs, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list labs");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, lab_json(&labs[i]));
	api_ok(c, "ok", json_pack("{s:o}", "labs", arr));
	free(labs);
}

void api_admin_parties_create(struct call *c)
{
	static const struct field_spec spec[] = {
	    {"kind", F_STRING, 1, 32, 0},
	    {"name", F_STRING, 1, NAME_CAP - 1, 0},
	};
	struct account a;
	struct party p;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b)
		return;
	int kind = accounts_kind_from_name(json_string_value(json_object_get(b, "kind")));
	if (kind < 0) {
		api_fail(c, LH_EINVAL, "invalid_value", "kind",
		         "'kind' must be \"corporateUser\" or \"organization\"");
		goto out;
	}
	if (load_account(c, &a))
		goto out;
	enum lh_err e = accounts_add_party(c->app->store, a.client_id, (enum party_kind)kind,
	                                   json_string_value(json_object_get(b, "name")), &p);
	if (e != LH_OK) {
		api_fail_internal(c, e, "create party");
		goto out;
	}
	api_ok(c, "Party created", party_json(&p));
out:
	json_decref(b);
}

void api_admin_parties_list(struct call *c)
{
	struct account a;
	struct party *ps = NULL;
	size_t n = 0;
	if (load_account(c, &a))
		return;
	enum lh_err e = c->app->store->ops->party_list(c->app->store, a.client_id, &ps, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list parties");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, party_json(&ps[i]));
	api_ok(c, "ok", json_pack("{s:o}", "parties", arr));
	free(ps);
}
