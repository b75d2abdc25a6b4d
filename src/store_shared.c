/* store_shared.c: see store_shared.h. */
#include "store_shared.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void store_sub_apply(struct subscription *cur, const struct subscription *want, unsigned fields)
{
	if (fields & SUBF_EVENTS)
		cur->events = want->events;
	if (fields & SUBF_ENDPOINT)
		memcpy(cur->endpoint, want->endpoint, sizeof cur->endpoint);
	if (fields & SUBF_AUTH_TOKEN)
		memcpy(cur->auth_token, want->auth_token, sizeof cur->auth_token);
	if (fields & SUBF_STATUS) {
		if (want->status == SUB_ACTIVE && cur->status == SUB_DISABLED)
			cur->failing_since = 0; /* re-enabled: its failures start over */
		cur->status = want->status;
	}
	if (fields & SUBF_SECRET) {
		memcpy(cur->prev_secret, cur->secret, sizeof cur->prev_secret);
		memcpy(cur->secret, want->secret, sizeof cur->secret);
		cur->prev_secret_until = want->prev_secret_until;
	}
	cur->updated_at = want->updated_at;
}

void store_delivery_new(struct delivery *d, const struct event *ev, const char *delivery_id,
                        const char *sub_id, int64_t seq)
{
	memset(d, 0, sizeof *d);
	snprintf(d->delivery_id, sizeof d->delivery_id, "%s", delivery_id);
	snprintf(d->event_id, sizeof d->event_id, "%s", ev->event_id);
	snprintf(d->sub_id, sizeof d->sub_id, "%s", sub_id);
	snprintf(d->entity_id, sizeof d->entity_id, "%s", ev->entity_id);
	d->event_seq = seq;
	d->event_type = ev->type;
	d->status = DLV_PENDING;
	d->next_at_ms = ev->created_at * 1000;
	d->created_at = ev->created_at;
}

enum lh_err store_fresh_delivery(struct store_writer *w, struct delivery *d, const char *payload)
{
	size_t plen = payload ? strlen(payload) : 0;
	d->payload = NULL;
	if (payload && plen <= DELIVERY_PAYLOAD_INLINE && (d->payload = malloc(plen + 1)))
		memcpy(d->payload, payload, plen + 1);
	enum lh_err e = writer_fresh_push(w, d);
	if (e != LH_OK) {
		free(d->payload);
		d->payload = NULL;
	}
	return e;
}

/* ---- moving a store ---- */

/* clang-format off */
#define TXT(n)   {n, STORE_COL_TEXT}
#define INT(n)   {n, STORE_COL_INT}
#define BYTES(n) {n, STORE_COL_BYTES}
#define TABLE(name, cols, nkey) {name, cols, COUNTOF(cols), nkey}

static const struct store_col meta_cols[] = {TXT("key"), TXT("value")};
static const struct store_col account_cols[] = {
    TXT("client_id"), TXT("name"), INT("mode"), BYTES("secret_hash"), INT("secret_version"),
    INT("created_at")};
static const struct store_col lab_cols[] = {
    TXT("lab_id"), TXT("client_id"), TXT("name"), INT("created_at")};
static const struct store_col party_cols[] = {
    TXT("party_id"), TXT("client_id"), INT("kind"), TXT("name"), INT("created_at")};
static const struct store_col refresh_cols[] = {
    BYTES("hash"), TXT("client_id"), TXT("family"), INT("state"), INT("expires_at")};
static const struct store_col sub_cols[] = {
    TXT("sub_id"), TXT("client_id"), TXT("lab_id"), TXT("party_id"), INT("party_kind"),
    INT("events"), TXT("endpoint"), TXT("auth_token"), INT("status"), TXT("secret"),
    TXT("prev_secret"), INT("prev_secret_until"), INT("created_at"), INT("updated_at"),
    INT("failing_since")};
static const struct store_col sub_event_cols[] = {
    TXT("sub_id"), INT("event"), TXT("lab_id"), TXT("party_id")};
/* A bill without a bar code has NULL: PostgreSQL's unique (lab, bar code) index is partial
 * on NOT NULL, so an empty text there would collide with the next bill without one. */
static const struct store_col bill_cols[] = {
    TXT("bill_id"), TXT("client_id"), TXT("lab_id"), TXT("integrator_id"),
    TXT("pre_booking_id"), {"bar_code", STORE_COL_TEXT_NULL}, TXT("lead_source"),
    INT("status"), TXT("corporate_user"), TXT("referred_org"), TXT("referred_hospital_org"),
    TXT("patient"), INT("created_at"), INT("updated_at")};
static const struct store_col report_cols[] = {
    TXT("report_id"), TXT("bill_id"), INT("seq"), TXT("name"), TXT("package"), INT("status"),
    INT("completed_at")};
static const struct store_col lead_cols[] = {
    TXT("lead_id"), TXT("client_id"), TXT("lab_id"), TXT("integrator_id"), INT("phase"),
    TXT("contact"), TXT("email"), TXT("day"), TXT("booking_id"), TXT("corporate_user"),
    TXT("referred_org"), TXT("referred_hospital_org"), TXT("data"), INT("created_at")};
static const struct store_col booking_cols[] = {
    TXT("booking_id"), TXT("lead_id"), TXT("client_id"), TXT("lab_id"), TXT("integrator_id"),
    TXT("booking_type"), TXT("scheduled_at"), TXT("corporate_user"), TXT("referred_org"),
    TXT("referred_hospital_org"), INT("created_at")};
static const struct store_col event_cols[] = {
    INT("seq"), TXT("event_id"), TXT("client_id"), TXT("lab_id"), INT("type"),
    TXT("entity_id"), TXT("payload"), INT("created_at")};
static const struct store_col delivery_cols[] = {
    TXT("delivery_id"), TXT("event_id"), INT("event_seq"), INT("event_type"), TXT("sub_id"),
    TXT("entity_id"), INT("status"), INT("attempts"), INT("next_at"), TXT("last_error"),
    INT("created_at"), INT("updated_at")};
static const struct store_col attempt_cols[] = {
    TXT("delivery_id"), INT("n"), INT("started_at"), INT("duration_ms"), INT("status_code"),
    TXT("error"), TXT("response")};
static const struct store_col report_doc_cols[] = {
    TXT("bill_id"), TXT("report_id"), TXT("content_type"), INT("size"), BYTES("sha256"),
    INT("version"), INT("updated_at")};
static const struct store_col report_chunk_cols[] = {
    TXT("bill_id"), TXT("report_id"), INT("n"), BYTES("data")};

static const struct store_col catalog_item_cols[] = {
    TXT("lab_id"), INT("kind"), TXT("item_id"), TXT("name"), INT("price"), INT("updated_at")};
static const struct store_col catalog_member_cols[] = {
    TXT("lab_id"), TXT("package_id"), INT("seq"), TXT("test_id")};
static const struct store_col catalog_rate_cols[] = {
    TXT("lab_id"), INT("kind"), TXT("item_id"), TXT("party_id"), INT("price")};

/* Referenced rows first: accounts before what belongs to them, subscriptions before their
 * events, bills before reports, events before deliveries before attempts. */
const struct store_table store_copy_tables[STORE_COPY_NTABLES] = {
    TABLE("meta", meta_cols, 1),
    TABLE("accounts", account_cols, 1),
    TABLE("labs", lab_cols, 1),
    TABLE("parties", party_cols, 1),
    TABLE("refresh_tokens", refresh_cols, 1),
    TABLE("subscriptions", sub_cols, 1),
    TABLE("subscription_events", sub_event_cols, 2),
    TABLE("bills", bill_cols, 1),
    TABLE("reports", report_cols, 1),
    TABLE("leads", lead_cols, 1),
    TABLE("bookings", booking_cols, 1),
    TABLE("events", event_cols, 1),
    TABLE("deliveries", delivery_cols, 1),
    TABLE("attempts", attempt_cols, 2),
    TABLE("report_documents", report_doc_cols, 2),
    TABLE("report_chunks", report_chunk_cols, 3),
    TABLE("catalog_items", catalog_item_cols, 3),
    TABLE("catalog_members", catalog_member_cols, 3),
    TABLE("catalog_rates", catalog_rate_cols, 4),
};
/* clang-format on */

enum lh_err store_copy_value(size_t table, size_t col, struct store_val *v)
{
	const struct store_table *t = &store_copy_tables[table];
	const struct store_col *c = &t->cols[col];
	const char *why = NULL;
	char *end = NULL;

	/* "" and NULL are the same bar code: NULL, outside the unique rule. */
	if (c->kind == STORE_COL_TEXT_NULL && v->kind != STORE_VAL_NULL && v->len == 0)
		v->kind = STORE_VAL_NULL;
	if (v->kind == STORE_VAL_NULL) {
		if (c->kind != STORE_COL_TEXT_NULL)
			why = "NULL";
	} else if (c->kind == STORE_COL_BYTES) {
		v->kind = STORE_VAL_BYTES;
	} else if (memchr(v->p, '\0', v->len)) {
		why = "text with a NUL byte"; /* and so no number either */
	} else {
		v->kind = STORE_VAL_TEXT; /* text and numbers are NUL-terminated (store.h) */
		if (c->kind == STORE_COL_INT) {
			errno = 0;
			(void)strtoll(v->p, &end, 10);
			if (!v->len || errno != 0 || *end != '\0')
				why = "not an integer";
		}
	}
	if (why) {
		LOG(LOG_ERROR, "store", "table=%s column=%s value is %s: cannot copy it", t->name,
		    c->name, why);
		return LH_EINVAL;
	}
	return LH_OK;
}

void store_copy_names(const struct store_table *t, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", t->cols[i].name);
	assert(o < cap);
}

enum lh_err store_copy_columns(size_t table, size_t ncols)
{
	const struct store_table *t = &store_copy_tables[table];
	if (ncols == t->ncols)
		return LH_OK;
	LOG(LOG_ERROR, "store",
	    "table=%s columns=%zu known=%zu the table has columns the copy does not name"
	    " (store_copy_tables in store_shared.c): refusing to leave them out",
	    t->name, ncols, t->ncols);
	return LH_ESTORE;
}

enum lh_err store_copy_check(const int64_t exported[STORE_COPY_NTABLES],
                             const int64_t target[STORE_COPY_NTABLES])
{
	enum lh_err e = LH_OK;
	for (size_t i = 0; i < STORE_COPY_NTABLES; i++) {
		if (exported[i] == target[i])
			continue;
		LOG(LOG_ERROR, "store",
		    "table=%s exported=%" PRId64 " target=%" PRId64
		    " the counts differ: the copy is rolled back",
		    store_copy_tables[i].name, exported[i], target[i]);
		e = LH_ESTORE;
	}
	return e;
}

enum lh_err store_copy_refuse(size_t table, int64_t rows)
{
	LOG(LOG_ERROR, "store",
	    "table=%s rows=%" PRId64 " the target store is not empty: a copy goes only into a"
	    " new store (nothing was changed)",
	    store_copy_tables[table].name, rows);
	return LH_ECONFLICT;
}

void store_sweep_advance(struct retention_cursor *cur, size_t n, size_t batch, const char *id,
                         int64_t seq, int64_t created_at, int64_t before)
{
	int end = n < batch || created_at >= before;
	assert(!cur->done && n <= batch);
	if (!cur->events) {
		if (n > 0)
			snprintf(cur->delivery_id, sizeof cur->delivery_id, "%s", id);
		cur->events = end;
		return;
	}
	if (n > 0)
		cur->event_seq = seq;
	cur->done = end;
}

enum lh_err store_sweep_submit(struct store *s, store_tx_fn job, int64_t before, size_t batch,
                               struct retention_cursor *cur, size_t *removed)
{
	struct store_sweep_job j = {.before = before, .batch = batch, .cur = *cur};
	if (batch == 0 || cur->done)
		return LH_EINVAL;
	enum lh_err e = s->ops->submit(s, job, &j);
	if (e == LH_OK) {
		*cur = j.cur;
		*removed = j.removed;
	}
	return e;
}
