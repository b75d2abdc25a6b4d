/* api_subs.c: GET /client/labs, webhook registration and subscription management
 * (API.md 3, 4.1, 4.2).
 *
 * The one-webhook-per-event-per-(lab, party) rule is enforced by the store (a unique index),
 * so two racing registrations cannot both win; this file decides what the caller sees:
 * the identical-repeat case answers 200 with the existing subscription, anything else 409
 * naming the events in conflict.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "api.h"
#include "events.h"
#include "log.h"

#define SECRET_OVERLAP_S (24 * 3600)

static const char *const status_names[] = {"active", "paused", "disabled", "deleted"};

static int save_sub(struct call *c, struct subscription *s, unsigned fields);

static json_t *sub_json(const struct subscription *s)
{
	json_t *ev = json_array();
	for (int i = 0; i < EV__COUNT; i++)
		if (s->events & (1u << i))
			json_array_append_new(ev, json_string(event_name((enum event_type)i)));
	json_t *o =
	    json_pack("{s:s, s:s, s:o, s:s, s:s, s:b, s:o, s:o}", "id", s->id, "labID", s->lab_id,
	              "events", ev, "endpoint", s->endpoint, "status", status_names[s->status],
	              "hasAuthToken", s->auth_token[0] != '\0', "createdAt",
	              api_time(s->created_at), "updatedAt", api_time(s->updated_at));
	if (o && s->party_kind != PARTY_NONE)
		json_object_set_new(o, accounts_kind_name(s->party_kind), json_string(s->party_id));
	return o;
}

void api_client_labs(struct call *c)
{
	struct lab *labs = NULL;
	size_t n = 0;
	enum lh_err e = c->app->store->ops->lab_list(c->app->store, c->acct.client_id, &labs, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list labs");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    arr, json_pack("{s:s, s:s}", "labID", labs[i].lab_id, "name", labs[i].name));
	api_ok(c, "Labs fetched successfully", json_pack("{s:o}", "labs", arr));
	free(labs);
}

/* Answers 409 for `events` of (lab, party), naming who holds each one (other than self). */
static void conflict(struct call *c, const struct subscription *want)
{
	struct subscription *held = NULL;
	size_t n = 0;
	char names[256];
	unsigned clash = 0;
	struct store *st = c->app->store;
	enum lh_err e =
	    st->ops->sub_list_holding(st, want->lab_id, want->party_id, want->events, &held, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list conflicts");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++) {
		if (strcmp(held[i].id, want->id) == 0)
			continue;
		for (int ev = 0; ev < EV__COUNT; ev++) {
			if (!(held[i].events & want->events & (1u << ev)))
				continue;
			clash |= 1u << ev;
			json_array_append_new(list, json_pack("{s:s, s:s}", "event",
			                                      event_name((enum event_type)ev),
			                                      "subscriptionID", held[i].id));
		}
	}
	free(held);
	api_fail(c, LH_ECONFLICT, "subscription_conflict", "events",
	         "a webhook is already registered for %s on this lab%s; change or delete it first",
	         clash ? event_mask_names(clash, names, sizeof names) : "these events",
	         want->party_kind == PARTY_NONE ? "" : " and party");
	json_object_set_new(json_object_get(c->rs->json, "error"), "conflicts", list);
}

static void send_sub(struct call *c, const char *msg, const struct subscription *s, int with_secret)
{
	json_t *f = json_pack("{s:o}", "subscription", sub_json(s));
	if (f && with_secret)
		json_object_set_new(f, "signingSecret", json_string(s->secret));
	api_ok(c, msg, f);
}

static enum lh_err new_signing_secret(char out[SECRET_CAP])
{
	unsigned char raw[32];
	char b64[64];
	enum lh_err e = util_random(raw, sizeof raw);
	if (e != LH_OK)
		return e;
	util_b64_encode(raw, sizeof raw, b64, sizeof b64);
	snprintf(out, SECRET_CAP, "whsec_%s", b64);
	return LH_OK;
}

/* Resolves the party fields of a registration against the account's mode; responds on
 * failure. */
static int resolve_party(struct call *c, const struct sub_request *r, struct subscription *s)
{
	const char *pid = r->corporate_user ? r->corporate_user : r->organization;
	const char *field = r->corporate_user ? "corporateUser" : "organization";
	enum party_kind want = r->corporate_user ? PARTY_CORPORATE_USER : PARTY_ORGANIZATION;
	struct party p;

	if (c->acct.mode == MODE_CATCH_ALL) {
		if (pid)
			return api_fail(
			    c, LH_EINVAL, "party_not_allowed", field,
			    "this is a catch-all account: webhooks take no party; remove '%s'",
			    field);
		return 0;
	}
	if (!pid)
		return api_fail(
		    c, LH_EINVAL, "party_required", "corporateUser",
		    "this is a party-scoped account: send 'corporateUser' or 'organization'");
	enum lh_err e = c->app->store->ops->party_get(c->app->store, c->acct.client_id, pid, &p);
	if (e == LH_OK && p.kind != want)
		e = LH_ENOTFOUND;
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "party_not_found", field,
		                "no %s with this id in your account", field);
	if (e != LH_OK)
		return api_fail_internal(c, e, "load party");
	memcpy(s->party_id, p.party_id, sizeof s->party_id);
	s->party_kind = p.kind;
	return 0;
}

/* An identical live registration (same endpoint and events) of (lab, party), if any. */
static int find_identical(struct call *c, const struct subscription *want, struct subscription *out,
                          int *found)
{
	struct subscription *held = NULL;
	size_t n = 0;
	struct store *st = c->app->store;
	enum lh_err e =
	    st->ops->sub_list_holding(st, want->lab_id, want->party_id, want->events, &held, &n);
	if (e != LH_OK)
		return api_fail_internal(c, e, "list subscriptions");
	*found = n == 1 && held[0].events == want->events &&
	         strcmp(held[0].endpoint, want->endpoint) == 0;
	if (*found)
		*out = held[0];
	free(held);
	return 0;
}

void api_subscribe(struct call *c)
{
	struct verr v;
	struct sub_request r;
	struct subscription *s = NULL, existing;
	struct lab lab;
	json_t *b = NULL;
	int found = 0;
	struct store *st = c->app->store;
	enum lh_err e;

	if (validate_parse_object(c->rq->body, c->rq->body_len, &b, &v) ||
	    validate_subscribe(b, c->app->cfg.allow_net, c->app->cfg.n_allow_net, &r, &v)) {
		api_fail_verr(c, &v);
		goto out;
	}
	e = st->ops->lab_get(st, c->acct.client_id, r.lab_id, &lab);
	if (e == LH_ENOTFOUND) {
		api_fail(c, e, "lab_not_found", "labID", "no lab with this labID in your account");
		goto out;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "load lab");
		goto out;
	}
	s = calloc(1, sizeof *s);
	if (!s) {
		api_fail_internal(c, LH_ENOMEM, "subscribe");
		goto out;
	}
	if (resolve_party(c, &r, s))
		goto out;
	memcpy(s->client_id, c->acct.client_id, sizeof s->client_id);
	memcpy(s->lab_id, lab.lab_id, sizeof s->lab_id);
	snprintf(s->endpoint, sizeof s->endpoint, "%s", r.endpoint);
	snprintf(s->auth_token, sizeof s->auth_token, "%s", r.auth_token ? r.auth_token : "");
	s->events = r.events;
	s->status = SUB_ACTIVE;
	s->created_at = s->updated_at = util_now();
	if ((e = util_new_id("sub_", s->id)) != LH_OK || (e = new_signing_secret(s->secret))) {
		api_fail_internal(c, e, "new subscription");
		goto out;
	}
	e = st->ops->sub_insert(st, s);
	if (e == LH_ECONFLICT) {
		/* Taken, maybe by this very registration sent before: a retry is not a conflict. */
		if (find_identical(c, s, &existing, &found))
			goto out;
		if (!found) {
			conflict(c, s);
			goto out;
		}
		/* A repeat that brings a new authToken means to use it from now on. */
		if (r.auth_token && strcmp(r.auth_token, existing.auth_token) != 0) {
			snprintf(existing.auth_token, sizeof existing.auth_token, "%s",
			         r.auth_token);
			if (save_sub(c, &existing, SUBF_AUTH_TOKEN))
				goto out;
		}
		send_sub(c, "Events subscribed successfully", &existing, 1);
		goto out;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "insert subscription");
		goto out;
	}
	LOG(LOG_INFO, "subs", "rid=%s client=%s sub=%s lab=%s subscribed", c->rq->rid,
	    c->acct.client_id, s->id, s->lab_id);
	send_sub(c, "Events subscribed successfully", s, 1);
out:
	free(s);
	json_decref(b);
}

/* A status a client may filter on or set: not "deleted". */
static int status_from_name(const char *s)
{
	return api_name_index(status_names, SUB_DELETED, s);
}

void api_subs_list(struct call *c)
{
	struct subscription *list = NULL;
	struct lab lab;
	size_t n = 0, limit;
	const char *cursor, *lab_id = http_query(c->rq, "labID"),
	                    *status = http_query(c->rq, "status");
	int st_filter = -1;
	struct store *st = c->app->store;

	if (api_paging(c, "sub_", &limit, &cursor))
		return;
	if (status && *status && (st_filter = status_from_name(status)) < 0) {
		api_fail(c, LH_EINVAL, "invalid_value", "status",
		         "'status' must be active, paused or disabled");
		return;
	}
	if (lab_id && *lab_id) {
		enum lh_err e = strlen(lab_id) < ID_CAP
		                    ? st->ops->lab_get(st, c->acct.client_id, lab_id, &lab)
		                    : LH_ENOTFOUND;
		if (e == LH_ENOTFOUND) {
			api_fail(c, e, "lab_not_found", "labID",
			         "no lab with this labID in your account");
			return;
		}
		if (e != LH_OK) {
			api_fail_internal(c, e, "load lab");
			return;
		}
	} else {
		lab_id = "";
	}
	enum lh_err e =
	    st->ops->sub_list(st, c->acct.client_id, lab_id, st_filter, cursor, limit, &list, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list subscriptions");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, sub_json(&list[i]));
	api_ok(c, "ok",
	       json_pack("{s:o, s:s?}", "subscriptions", arr, "nextCursor",
	                 n == limit ? list[n - 1].id : NULL));
	free(list);
}

/* Writes the fields (SUBF_*) of s and reloads s with the row as stored, which may hold a
 * concurrent change to other fields; 409 names the events another subscription holds. */
static int save_sub(struct call *c, struct subscription *s, unsigned fields)
{
	s->updated_at = util_now();
	enum lh_err e = c->app->store->ops->sub_update(c->app->store, s, fields, s);
	if (e == LH_ECONFLICT) {
		conflict(c, s);
		return -1;
	}
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "subscription_not_found", NULL,
		                "no subscription with this id");
	if (e != LH_OK)
		return api_fail_internal(c, e, "update subscription");
	return 0;
}

void api_sub_get(struct call *c)
{
	struct subscription *s = api_load_sub(c);
	if (s)
		send_sub(c, "ok", s, 0);
	free(s);
}

void api_sub_patch(struct call *c)
{
	static const struct field_spec spec[] = {
	    {"events", F_ARRAY, 0, 64, 0},
	    {"endpoint", F_STRING, 0, 0, 0},
	    {"authToken", F_STRING, 0, AUTHTOKEN_CAP - 1, 1},
	    {"status", F_STRING, 0, 16, 0},
	};
	struct verr v;
	struct subscription *s = NULL;
	json_t *j;
	unsigned fields = 0;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b)
		return;
	if (json_object_size(b) == 0) {
		api_fail(c, LH_EINVAL, "invalid_request", NULL,
		         "send at least one of events, endpoint, authToken, status");
		goto out;
	}
	if (!(s = api_load_sub(c)))
		goto out;
	if ((j = json_object_get(b, "events"))) {
		if (validate_events(j, "events", &s->events, &v))
			goto bad;
		fields |= SUBF_EVENTS;
	}
	if ((j = json_object_get(b, "endpoint"))) {
		if (validate_endpoint(json_string_value(j), "endpoint", c->app->cfg.allow_net,
		                      c->app->cfg.n_allow_net, &v))
			goto bad;
		snprintf(s->endpoint, sizeof s->endpoint, "%s", json_string_value(j));
		fields |= SUBF_ENDPOINT;
	}
	if ((j = json_object_get(b, "authToken"))) {
		const char *t = json_is_null(j) ? "" : json_string_value(j);
		if (validate_auth_token(t, "authToken", &v))
			goto bad;
		snprintf(s->auth_token, sizeof s->auth_token, "%s", t);
		fields |= SUBF_AUTH_TOKEN;
	}
	if ((j = json_object_get(b, "status"))) {
		int st = status_from_name(json_string_value(j));
		if (st != SUB_ACTIVE && st != SUB_PAUSED) {
			api_fail(c, LH_EINVAL, "invalid_value", "status",
			         "'status' must be \"active\" or \"paused\"");
			goto out;
		}
		s->status = (enum sub_status)st;
		fields |= SUBF_STATUS;
	}
	if (save_sub(c, s, fields) == 0)
		send_sub(c, "Subscription updated", s, 0);
	goto out;
bad:
	api_fail_verr(c, &v);
out:
	free(s);
	json_decref(b);
}

void api_sub_delete(struct call *c)
{
	struct subscription *s = api_load_sub(c);
	if (!s)
		return;
	s->status = SUB_DELETED;
	if (save_sub(c, s, SUBF_STATUS) == 0) {
		LOG(LOG_INFO, "subs", "rid=%s client=%s sub=%s unsubscribed", c->rq->rid,
		    c->acct.client_id, s->id);
		api_ok(c, "Unsubscribed successfully", json_pack("{s:s}", "id", s->id));
	}
	free(s);
}

static void send_secret(struct call *c, const char *msg, const struct subscription *s)
{
	json_t *f = json_pack("{s:s, s:s}", "id", s->id, "signingSecret", s->secret);
	if (f && s->prev_secret[0] && s->prev_secret_until > util_now())
		json_object_set_new(f, "previousSecretExpiresAt", api_time(s->prev_secret_until));
	api_ok(c, msg, f);
}

void api_sub_secret(struct call *c)
{
	struct subscription *s = api_load_sub(c);
	if (s)
		send_secret(c, "ok", s);
	free(s);
}

void api_sub_secret_rotate(struct call *c)
{
	struct subscription *s = api_load_sub(c);
	char fresh[SECRET_CAP];
	if (!s)
		return;
	enum lh_err e = new_signing_secret(fresh);
	if (e != LH_OK) {
		api_fail_internal(c, e, "new secret");
		goto out;
	}
	/* The store moves the secret of the moment to prev_secret, not the one read here. */
	s->prev_secret_until = util_now() + SECRET_OVERLAP_S;
	memcpy(s->secret, fresh, sizeof s->secret);
	if (save_sub(c, s, SUBF_SECRET) == 0)
		send_secret(
		    c, "Signing secret rotated; the previous one keeps signing for 24 hours", s);
out:
	free(s);
}
