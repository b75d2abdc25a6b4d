/* test_store.c: the store contract suite, written against store.h only, so every backend
 * runs the same checks (today: SQLite in a temporary directory). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "events.h"
#include "store_sqlite.h"

struct fixture {
	char dir[64];
	struct store *st;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/labhook-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(store_sqlite_open(f->dir, &f->st), LH_OK);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	f->st->ops->close(f->st);
	snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void make_account(struct store *st, const char *id, struct account *a)
{
	memset(a, 0, sizeof *a);
	snprintf(a->client_id, sizeof a->client_id, "%s", id);
	snprintf(a->name, sizeof a->name, "name-%s", id);
	memset(a->secret_hash, 0x11, 32);
	a->secret_version = 1;
	a->created_at = 1700000000;
	assert_int_equal(st->ops->account_insert(st, a), LH_OK);
}

static void make_lab(struct store *st, const char *client, const char *id)
{
	struct lab l;
	memset(&l, 0, sizeof l);
	snprintf(l.lab_id, sizeof l.lab_id, "%s", id);
	snprintf(l.client_id, sizeof l.client_id, "%s", client);
	snprintf(l.name, sizeof l.name, "lab");
	assert_int_equal(st->ops->lab_insert(st, &l), LH_OK);
}

static void make_sub(struct subscription *s, const char *id, const char *lab, unsigned events)
{
	memset(s, 0, sizeof *s);
	snprintf(s->id, sizeof s->id, "%s", id);
	snprintf(s->client_id, sizeof s->client_id, "cl_A");
	snprintf(s->lab_id, sizeof s->lab_id, "%s", lab);
	snprintf(s->endpoint, sizeof s->endpoint, "https://x.example.com/%s", id);
	snprintf(s->secret, sizeof s->secret, "whsec_x");
	s->events = events;
	s->status = SUB_ACTIVE;
}

/* Two changes made from the same stale copy (a PATCH and a rotation racing) both stay:
 * each writes only its fields, and a rotation keeps the secret it replaces. */
static void test_sub_update_changes_only_its_fields(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s1, patch, rot, got;
	unsigned bc = 1u << EV_BILL_CREATED, bd = 1u << EV_BILL_DELETED;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_sub(&s1, "sub_1", "lab_1", bc);
	snprintf(s1.auth_token, sizeof s1.auth_token, "tok-0");
	assert_int_equal(st->ops->sub_insert(st, &s1), LH_OK);
	patch = rot = s1; /* both read before either writes */
	snprintf(rot.secret, sizeof rot.secret, "whsec_new");
	rot.prev_secret_until = 5000;
	assert_int_equal(st->ops->sub_update(st, &rot, SUBF_SECRET, &got), LH_OK);
	assert_string_equal(got.secret, "whsec_new");
	assert_string_equal(got.prev_secret, "whsec_x");
	assert_int_equal(got.prev_secret_until, 5000);
	snprintf(patch.endpoint, sizeof patch.endpoint, "https://y.example.com/");
	snprintf(patch.auth_token, sizeof patch.auth_token, "tok-1");
	patch.events = bc | bd;
	assert_int_equal(st->ops->sub_update(st, &patch, SUBF_ENDPOINT | SUBF_EVENTS, &got), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &got), LH_OK);
	assert_string_equal(got.secret, "whsec_new"); /* the rotation stayed */
	assert_string_equal(got.prev_secret, "whsec_x");
	assert_string_equal(got.endpoint, "https://y.example.com/");
	assert_string_equal(got.auth_token, "tok-0"); /* not named: not written */
	assert_int_equal(got.events, bc | bd);
	/* A second rotation from a stale copy keeps the first one's secret as the previous. */
	snprintf(rot.secret, sizeof rot.secret, "whsec_newer");
	assert_int_equal(st->ops->sub_update(st, &rot, SUBF_SECRET, NULL), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &got), LH_OK);
	assert_string_equal(got.secret, "whsec_newer");
	assert_string_equal(got.prev_secret, "whsec_new");
	/* Another client's id, or a deleted one: not found, and out untouched. */
	snprintf(rot.client_id, sizeof rot.client_id, "cl_B");
	memset(&got, 0x5a, sizeof got);
	assert_int_equal(st->ops->sub_update(st, &rot, SUBF_SECRET, &got), LH_ENOTFOUND);
	assert_int_equal((unsigned char)got.id[0], 0x5a);
}

static void test_accounts(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a, got, *list = NULL;
	size_t n = 99;
	unsigned char h2[32];

	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	assert_int_equal(st->ops->account_insert(st, &a), LH_ECONFLICT); /* same id twice */
	memset(&got, 0x5a, sizeof got);
	assert_int_equal(st->ops->account_get(st, "cl_NONE", &got), LH_ENOTFOUND);
	assert_int_equal((unsigned char)got.name[0], 0x5a); /* untouched on failure */
	assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_OK);
	assert_string_equal(got.name, "name-cl_A");
	assert_int_equal(st->ops->account_list(st, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].client_id, "cl_A");
	free(list);
	assert_int_equal(st->ops->account_list(st, "cl_A", 10, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].client_id, "cl_B");
	free(list);
	memset(h2, 0x22, 32);
	assert_int_equal(st->ops->account_set_secret(st, "cl_A", h2, &got), LH_OK);
	assert_int_equal(got.secret_version, 2);
	assert_memory_equal(got.secret_hash, h2, 32);
	/* Reads after a change see it (cl_A was read, and may be cached, before). */
	assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_OK);
	assert_int_equal(got.secret_version, 2);
	assert_int_equal(st->ops->account_set_secret(st, "cl_NONE", h2, &got), LH_ENOTFOUND);
	assert_int_equal(st->ops->account_set_mode(st, "cl_A", MODE_PARTY_SCOPED, &got), LH_OK);
	assert_int_equal(got.mode, MODE_PARTY_SCOPED);
	memset(&got, 0, sizeof got);
	assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_OK);
	assert_int_equal(got.mode, MODE_PARTY_SCOPED);
}

static void test_labs_scoped_to_account(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct lab l;

	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	make_lab(st, "cl_A", "lab_1");
	assert_int_equal(st->ops->lab_get(st, "cl_A", "lab_1", &l), LH_OK);
	assert_int_equal(st->ops->lab_get(st, "cl_B", "lab_1", &l), LH_ENOTFOUND);
	/* A lab must belong to an existing account (foreign keys are on). */
	memset(&l, 0, sizeof l);
	snprintf(l.lab_id, sizeof l.lab_id, "lab_2");
	snprintf(l.client_id, sizeof l.client_id, "cl_GHOST");
	assert_int_not_equal(st->ops->lab_insert(st, &l), LH_OK);
}

static void test_refresh_rotation(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	unsigned char t1[32], t2[32], t3[32];
	enum refresh_result r = REFRESH_OK;

	make_account(st, "cl_A", &a);
	memset(t1, 1, 32);
	memset(t2, 2, 32);
	memset(t3, 3, 32);
	assert_int_equal(st->ops->refresh_insert(st, t1, "cl_A", "fam1", 2000), LH_OK);
	/* Wrong client: unknown, and the token is not consumed. */
	assert_int_equal(st->ops->refresh_rotate(st, t1, "cl_B", 1000, t2, 3000, &r), LH_OK);
	assert_int_equal(r, REFRESH_UNKNOWN);
	assert_int_equal(st->ops->refresh_rotate(st, t1, "cl_A", 1000, t2, 3000, &r), LH_OK);
	assert_int_equal(r, REFRESH_OK);
	/* Replay of t1 revokes the family, t2 included. */
	assert_int_equal(st->ops->refresh_rotate(st, t1, "cl_A", 1000, t3, 3000, &r), LH_OK);
	assert_int_equal(r, REFRESH_REUSED);
	assert_int_equal(st->ops->refresh_rotate(st, t2, "cl_A", 1000, t3, 3000, &r), LH_OK);
	assert_int_not_equal(r, REFRESH_OK);
	/* Expiry. */
	assert_int_equal(st->ops->refresh_insert(st, t3, "cl_A", "fam2", 500), LH_OK);
	assert_int_equal(st->ops->refresh_rotate(st, t3, "cl_A", 1000, t1, 3000, &r), LH_OK);
	assert_int_equal(r, REFRESH_EXPIRED);
}

static void test_one_live_subscription_per_event(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s1, s2, got, *list = NULL;
	size_t n = 0;
	unsigned bc = 1u << EV_BILL_CREATED, bd = 1u << EV_BILL_DELETED;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_A", "lab_2");
	make_sub(&s1, "sub_1", "lab_1", bc | bd);
	assert_int_equal(st->ops->sub_insert(st, &s1), LH_OK);
	make_sub(&s2, "sub_2", "lab_1", bd);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_ECONFLICT);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_2", &got), LH_ENOTFOUND); /* atomic */
	/* Same event, other lab or other party: fine. */
	make_sub(&s2, "sub_2", "lab_2", bd);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	make_sub(&s2, "sub_3", "lab_1", bd);
	snprintf(s2.party_id, sizeof s2.party_id, "cu_1");
	s2.party_kind = PARTY_CORPORATE_USER;
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	assert_int_equal(st->ops->sub_list_holding(st, "lab_1", "", bd, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].id, "sub_1");
	free(list);
	/* A paused subscription still holds its events; a deleted one frees them. */
	s1.status = SUB_PAUSED;
	assert_int_equal(st->ops->sub_update(st, &s1, SUBF_STATUS, NULL), LH_OK);
	make_sub(&s2, "sub_4", "lab_1", bc);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_ECONFLICT);
	s1.status = SUB_DELETED;
	assert_int_equal(st->ops->sub_update(st, &s1, SUBF_STATUS, NULL), LH_OK);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &got), LH_ENOTFOUND);
	/* deleted stays deleted */
	assert_int_equal(st->ops->sub_update(st, &s1, SUBF_STATUS, NULL), LH_ENOTFOUND);
	/* Listing: filters and paging. */
	assert_int_equal(st->ops->sub_list(st, "cl_A", "", -1, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 3);
	free(list);
	assert_int_equal(st->ops->sub_list(st, "cl_A", "lab_2", -1, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	free(list);
	assert_int_equal(st->ops->sub_list(st, "cl_A", "", -1, "sub_2", 1, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].id, "sub_3");
	free(list);
}

/* ---- the outbox: asynchronous submits, the commit hook, pending pages ---- */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	enum lh_err result;
};

static void on_done(void *arg, enum lh_err result)
{
	struct waiter *w = arg;
	pthread_mutex_lock(&w->mu);
	w->calls++;
	w->result = result;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static enum lh_err wait_done(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	while (!w->calls)
		pthread_cond_wait(&w->cv, &w->mu);
	enum lh_err e = w->result;
	pthread_mutex_unlock(&w->mu);
	return e;
}

struct event_job {
	const char *entity, *payload;
	enum lh_err then; /* returned after writing: an error undoes the job */
	const char *lab;  /* NULL: lab_1 */
	const char *only; /* a delivery to this subscription alone (as test events), or NULL */
};

static enum lh_err job_event(struct store_tx *tx, void *arg)
{
	struct event_job *j = arg;
	struct event ev;
	size_t n = 0;
	memset(&ev, 0, sizeof ev);
	assert_int_equal(util_new_id("evt_", ev.event_id), LH_OK);
	snprintf(ev.client_id, sizeof ev.client_id, "cl_A");
	snprintf(ev.lab_id, sizeof ev.lab_id, "%s", j->lab ? j->lab : "lab_1");
	snprintf(ev.entity_id, sizeof ev.entity_id, "%s", j->entity);
	ev.type = EV_BILL_CREATED;
	ev.payload = j->payload;
	ev.created_at = 1700000000;
	enum lh_err e = tx->ops->event_insert(tx, &ev, NULL, 0, j->only, &n);
	if (e != LH_OK)
		return e;
	assert_int_equal(n, 1);
	return j->then;
}

static struct delivery hooked[4];
static size_t nhooked;

static void on_commit(void *ctx, struct delivery *d, size_t n)
{
	(void)ctx;
	for (size_t i = 0; i < n && nhooked < 4; i++)
		hooked[nhooked++] = d[i]; /* takes the payloads */
}

/* Account cl_A, its lab_1 with sub_1 for bill.created, and on_commit as the commit hook. */
static void outbox_setup(struct store *st)
{
	struct account a;
	struct subscription s;
	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	nhooked = 0;
	st->ops->set_commit_hook(st, on_commit, NULL);
}

static void test_async_submit_and_outbox(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL;
	size_t n = 0;
	struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};

	outbox_setup(st);

	/* Done once, durable by then, and the hook was handed the delivery with its payload. */
	struct event_job ok = {"bill_1", "{\"n\":1}", LH_OK, NULL, NULL};
	st->ops->submit_async(st, job_event, &ok, on_done, &w);
	assert_int_equal(wait_done(&w), LH_OK);
	assert_int_equal(w.calls, 1);
	assert_int_equal(nhooked, 1);
	assert_string_equal(hooked[0].sub_id, "sub_1");
	assert_non_null(hooked[0].payload);
	assert_string_equal(hooked[0].payload, "{\"n\":1}");
	free(hooked[0].payload);

	/* A job that fails is undone, alone, and its delivery never reaches the hook. */
	struct event_job bad = {"bill_2", "{\"n\":2}", LH_ECONFLICT, NULL, NULL};
	w.calls = 0;
	st->ops->submit_async(st, job_event, &bad, on_done, &w);
	assert_int_equal(wait_done(&w), LH_ECONFLICT);
	assert_int_equal(nhooked, 1);

	/* Pending pages come with payloads. */
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(page[0].entity_id, "bill_1");
	assert_non_null(page[0].payload);
	assert_string_equal(page[0].payload, "{\"n\":1}");
	free(page[0].payload);
	free(page);
	st->ops->set_commit_hook(st, NULL, NULL);
}

static size_t pending_count(struct store *st);

/* A subscription deleted after the caller loaded it (the API reads it, then submits): a
 * delivery to it alone (a test event) is refused inside the transaction, and its failed
 * deliveries are not recovered, since the delete has already cancelled what was pending
 * and nothing would ever settle them. */
static void test_deleted_subscription_takes_no_deliveries(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL, *list = NULL;
	struct subscription s;
	size_t n = 0;
	struct event_job j = {"test_1", "{}", LH_OK, NULL, "sub_1"};

	outbox_setup(st);
	assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	struct delivery_result r;
	memset(&r, 0, sizeof r);
	snprintf(r.a.delivery_id, sizeof r.a.delivery_id, "%s", page[0].delivery_id);
	snprintf(r.a.error, sizeof r.a.error, "http_500");
	snprintf(r.sub_id, sizeof r.sub_id, "sub_1");
	r.a.n = 1;
	r.a.status_code = 500;
	r.status = DLV_FAILED;
	r.now = 1700000000;
	free(page[0].payload);
	free(page);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);

	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	s.status = SUB_DELETED;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, NULL), LH_OK);

	assert_int_equal(st->ops->submit(st, job_event, &j), LH_ENOTFOUND);
	assert_int_equal(
	    st->ops->delivery_recover(st, "cl_A", "sub_1", 0, 1700000001000LL, &list, &n), LH_OK);
	assert_int_equal(n, 0);
	free(list);
	assert_int_equal(pending_count(st), 0);
	st->ops->set_commit_hook(st, NULL, NULL);
	for (size_t i = 0; i < nhooked; i++)
		free(hooked[i].payload);
}

/* The engine reads each subscription's backlog on its own (fairness): pending deliveries of
 * one subscription only, in event order, past a frontier; and which subscriptions have any. */
static void test_pending_per_subscription(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s1, s2;
	struct delivery *page = NULL;
	struct sub_ref *subs = NULL;
	size_t n = 0;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_A", "lab_2");
	make_sub(&s1, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	make_sub(&s2, "sub_2", "lab_2", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	assert_int_equal(st->ops->sub_insert(st, &s1), LH_OK);

	assert_int_equal(st->ops->delivery_pending_subs(st, &subs, &n), LH_OK);
	assert_int_equal(n, 0);
	free(subs);

	/* Interleaved: sub_1 gets a, c, e; sub_2 gets b, d. */
	const char *ent[] = {"a", "b", "c", "d", "e"};
	for (size_t i = 0; i < 5; i++) {
		struct event_job j = {ent[i], "{}", LH_OK, i % 2 ? "lab_2" : "lab_1", NULL};
		assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	}
	assert_int_equal(st->ops->delivery_pending_subs(st, &subs, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(subs[0].sub_id, "sub_1");
	assert_string_equal(subs[1].sub_id, "sub_2");
	free(subs);

	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(page[i].sub_id, "sub_1");
		assert_string_equal(page[i].entity_id, ent[2 * i]);
		assert_true(i == 0 || page[i].event_seq > page[i - 1].event_seq);
		free(page[i].payload);
	}
	int64_t first = page[0].event_seq, last = page[2].event_seq;
	free(page);
	/* Past a frontier, at most limit. */
	assert_int_equal(st->ops->delivery_pending(st, first, "sub_1", 1, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(page[0].entity_id, "c");
	free(page[0].payload);
	free(page);
	assert_int_equal(st->ops->delivery_pending(st, last, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 0);
	free(page);

	/* Once sub_2's deliveries are delivered it has no backlog. */
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_2", 10, &page, &n), LH_OK);
	assert_int_equal(n, 2);
	struct delivery_result r[2];
	memset(r, 0, sizeof r);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(page[i].entity_id, ent[2 * i + 1]);
		snprintf(r[i].a.delivery_id, sizeof r[i].a.delivery_id, "%s", page[i].delivery_id);
		r[i].a.n = 1;
		r[i].a.status_code = 200;
		r[i].status = DLV_DELIVERED;
		snprintf(r[i].sub_id, sizeof r[i].sub_id, "sub_2");
		r[i].now = 1700000000;
		free(page[i].payload);
	}
	free(page);
	assert_int_equal(st->ops->delivery_record(st, r, 2), LH_OK);
	assert_int_equal(st->ops->delivery_pending_subs(st, &subs, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(subs[0].sub_id, "sub_1");
	free(subs);
}

static enum lh_err job_many_parties(struct store_tx *tx, void *arg)
{
	static const char *const parties[STORE_MAX_PARTIES + 1] = {"p1", "p2", "p3", "p4",
	                                                           "p5", "p6", "p7", "p8"};
	struct event ev;
	size_t n = 0;
	(void)arg;
	memset(&ev, 0, sizeof ev);
	assert_int_equal(util_new_id("evt_", ev.event_id), LH_OK);
	snprintf(ev.client_id, sizeof ev.client_id, "cl_A");
	snprintf(ev.lab_id, sizeof ev.lab_id, "lab_1");
	snprintf(ev.entity_id, sizeof ev.entity_id, "bill_9");
	ev.type = EV_BILL_CREATED;
	ev.payload = "{}";
	return tx->ops->event_insert(tx, &ev, parties, STORE_MAX_PARTIES + 1, NULL, &n);
}

/* Party ids past the limit are an error, never silently not routed to. */
static void test_event_party_limit(void **state)
{
	struct fixture *f = *state;
	outbox_setup(f->st);
	assert_int_equal(f->st->ops->submit(f->st, job_many_parties, NULL), LH_EINVAL);
	assert_int_equal(pending_count(f->st), 0);
	f->st->ops->set_commit_hook(f->st, NULL, NULL);
}

static void test_meta_first_writer_wins(void **state)
{
	struct fixture *f = *state;
	char out[64];
	assert_int_equal(f->st->ops->meta_get_or_put(f->st, "k", "one", out, sizeof out), LH_OK);
	assert_string_equal(out, "one");
	assert_int_equal(f->st->ops->meta_get_or_put(f->st, "k", "two", out, sizeof out), LH_OK);
	assert_string_equal(out, "one");
}

static void test_reopen_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct account a, got;
	make_account(f->st, "cl_A", &a);
	f->st->ops->close(f->st);
	assert_int_equal(store_sqlite_open(f->dir, &f->st), LH_OK);
	assert_int_equal(f->st->ops->account_get(f->st, "cl_A", &got), LH_OK);
}

/* ---- injected I/O faults (through the backend's own fault VFS) ---- */

static int setup_faults(void **state)
{
	store_sqlite_fault_vfs(); /* every store opened from now on can be made to fail */
	return setup(state);
}

static int teardown_faults(void **state)
{
	store_sqlite_fault_set(STORE_FAULT_NONE);
	return teardown(state);
}

/* A job that holds the writer until opened, so the jobs queued meanwhile form one batch. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int entered, open;
	struct event_job ev;
};

static enum lh_err job_gated(struct store_tx *tx, void *arg)
{
	struct gate *g = arg;
	pthread_mutex_lock(&g->mu);
	g->entered = 1;
	pthread_cond_broadcast(&g->cv);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
	return job_event(tx, &g->ev);
}

/* Waits until the gate's job holds the writer. */
static void gate_wait(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	while (!g->entered)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static size_t pending_count(struct store *st)
{
	struct delivery *page = NULL;
	size_t n = 0;
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 100, &page, &n), LH_OK);
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	return n; /* the outbox tests have one subscription, sub_1 */
}

static void test_failed_commit_keeps_nothing(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account got;
	struct gate g = {PTHREAD_MUTEX_INITIALIZER,
	                 PTHREAD_COND_INITIALIZER,
	                 0,
	                 0,
	                 {"bill_0", "{\"n\":0}", LH_OK, NULL, NULL}};
	struct waiter wg = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};
	struct waiter w[3];
	struct event_job jobs[3] = {{"bill_1", "{\"n\":1}", LH_OK, NULL, NULL},
	                            {"bill_2", "{\"n\":2}", LH_OK, NULL, NULL},
	                            {"bill_3", "{\"n\":3}", LH_OK, NULL, NULL}};

	outbox_setup(st);

	/* The gate's batch, then the three queued behind it as one batch, all while the disk
	 * fails: each job is told the error, and nothing of any of them is kept. */
	st->ops->submit_async(st, job_gated, &g, on_done, &wg);
	gate_wait(&g);
	for (int i = 0; i < 3; i++) {
		w[i] =
		    (struct waiter){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};
		st->ops->submit_async(st, job_event, &jobs[i], on_done, &w[i]);
	}
	store_sqlite_fault_set(STORE_FAULT_IO);
	gate_open(&g);
	assert_int_equal(wait_done(&wg), LH_EDISK);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(wait_done(&w[i]), LH_EDISK);
		assert_int_equal(w[i].calls, 1);
	}
	assert_int_equal(err_http_status(LH_EDISK), 503);
	assert_int_equal(nhooked, 0); /* no delivery of a failed batch reaches the engine */

	/* Changes on the caller's thread fail the same way; reads go on. */
	assert_int_equal(st->ops->submit(st, job_event, &jobs[0]), LH_EDISK);
	struct lab l = {.lab_id = "lab_2", .client_id = "cl_A", .name = "two"};
	assert_int_equal(st->ops->lab_insert(st, &l), LH_EDISK);
	assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_OK);
	assert_int_equal(pending_count(st), 0);

	/* Fault cleared: the same store works again, with nothing left of the failures. */
	store_sqlite_fault_set(STORE_FAULT_NONE);
	assert_int_equal(st->ops->lab_insert(st, &l), LH_OK); /* the failed insert left nothing */
	assert_int_equal(st->ops->submit(st, job_event, &jobs[0]), LH_OK);
	assert_int_equal(nhooked, 1);
	assert_string_equal(hooked[0].entity_id, "bill_1");
	free(hooked[0].payload);
	assert_int_equal(pending_count(st), 1);
	st->ops->set_commit_hook(st, NULL, NULL);
}

static void test_full_disk_then_space_again(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a, b, got;
	char out[64];

	make_account(st, "cl_A", &a);
	store_sqlite_fault_set(STORE_FAULT_FULL);
	b = a;
	snprintf(b.client_id, sizeof b.client_id, "cl_B");
	assert_int_equal(st->ops->account_insert(st, &b), LH_EFULL);
	assert_int_equal(err_http_status(LH_EFULL), 503);
	assert_string_equal(err_code(LH_EFULL), "storage_full");
	assert_int_equal(st->ops->meta_get_or_put(st, "k", "v", out, sizeof out), LH_EFULL);
	assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_OK);
	assert_int_equal(st->ops->account_get(st, "cl_B", &got), LH_ENOTFOUND);

	store_sqlite_fault_set(STORE_FAULT_NONE);
	assert_int_equal(st->ops->account_insert(st, &b), LH_OK);
	assert_int_equal(st->ops->account_get(st, "cl_B", &got), LH_OK);
	/* And what was written survives a reopen next to what failed. */
	st->ops->close(st);
	assert_int_equal(store_sqlite_open(f->dir, &f->st), LH_OK);
	assert_int_equal(f->st->ops->account_get(f->st, "cl_B", &got), LH_OK);
}

/* Writes an event too large for the page cache with the disk failing: SQLite spills pages
 * in the middle of the statement, the write fails, and it rolls back the whole batch. */
static enum lh_err job_spill_failing(struct store_tx *tx, void *arg)
{
	struct event_job *j = arg;
	store_sqlite_fault_set(STORE_FAULT_IO);
	enum lh_err e = job_event(tx, j);
	store_sqlite_fault_set(STORE_FAULT_NONE);
	return e;
}

static void test_io_error_mid_batch_fails_every_job(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct gate g = {PTHREAD_MUTEX_INITIALIZER,
	                 PTHREAD_COND_INITIALIZER,
	                 0,
	                 0,
	                 {"bill_0", "{\"n\":0}", LH_OK, NULL, NULL}};
	struct waiter w[4];
	size_t big_len = (size_t)40 << 20; /* over the writer's 32 MiB page cache */
	char *big = malloc(big_len + 1);
	assert_non_null(big);
	memset(big, 'x', big_len);
	big[big_len] = '\0';
	struct event_job jobs[3] = {{"bill_1", "{\"n\":1}", LH_OK, NULL, NULL},
	                            {"bill_2", big, LH_OK, NULL, NULL},
	                            {"bill_3", "{\"n\":3}", LH_OK, NULL, NULL}};

	outbox_setup(st);
	for (int i = 0; i < 4; i++)
		w[i] =
		    (struct waiter){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};

	/* One batch: a job, the one whose write fails, and a job after it. */
	st->ops->submit_async(st, job_gated, &g, on_done, &w[3]);
	gate_wait(&g);
	st->ops->submit_async(st, job_event, &jobs[0], on_done, &w[0]);
	st->ops->submit_async(st, job_spill_failing, &jobs[1], on_done, &w[1]);
	st->ops->submit_async(st, job_event, &jobs[2], on_done, &w[2]);
	gate_open(&g);
	assert_int_equal(wait_done(&w[3]), LH_OK);
	free(hooked[0].payload);
	nhooked = 0;
	enum lh_err before = wait_done(&w[0]), failing = wait_done(&w[1]), after = wait_done(&w[2]);
	/* The job after the failure was not committed on its own (told it failed, yet kept). */
	assert_int_equal(pending_count(st), 1); /* the gate's, from the batch before */
	assert_int_equal(nhooked, 0);
	assert_int_equal(failing, LH_EDISK);
	assert_int_equal(before, LH_EDISK);
	assert_int_equal(after, LH_EDISK);

	/* And the writer goes on. */
	assert_int_equal(st->ops->submit(st, job_event, &jobs[2]), LH_OK);
	assert_int_equal(pending_count(st), 2);
	free(hooked[0].payload);
	st->ops->set_commit_hook(st, NULL, NULL);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_labs_scoped_to_account, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_one_live_subscription_per_event, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sub_update_changes_only_its_fields, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_async_submit_and_outbox, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deleted_subscription_takes_no_deliveries, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_pending_per_subscription, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_event_party_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_meta_first_writer_wins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_commit_keeps_nothing, setup_faults,
	                                    teardown_faults),
	    cmocka_unit_test_setup_teardown(test_full_disk_then_space_again, setup_faults,
	                                    teardown_faults),
	    cmocka_unit_test_setup_teardown(test_io_error_mid_batch_fails_every_job, setup_faults,
	                                    teardown_faults),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
