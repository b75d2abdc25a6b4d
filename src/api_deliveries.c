/* api_deliveries.c: the delivery endpoints of API.md 4.2: the attempt log of a
 * subscription's deliveries, retry one now, recover the failed ones since a time, and a
 * test event. Re-queued deliveries are written to the store, whose commit hook hands them
 * to the delivery engine like new ones: nothing here calls the engine.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "domain.h"
#include "events.h"

static const char *const dlv_status_names[] = {"pending", "delivered", "failed", "cancelled"};

static json_t *delivery_json(struct call *c, const struct delivery *d)
{
	struct attempt *at = NULL;
	size_t n = 0;
	json_t *arr = json_array();
	if (c->app->store->ops->attempt_list(c->app->store, d->delivery_id, &at, &n) == LH_OK) {
		for (size_t i = 0; i < n; i++) {
			char when[32], resp[ATTEMPT_BODY_CAP];
			util_rfc3339(at[i].started_at_ms / 1000, when);
			/* Rows kept before answers were cleaned may not be UTF-8, and jansson
			 * refuses such a string: the attempt would vanish from the list. */
			util_utf8_clean(at[i].response, strlen(at[i].response), resp, sizeof resp);
			json_t *a =
			    json_pack("{s:i, s:s, s:i, s:s*, s:s}", "attempt", at[i].n, "at", when,
			              "durationMs", at[i].duration_ms, "error",
			              at[i].error[0] ? at[i].error : NULL, "response", resp);
			if (a && at[i].status_code)
				json_object_set_new(a, "statusCode",
				                    json_integer(at[i].status_code));
			json_array_append_new(arr, a);
		}
	}
	free(at);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:o}", "id", d->delivery_id, "eventID",
	                      d->event_id, "eventType", event_name((enum event_type)d->event_type),
	                      "status", dlv_status_names[d->status], "attemptCount", d->attempts,
	                      "createdAt", api_time(d->created_at));
	if (o && d->status == DLV_PENDING && d->attempts > 0) {
		char when[32];
		util_rfc3339(d->next_at_ms / 1000, when);
		json_object_set_new(o, "nextAttemptAt", json_string(when));
	}
	if (o)
		json_object_set_new(o, "attempts", arr);
	else
		json_decref(arr);
	return o;
}

void api_sub_deliveries(struct call *c)
{
	struct subscription *s = NULL;
	struct delivery *list = NULL;
	size_t n = 0, limit;
	const char *cursor, *status = http_query(c->rq, "status"),
	                    *since = http_query(c->rq, "since");
	int st = -1;
	int64_t since_t = 0;
	if (!(s = api_load_sub(c)) || api_paging(c, "dlv_", &limit, &cursor))
		goto out;
	if (status && *status &&
	    (st = api_name_index(dlv_status_names, COUNTOF(dlv_status_names), status)) < 0) {
		api_fail(c, LH_EINVAL, "invalid_value", "status",
		         "'status' must be pending, delivered, failed or cancelled");
		goto out;
	}
	if (since && *since && util_parse_time(since, &since_t) != 0) {
		api_fail(c, LH_EINVAL, "invalid_value", "since",
		         "'since' must be an RFC 3339 time or Unix seconds");
		goto out;
	}
	enum lh_err e = c->app->store->ops->delivery_list(c->app->store, c->acct.client_id, s->id,
	                                                  st, since_t, cursor, limit, &list, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list deliveries");
		goto out;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, delivery_json(c, &list[i]));
	api_ok(c, "ok",
	       json_pack("{s:o, s:s?}", "deliveries", arr, "nextCursor",
	                 n == limit ? list[n - 1].delivery_id : NULL));
out:
	free(list);
	free(s);
}

void api_delivery_retry(struct call *c)
{
	struct delivery d;
	enum lh_err e = c->app->store->ops->delivery_requeue(c->app->store, c->acct.client_id,
	                                                     c->arg[0], util_now_ms(), &d);
	if (e == LH_ENOTFOUND) {
		api_fail(c, e, "delivery_not_found", NULL,
		         "no delivery with this id (or its subscription was deleted)");
		return;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "retry delivery");
		return;
	}
	api_ok(c, "Delivery queued", json_pack("{s:o}", "delivery", delivery_json(c, &d)));
}

void api_sub_recover(struct call *c)
{
	static const struct field_spec spec[] = {{"since", F_STRING, 1, 40, 0}};
	struct subscription *s = NULL;
	struct delivery *list = NULL;
	size_t n = 0;
	int64_t since;
	json_t *b = NULL;
	if (!(b = api_body(c, spec, COUNTOF(spec))) || !(s = api_load_sub(c)))
		goto out;
	if (util_parse_time(json_string_value(json_object_get(b, "since")), &since) != 0) {
		api_fail(c, LH_EINVAL, "invalid_value", "since",
		         "'since' must be an RFC 3339 time such as 2026-01-20T00:00:00Z");
		goto out;
	}
	enum lh_err e = c->app->store->ops->delivery_recover(
	    c->app->store, c->acct.client_id, s->id, since, util_now_ms(), &list, &n);
	if (e != LH_OK) {
		api_fail_internal(c, e, "recover");
		goto out;
	}
	api_ok(c, "Failed deliveries queued again", json_pack("{s:I}", "queued", (json_int_t)n));
out:
	free(list);
	free(s);
	json_decref(b);
}

void api_sub_test(struct call *c)
{
	struct subscription *s = api_load_sub(c);
	struct domain_outcome o;
	char event_id[ID_CAP];
	memset(&o, 0, sizeof o);
	if (s) {
		enum lh_err e = domain_test_event(c->app->store, s, event_id, &o);
		if (e == LH_ENOTFOUND) /* deleted meanwhile */
			api_fail(c, e, "not_found", NULL, "no such subscription");
		else if (e != LH_OK)
			api_fail_internal(c, e, "test event");
		else
			api_ok(c, "Test event queued", json_pack("{s:s}", "eventID", event_id));
	}
	free(s);
}
