/* test_store.c: the store contract suite, written against store.h only, so every backend
 * runs the same checks. The backend comes from the environment: LABHOOK_TEST_STORE unset or
 * "sqlite" is SQLite in a temporary directory; a postgresql:// URI (or "pg", meaning
 * $LABHOOK_TEST_PG) is PostgreSQL, emptied before each test. Only the fixture knows which;
 * the few tests that need one backend's test hooks skip on the other. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "events.h"
#include "metrics.h"
#include "store_pg.h"
#include "store_sqlite.h"

struct fixture {
	char dir[64];   /* SQLite: the data directory */
	const char *pg; /* PostgreSQL: the database's URI; NULL on SQLite */
	struct store *st;
};

static const char *pg_uri(void)
{
	const char *v = getenv("LABHOOK_TEST_STORE");
	if (!v || !v[0] || strcmp(v, "sqlite") == 0)
		return NULL;
	return strcmp(v, "pg") == 0 ? getenv("LABHOOK_TEST_PG") : v;
}

/* The store outcome() takes its lease from: the last one opened. */
static struct store *lease_store;

/* Opens the backend under test on the fixture's database as it is (a reopen keeps data). */
static enum lh_err open_store(struct fixture *f, struct store **out)
{
	enum lh_err e = f->pg ? store_pg_open(f->pg, out) : store_sqlite_open(f->dir, out);
	if (e == LH_OK)
		lease_store = *out;
	return e;
}

/* A fresh delivery's payload as the contract has it: the event's on a one-node store (its
 * engine sends from memory), none on a shared one (its engine reads fresh deliveries back
 * in seq order, so the store copies nothing). */
static void check_fresh_payload(struct store *st, const struct delivery *d, const char *want)
{
	struct lease *l = NULL;
	size_t n = 0, share = 0;
	int all = 0;
	int64_t expiry = 0;
	assert_int_equal(st->ops->lease_sync(st, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	free(l);
	if (all)
		assert_string_equal(d->payload, want);
	else
		assert_null(d->payload);
}

/* The epoch of this node's lease on sub_id, taking it if it is free (0 on a store that one
 * node owns: SQLite holds every subscription). */
static int64_t lease_epoch(struct store *st, const char *sub_id)
{
	struct lease *l = NULL;
	size_t n = 0, share = 0;
	int all = 0;
	int64_t epoch = -1, expiry = 0;
	assert_int_equal(st->ops->lease_sync(st, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	if (all)
		epoch = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].sub_id, sub_id) == 0)
			epoch = l[i].epoch;
	free(l);
	/* One node holds every live subscription; a deleted or disabled one has no lease to
	 * hold (0: no lease has that epoch, so the store refuses what is recorded under it). */
	return epoch < 0 ? 0 : epoch;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	if ((f->pg = pg_uri())) {
		assert_int_equal(store_pg_reset_for_tests(f->pg), LH_OK);
	} else {
		snprintf(f->dir, sizeof f->dir, "/tmp/labhook-store-XXXXXX");
		assert_non_null(mkdtemp(f->dir));
	}
	assert_int_equal(open_store(f, &f->st), LH_OK);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	f->st->ops->close(f->st);
	if (!f->pg) {
		snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
		assert_int_equal(system(cmd), 0);
	}
	free(f);
	return 0;
}

/* For the tests that use one backend's own test hooks. */
static void sqlite_only(const struct fixture *f)
{
	if (f->pg)
		skip();
}

static void pg_only(const struct fixture *f)
{
	if (!f->pg)
		skip();
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

static void on_commit(void *ctx, struct store_news *nw)
{
	(void)ctx;
	for (size_t i = 0; i < nw->nfresh; i++)
		if (nhooked < 4)
			hooked[nhooked++] = nw->fresh[i]; /* takes the payloads */
		else
			free(nw->fresh[i].payload);
}

static int hooked_has(const char *sub_id)
{
	int k = 0;
	for (size_t i = 0; i < nhooked; i++)
		k += strcmp(hooked[i].sub_id, sub_id) == 0;
	return k;
}

static void hooked_clear(void)
{
	for (size_t i = 0; i < nhooked; i++)
		free(hooked[i].payload);
	nhooked = 0;
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
	st->ops->submit_async(st, job_event, &ok, 0, on_done, &w);
	assert_int_equal(wait_done(&w), LH_OK);
	assert_int_equal(w.calls, 1);
	assert_int_equal(nhooked, 1);
	assert_string_equal(hooked[0].sub_id, "sub_1");
	check_fresh_payload(st, &hooked[0], "{\"n\":1}");
	free(hooked[0].payload);

	/* A job that fails is undone, alone, and its delivery never reaches the hook. */
	struct event_job bad = {"bill_2", "{\"n\":2}", LH_ECONFLICT, NULL, NULL};
	w.calls = 0;
	st->ops->submit_async(st, job_event, &bad, 0, on_done, &w);
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
	r.epoch = lease_epoch(st, "sub_1");
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
	hooked_clear();
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
		r[i].epoch = lease_epoch(st, "sub_2");
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
	/* meta_set replaces it (and sets a key that is not there yet). */
	assert_int_equal(f->st->ops->meta_set(f->st, "k", "three"), LH_OK);
	assert_int_equal(f->st->ops->meta_get_or_put(f->st, "k", "four", out, sizeof out), LH_OK);
	assert_string_equal(out, "three");
	assert_int_equal(f->st->ops->meta_set(f->st, "fresh", "five"), LH_OK);
	assert_int_equal(f->st->ops->meta_get_or_put(f->st, "fresh", "six", out, sizeof out),
	                 LH_OK);
	assert_string_equal(out, "five");
}

static void test_reopen_keeps_data(void **state)
{
	struct fixture *f = *state;
	struct account a, got;
	make_account(f->st, "cl_A", &a);
	f->st->ops->close(f->st);
	assert_int_equal(open_store(f, &f->st), LH_OK);
	assert_int_equal(f->st->ops->account_get(f->st, "cl_A", &got), LH_OK);
}

/* ---- injected I/O faults (through the backend's own fault VFS) ---- */

static int setup_faults(void **state)
{
	return setup(state); /* every SQLite store can be made to fail */
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

/* Runs jobs[0], failing(jobs[1]) and jobs[2] as one batch (queued behind a gated batch
 * of one event, which commits), submitted with flags, and gives their results. */
static void batch_around(struct store *st, store_tx_fn failing, struct event_job jobs[3],
                         unsigned flags, enum lh_err got[3])
{
	struct gate g = {PTHREAD_MUTEX_INITIALIZER,
	                 PTHREAD_COND_INITIALIZER,
	                 0,
	                 0,
	                 {"bill_0", "{\"n\":0}", LH_OK, NULL, NULL}};
	struct waiter w[4];
	for (int i = 0; i < 4; i++)
		w[i] =
		    (struct waiter){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};
	st->ops->submit_async(st, job_gated, &g, 0, on_done, &w[3]);
	gate_wait(&g);
	st->ops->submit_async(st, job_event, &jobs[0], flags, on_done, &w[0]);
	st->ops->submit_async(st, failing, &jobs[1], flags, on_done, &w[1]);
	st->ops->submit_async(st, job_event, &jobs[2], flags, on_done, &w[2]);
	gate_open(&g);
	assert_int_equal(wait_done(&w[3]), LH_OK);
	for (int i = 0; i < 3; i++) {
		got[i] = wait_done(&w[i]);
		assert_int_equal(w[i].calls, 1);
	}
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

	sqlite_only(f); /* the SQLite fault VFS */

	outbox_setup(st);

	/* The gate's batch, then the three queued behind it as one batch, all while the disk
	 * fails: each job is told the error, and nothing of any of them is kept. */
	st->ops->submit_async(st, job_gated, &g, 0, on_done, &wg);
	gate_wait(&g);
	for (int i = 0; i < 3; i++) {
		w[i] =
		    (struct waiter){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};
		st->ops->submit_async(st, job_event, &jobs[i], 0, on_done, &w[i]);
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

	sqlite_only(f); /* the SQLite fault VFS */

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
	assert_int_equal(open_store(f, &f->st), LH_OK);
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

/* Runs of job_event_counted: how often the writer ran a job. */
static int job_runs;

static enum lh_err job_event_counted(struct store_tx *tx, void *arg)
{
	job_runs++; /* only the writer thread runs jobs */
	return job_event(tx, arg);
}

/* Jobs that may run twice (STORE_JOB_RERUN) share a batch without a savepoint each: when
 * one fails, the batch is undone and run again with them, so the failure undoes only
 * itself, nothing is kept or handed to the engine twice, and each submitter is told once. */
static void test_rerun_batch_undoes_only_the_failure(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	enum lh_err got[3];
	struct event_job jobs[3] = {{"bill_1", "{\"n\":1}", LH_OK, NULL, NULL},
	                            {"bill_2", "{\"n\":2}", LH_ECONFLICT, NULL, NULL},
	                            {"bill_3", "{\"n\":3}", LH_OK, NULL, NULL}};

	outbox_setup(st);
	job_runs = 0;
	batch_around(st, job_event_counted, jobs, STORE_JOB_RERUN, got);
	assert_int_equal(got[0], LH_OK);
	assert_int_equal(got[1], LH_ECONFLICT);
	assert_int_equal(got[2], LH_OK);
	/* The failing job ran without a savepoint, then again with one. */
	assert_int_equal(job_runs, 2);
	assert_int_equal(pending_count(st), 3); /* the gated one, bill_1 and bill_3 */
	assert_int_equal(nhooked, 3);
	assert_int_equal(hooked_has("sub_1"), 3);
	int bills[4] = {0};
	for (size_t i = 0; i < nhooked; i++)
		bills[hooked[i].entity_id[5] - '0']++;
	assert_int_equal(bills[0], 1);
	assert_int_equal(bills[1], 1);
	assert_int_equal(bills[2], 0);
	assert_int_equal(bills[3], 1);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

static void test_io_error_mid_batch_fails_every_job(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	enum lh_err got[3];
	size_t big_len = (size_t)40 << 20; /* over the writer's 32 MiB page cache */
	sqlite_only(f);                    /* the SQLite fault VFS */
	char *big = malloc(big_len + 1);
	assert_non_null(big);
	memset(big, 'x', big_len);
	big[big_len] = '\0';
	struct event_job jobs[3] = {{"bill_1", "{\"n\":1}", LH_OK, NULL, NULL},
	                            {"bill_2", big, LH_OK, NULL, NULL},
	                            {"bill_3", "{\"n\":3}", LH_OK, NULL, NULL}};

	outbox_setup(st);
	/* One batch: a job, the one whose write fails, and a job after it. */
	batch_around(st, job_spill_failing, jobs, 0, got);
	/* The job after the failure was not committed on its own (told it failed, yet kept). */
	assert_int_equal(pending_count(st), 1); /* the gated one, from the batch before */
	assert_int_equal(nhooked, 1);
	hooked_clear();
	assert_int_equal(got[1], LH_EDISK);
	assert_int_equal(got[0], LH_EDISK);
	assert_int_equal(got[2], LH_EDISK);

	/* And the writer goes on. */
	assert_int_equal(st->ops->submit(st, job_event, &jobs[2]), LH_OK);
	assert_int_equal(pending_count(st), 2);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
	free(big);
}

/* ---- parties, labs ---- */

static void make_party(struct store *st, const char *client, const char *id, enum party_kind k)
{
	struct party p;
	memset(&p, 0, sizeof p);
	snprintf(p.party_id, sizeof p.party_id, "%s", id);
	snprintf(p.client_id, sizeof p.client_id, "%s", client);
	snprintf(p.name, sizeof p.name, "party %s", id);
	p.kind = k;
	p.created_at = 1700000001;
	assert_int_equal(st->ops->party_insert(st, &p), LH_OK);
}

static void test_parties_and_labs(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct party p, *plist = NULL;
	struct lab *llist = NULL;
	size_t n = 0;

	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	make_party(st, "cl_A", "cu_2", PARTY_CORPORATE_USER);
	make_party(st, "cl_A", "org_1", PARTY_ORGANIZATION);
	make_party(st, "cl_B", "cu_9", PARTY_CORPORATE_USER);
	memset(&p, 0, sizeof p);
	snprintf(p.party_id, sizeof p.party_id, "cu_2");
	snprintf(p.client_id, sizeof p.client_id, "cl_A");
	assert_int_equal(st->ops->party_insert(st, &p), LH_ECONFLICT);
	memset(&p, 0x5a, sizeof p);
	assert_int_equal(st->ops->party_get(st, "cl_B", "cu_2", &p), LH_ENOTFOUND);
	assert_int_equal((unsigned char)p.name[0], 0x5a);
	assert_int_equal(st->ops->party_get(st, "cl_A", "org_1", &p), LH_OK);
	assert_int_equal(p.kind, PARTY_ORGANIZATION);
	assert_string_equal(p.name, "party org_1");
	assert_int_equal(p.created_at, 1700000001);
	assert_int_equal(st->ops->party_list(st, "cl_A", &plist, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(plist[0].party_id, "cu_2");
	assert_string_equal(plist[1].party_id, "org_1");
	free(plist);
	assert_int_equal(st->ops->party_list(st, "cl_NONE", &plist, &n), LH_OK);
	assert_int_equal(n, 0);
	free(plist);

	make_lab(st, "cl_A", "lab_2");
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_B", "lab_3");
	assert_int_equal(st->ops->lab_list(st, "cl_A", &llist, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(llist[0].lab_id, "lab_1");
	assert_string_equal(llist[1].lab_id, "lab_2");
	assert_string_equal(llist[1].client_id, "cl_A");
	free(llist);
}

/* ---- a lab's catalog ---- */

static struct catalog_item cat_item(enum catalog_kind kind, const char *id, const char *name,
                                    int64_t price)
{
	struct catalog_item it;
	memset(&it, 0, sizeof it);
	snprintf(it.lab_id, sizeof it.lab_id, "lab_1");
	it.kind = kind;
	snprintf(it.id, sizeof it.id, "%s", id);
	snprintf(it.name, sizeof it.name, "%s", name);
	it.price = price;
	it.updated_at = 1700000400;
	return it;
}

static struct catalog_member cat_member(const char *pkg, const char *test)
{
	struct catalog_member m;
	memset(&m, 0, sizeof m);
	snprintf(m.package_id, sizeof m.package_id, "%s", pkg);
	snprintf(m.test_id, sizeof m.test_id, "%s", test);
	return m;
}

struct catalog_job {
	const char *lab;
	enum catalog_kind kind;
	const char *id;
	int any;
	struct catalog_item it;
	struct catalog_member *m;
	size_t n;
	enum lh_err got;
};

static enum lh_err job_catalog(struct store_tx *tx, void *arg)
{
	struct catalog_job *j = arg;
	enum lh_err e = tx->ops->catalog_any(tx, j->lab, &j->any);
	if (e == LH_OK)
		j->got = tx->ops->catalog_get(tx, j->lab, j->kind, j->id, &j->it, &j->m, &j->n);
	return e;
}

static void test_catalog(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct catalog_item *list = NULL;
	struct catalog_member *m = NULL;
	size_t n = 0, bad = 99;
	int64_t total = 0;
	char pkg[ID_CAP] = "";

	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_A", "lab_2");
	make_party(st, "cl_A", "cu_1", PARTY_CORPORATE_USER);
	make_party(st, "cl_A", "org_1", PARTY_ORGANIZATION);

	struct lab lab;
	assert_int_equal(st->ops->lab_find(st, "lab_2", &lab), LH_OK);
	assert_string_equal(lab.client_id, "cl_A");
	assert_int_equal(st->ops->lab_find(st, "lab_none", &lab), LH_ENOTFOUND);

	/* An empty catalog: nothing listed, and a bill's job sees none. */
	struct catalog_job j = {.lab = "lab_1", .kind = CATALOG_TEST, .id = "T1", .any = 7};
	assert_int_equal(st->ops->submit(st, job_catalog, &j), LH_OK);
	assert_int_equal(j.any, 0);
	assert_int_equal(j.got, LH_ENOTFOUND);

	struct catalog_item items[] = {
	    cat_item(CATALOG_TEST, "T2", "LDL \"quoted\"", 24950),
	    cat_item(CATALOG_TEST, "T1", "CBC", 35000),
	    cat_item(CATALOG_TEST, "T3", "HDL", 75),
	    cat_item(CATALOG_PACKAGE, "P1", "Lipid", 45000),
	};
	struct catalog_member members[] = {cat_member("P1", "T3"), cat_member("P1", "T2")};
	assert_int_equal(st->ops->catalog_put(st, "lab_1", items, 4, members, 2, &bad), LH_OK);
	assert_int_equal(bad, 99);

	/* A member naming a test that is not there: nothing of the put is kept. */
	struct catalog_item more[] = {cat_item(CATALOG_TEST, "T9", "new", 1),
	                              cat_item(CATALOG_PACKAGE, "P2", "P2", 2)};
	struct catalog_member bad_members[] = {cat_member("P2", "T9"), cat_member("P2", "T404")};
	assert_int_equal(st->ops->catalog_put(st, "lab_1", more, 2, bad_members, 2, &bad),
	                 LH_ENOTFOUND);
	assert_int_equal(bad, 1);

	/* Listing: by kind then id, a total, offset and limit. */
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_TEST, "", 0, 0, 2, &list, &n, &total),
	    LH_OK);
	assert_int_equal(n, 2);
	assert_int_equal(total, 3);
	assert_string_equal(list[0].id, "T1");
	assert_string_equal(list[1].id, "T2");
	assert_string_equal(list[1].name, "LDL \"quoted\"");
	assert_int_equal(list[1].price, 24950);
	assert_int_equal(list[1].party_price, -1);
	assert_int_equal(list[1].kind, CATALOG_TEST);
	free(list);
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_TEST, "", 0, 2, 2, &list, &n, &total),
	    LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].id, "T3");
	free(list);
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_2", CATALOG_ANY, "", 0, 0, 10, &list, &n, &total),
	    LH_OK);
	assert_int_equal(n, 0);
	assert_int_equal(total, 0);
	free(list);

	/* A package's tests, in the order put, with their names. */
	assert_int_equal(st->ops->catalog_members(st, "lab_1", "P1", "P1", &m, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(m[0].test_id, "T3");
	assert_string_equal(m[0].name, "HDL");
	assert_string_equal(m[1].test_id, "T2");
	free(m);

	/* Rates: per party; only items that exist; removing one that is not set is 404. */
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_TEST, "T1", "cu_1", 30000),
	                 LH_OK);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_TEST, "T1", "cu_1", 29000),
	                 LH_OK);
	assert_int_equal(
	    st->ops->catalog_rate_set(st, "lab_1", CATALOG_PACKAGE, "P1", "cu_1", 40000), LH_OK);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_TEST, "T2", "org_1", 0),
	                 LH_OK);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_TEST, "T404", "cu_1", 1),
	                 LH_ENOTFOUND);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_PACKAGE, "T1", "cu_1", 1),
	                 LH_ENOTFOUND);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_1", CATALOG_TEST, "T3", "cu_1", -1),
	                 LH_ENOTFOUND);
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_TEST, "cu_1", 0, 0, 10, &list, &n, &total),
	    LH_OK);
	assert_int_equal(n, 3);
	assert_int_equal(list[0].party_price, 29000);
	assert_int_equal(list[0].price, 35000);
	assert_int_equal(list[1].party_price, -1);
	free(list);
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_ANY, "cu_1", 1, 0, 10, &list, &n, &total),
	    LH_OK);
	assert_int_equal(n, 2);
	assert_int_equal(total, 2);
	assert_string_equal(list[0].id, "T1");
	assert_string_equal(list[1].id, "P1");
	assert_int_equal(list[1].kind, CATALOG_PACKAGE);
	assert_int_equal(list[1].party_price, 40000);
	free(list);

	/* Inside a transaction: the item, and a package with its tests. */
	memset(&j, 0, sizeof j);
	j.lab = "lab_1";
	j.kind = CATALOG_PACKAGE;
	j.id = "P1";
	assert_int_equal(st->ops->submit(st, job_catalog, &j), LH_OK);
	assert_int_equal(j.any, 1);
	assert_int_equal(j.got, LH_OK);
	assert_string_equal(j.it.name, "Lipid");
	assert_int_equal(j.n, 2);
	assert_string_equal(j.m[1].name, "LDL \"quoted\"");
	free(j.m);

	/* A test a package holds stays; a put replaces the package's tests. */
	assert_int_equal(st->ops->catalog_delete(st, "lab_1", CATALOG_TEST, "T2", pkg),
	                 LH_ECONFLICT);
	assert_string_equal(pkg, "P1");
	struct catalog_item again[] = {cat_item(CATALOG_PACKAGE, "P1", "Lipid v2", 46000)};
	struct catalog_member only[] = {cat_member("P1", "T3")};
	assert_int_equal(st->ops->catalog_put(st, "lab_1", again, 1, only, 1, NULL), LH_OK);
	assert_int_equal(st->ops->catalog_delete(st, "lab_1", CATALOG_TEST, "T2", pkg), LH_OK);
	assert_int_equal(st->ops->catalog_delete(st, "lab_1", CATALOG_TEST, "T2", pkg),
	                 LH_ENOTFOUND);
	/* The package's rate stayed through the put; deleting it takes its rates and tests. */
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_PACKAGE, "cu_1", 0, 0, 10, &list, &n, NULL),
	    LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "Lipid v2");
	assert_int_equal(list[0].party_price, 40000);
	free(list);
	assert_int_equal(st->ops->catalog_delete(st, "lab_1", CATALOG_PACKAGE, "P1", NULL), LH_OK);
	assert_int_equal(st->ops->catalog_members(st, "lab_1", "P1", "P1", &m, &n), LH_OK);
	assert_int_equal(n, 0);
	free(m);
	assert_int_equal(st->ops->catalog_put(st, "lab_1", again, 1, NULL, 0, NULL), LH_OK);
	assert_int_equal(
	    st->ops->catalog_list(st, "lab_1", CATALOG_ANY, "cu_1", 1, 0, 10, &list, &n, NULL),
	    LH_OK);
	assert_int_equal(n, 1); /* T1's rate only: P1's went with it */
	free(list);
}

/* ---- routing: the catch-all "" and each party of an event ---- */

struct route_job {
	const char *const *parties;
	size_t n;
	int type;
	size_t got; /* deliveries made */
};

static enum lh_err job_route(struct store_tx *tx, void *arg)
{
	struct route_job *j = arg;
	struct event ev;
	memset(&ev, 0, sizeof ev);
	assert_int_equal(util_new_id("evt_", ev.event_id), LH_OK);
	snprintf(ev.client_id, sizeof ev.client_id, "cl_A");
	snprintf(ev.lab_id, sizeof ev.lab_id, "lab_1");
	snprintf(ev.entity_id, sizeof ev.entity_id, "bill_r");
	ev.type = j->type;
	ev.payload = "{\"route\":1}";
	ev.created_at = 1700000000;
	return tx->ops->event_insert(tx, &ev, j->parties, j->n, NULL, &j->got);
}

static void add_party_sub(struct store *st, const char *id, const char *lab, const char *party,
                          unsigned events)
{
	struct subscription s;
	make_sub(&s, id, lab, events);
	snprintf(s.party_id, sizeof s.party_id, "%s", party);
	s.party_kind = party[0] ? PARTY_CORPORATE_USER : PARTY_NONE;
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
}

static void test_routing_across_parties(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	unsigned bc = 1u << EV_BILL_CREATED, bd = 1u << EV_BILL_DELETED;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_A", "lab_2");
	add_party_sub(st, "sub_all", "lab_1", "", bc);
	add_party_sub(st, "sub_cu1", "lab_1", "cu_1", bc | bd);
	add_party_sub(st, "sub_org1", "lab_1", "org_1", bc);
	add_party_sub(st, "sub_cu2", "lab_1", "cu_2", bc);   /* a party not on the event */
	add_party_sub(st, "sub_lab2", "lab_2", "", bc);      /* another lab */
	add_party_sub(st, "sub_org2", "lab_1", "org_2", bd); /* another event */
	nhooked = 0;
	st->ops->set_commit_hook(st, on_commit, NULL);

	/* As the domain passes them: three slots, "" where absent, one party twice. */
	const char *const parties[] = {"cu_1", "", "org_1", "cu_1"};
	struct route_job j = {parties, 4, EV_BILL_CREATED, 0};
	assert_int_equal(st->ops->submit(st, job_route, &j), LH_OK);
	assert_int_equal(j.got, 3);
	assert_int_equal(nhooked, 3);
	assert_int_equal(hooked_has("sub_all"), 1);
	assert_int_equal(hooked_has("sub_cu1"), 1);
	assert_int_equal(hooked_has("sub_org1"), 1);
	for (size_t i = 0; i < nhooked; i++) {
		assert_int_equal(hooked[i].event_seq, hooked[0].event_seq); /* one event */
		assert_int_equal(hooked[i].status, DLV_PENDING);
		assert_int_equal(hooked[i].requeued, 0);
		assert_int_equal(hooked[i].next_at_ms, 1700000000000LL);
		assert_string_equal(hooked[i].entity_id, "bill_r");
		check_fresh_payload(st, &hooked[i], "{\"route\":1}");
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(hooked[i].delivery_id, hooked[k].delivery_id);
	}
	hooked_clear();

	/* No party: the catch-all alone. Another event: only its holders. */
	struct route_job none = {NULL, 0, EV_BILL_CREATED, 0};
	assert_int_equal(st->ops->submit(st, job_route, &none), LH_OK);
	assert_int_equal(none.got, 1);
	assert_int_equal(hooked_has("sub_all"), 1);
	hooked_clear();
	const char *const orgs[] = {"org_2", "cu_1"};
	struct route_job del = {orgs, 2, EV_BILL_DELETED, 0};
	assert_int_equal(st->ops->submit(st, job_route, &del), LH_OK);
	assert_int_equal(del.got, 2);
	assert_int_equal(hooked_has("sub_org2"), 1);
	assert_int_equal(hooked_has("sub_cu1"), 1);
	hooked_clear();

	/* A paused subscription still gets deliveries (it holds its events); a deleted one
	 * does not, and routing sees it at once. */
	struct subscription s;
	make_sub(&s, "sub_cu1", "lab_1", 0);
	s.status = SUB_PAUSED;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, NULL), LH_OK);
	s.status = SUB_DELETED;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, NULL), LH_OK);
	j.got = 0;
	assert_int_equal(st->ops->submit(st, job_route, &j), LH_OK);
	assert_int_equal(j.got, 2);
	assert_int_equal(hooked_has("sub_cu1"), 0);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* ---- deliveries: record, attempts, requeue, recover, list ---- */

static struct delivery_result outcome(const struct delivery *d, int n, int code,
                                      enum delivery_status status, enum sub_outcome sub)
{
	struct delivery_result r;
	memset(&r, 0, sizeof r);
	snprintf(r.a.delivery_id, sizeof r.a.delivery_id, "%s", d->delivery_id);
	snprintf(r.sub_id, sizeof r.sub_id, "%s", d->sub_id);
	r.a.n = n;
	r.a.started_at_ms = 1700000000000LL + n;
	r.a.duration_ms = 10 * n;
	r.a.status_code = code;
	snprintf(r.a.error, sizeof r.a.error, "%s", code >= 200 && code < 300 ? "" : "http_500");
	snprintf(r.a.response, sizeof r.a.response, "answer %d", n);
	r.status = status;
	r.next_at_ms = status == DLV_PENDING ? 1700000009000LL : 0;
	r.sub = sub;
	r.now = 1700000000 + n;
	r.epoch = lease_epoch(lease_store, d->sub_id);
	return r;
}

/* Records one outcome of d's attempt n (no change to its subscription). */
static void record(struct store *st, const struct delivery *d, int n, int code,
                   enum delivery_status status)
{
	struct delivery_result r = outcome(d, n, code, status, SUBO_NONE);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);
}

/* Records a 200 for the first of sub_1's pending deliveries, of which there are `want`. */
static void deliver_first(struct store *st, size_t want)
{
	struct delivery *page = NULL;
	size_t n = 0;
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, want);
	struct delivery_result r = outcome(&page[0], 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);
}

static void attempt_is(const struct attempt *a, int n, int code, int duration_ms,
                       int64_t started_at_ms, const char *error, const char *response)
{
	assert_int_equal(a->n, n);
	assert_int_equal(a->status_code, code);
	assert_int_equal(a->duration_ms, duration_ms);
	assert_int_equal(a->started_at_ms, started_at_ms);
	assert_string_equal(a->error, error);
	assert_string_equal(a->response, response);
}

/* The attempts of a delivery are numbered 1..n with these status codes. */
static void attempts_are(struct store *st, const char *delivery_id, const int *codes, size_t n)
{
	struct attempt *at = NULL;
	size_t got = 0;
	assert_int_equal(st->ops->attempt_list(st, delivery_id, &at, &got), LH_OK);
	assert_int_equal(got, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(at[i].n, (int)i + 1);
		assert_int_equal(at[i].status_code, codes[i]);
		assert_string_equal(at[i].delivery_id, delivery_id);
	}
	free(at);
}

static void test_delivery_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL, *list = NULL, d1, d2, got;
	struct attempt *at = NULL;
	struct subscription sub;
	size_t n = 0;
	char *payload = NULL;

	outbox_setup(st);
	struct event_job e1 = {"bill_1", "{\"n\":1}", LH_OK, NULL, NULL};
	struct event_job e2 = {"bill_2", "{\"n\":2}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &e1), LH_OK);
	assert_int_equal(st->ops->submit(st, job_event, &e2), LH_OK);
	hooked_clear();
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 2);
	d1 = page[0];
	d2 = page[1];
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	d1.payload = d2.payload = NULL;
	assert_int_equal(st->ops->event_payload(st, d1.event_id, &payload), LH_OK);
	assert_string_equal(payload, "{\"n\":1}");
	free(payload);
	assert_int_equal(st->ops->event_payload(st, "evt_NONE", &payload), LH_ENOTFOUND);

	/* A retry (still pending, later), then a final failure; the subscription is failing. */
	struct delivery_result r[2] = {outcome(&d1, 1, 500, DLV_PENDING, SUBO_FAILURE),
	                               outcome(&d2, 1, 500, DLV_FAILED, SUBO_NONE)};
	assert_int_equal(st->ops->delivery_record(st, r, 2), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &sub), LH_OK);
	assert_int_equal(sub.failing_since, 1700000001);
	r[0] = outcome(&d1, 2, 500, DLV_FAILED, SUBO_FAILURE);
	assert_int_equal(st->ops->delivery_record(st, r, 1), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &sub), LH_OK);
	assert_int_equal(sub.failing_since, 1700000001); /* the first failure's time stays */
	/* The same attempt recorded twice (sent again after a restart) is kept once, as
	 * recorded last. */
	r[0].a.status_code = 503;
	r[0].a.duration_ms = 25;
	r[0].a.started_at_ms = 1700000000007LL;
	snprintf(r[0].a.error, sizeof r[0].a.error, "http_503");
	snprintf(r[0].a.response, sizeof r[0].a.response, "answer again");
	assert_int_equal(st->ops->delivery_record(st, r, 1), LH_OK);

	assert_int_equal(st->ops->attempt_list(st, d1.delivery_id, &at, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_int_equal(at[0].n, 1);
	attempt_is(&at[1], 2, 503, 25, 1700000000007LL, "http_503", "answer again");
	free(at);

	/* The log: newest first, by status, paged with before. */
	assert_int_equal(st->ops->delivery_list(st, "cl_A", "sub_1", -1, 0, "", 10, &list, &n),
	                 LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].delivery_id, d2.delivery_id);
	assert_int_equal(list[1].status, DLV_FAILED);
	assert_int_equal(list[1].attempts, 2);
	assert_string_equal(list[1].last_error, "http_503"); /* the last record's */
	assert_null(list[0].payload);
	free(list);
	assert_int_equal(
	    st->ops->delivery_list(st, "cl_A", "sub_1", DLV_PENDING, 0, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 0);
	free(list);
	assert_int_equal(
	    st->ops->delivery_list(st, "cl_A", "sub_1", -1, 0, d2.delivery_id, 10, &list, &n),
	    LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].delivery_id, d1.delivery_id);
	free(list);
	assert_int_equal(st->ops->delivery_list(st, "cl_B", "sub_1", -1, 0, "", 10, &list, &n),
	                 LH_OK);
	assert_int_equal(n, 0); /* another client's */
	free(list);
	assert_int_equal(
	    st->ops->delivery_list(st, "cl_A", "sub_1", -1, 1700000001, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 0); /* created before since */
	free(list);

	/* Requeue one: pending again, due now, handed to the engine as requeued. */
	memset(&got, 0x5a, sizeof got);
	assert_int_equal(st->ops->delivery_requeue(st, "cl_B", d1.delivery_id, 5000, &got),
	                 LH_ENOTFOUND);
	assert_int_equal((unsigned char)got.delivery_id[0], 0x5a);
	assert_int_equal(
	    st->ops->delivery_requeue(st, "cl_A", d1.delivery_id, 1700000100000LL, &got), LH_OK);
	assert_string_equal(got.delivery_id, d1.delivery_id);
	assert_int_equal(got.status, DLV_PENDING);
	assert_int_equal(got.next_at_ms, 1700000100000LL);
	assert_int_equal(got.requeued, 1);
	assert_int_equal(nhooked, 1);
	assert_int_equal(hooked[0].requeued, 1);
	assert_string_equal(hooked[0].delivery_id, d1.delivery_id);
	hooked_clear();
	assert_int_equal(pending_count(st), 1);

	/* Recover every failure since a time: d2 (d1 is pending now). */
	assert_int_equal(
	    st->ops->delivery_recover(st, "cl_B", "sub_1", 0, 1700000200000LL, &list, &n), LH_OK);
	assert_int_equal(n, 0);
	free(list);
	assert_int_equal(
	    st->ops->delivery_recover(st, "cl_A", "sub_1", 0, 1700000200000LL, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].delivery_id, d2.delivery_id);
	assert_int_equal(list[0].status, DLV_PENDING);
	assert_int_equal(list[0].next_at_ms, 1700000200000LL);
	assert_int_equal(list[0].requeued, 1);
	free(list);
	assert_int_equal(nhooked, 1);
	hooked_clear();
	assert_int_equal(pending_count(st), 2);

	/* A success clears the failing mark. */
	r[0] = outcome(&d1, 3, 200, DLV_DELIVERED, SUBO_SUCCESS);
	assert_int_equal(st->ops->delivery_record(st, r, 1), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &sub), LH_OK);
	assert_int_equal(sub.failing_since, 0);
	assert_int_equal(pending_count(st), 1);

	/* The attempt that delivered it is listed after the others, as recorded (SQLite keeps
	 * it on the delivery's row: the list must not tell). */
	static const int codes_a[] = {500, 503, 200};
	attempts_are(st, d1.delivery_id, codes_a, 3);
	assert_int_equal(st->ops->attempt_list(st, d1.delivery_id, &at, &n), LH_OK);
	attempt_is(&at[2], 3, 200, 30, 1700000000003LL, "", "answer 3");
	free(at);
	/* That attempt recorded again (sent again after a restart) is listed once, as
	 * recorded last: a failure, then a success again. */
	record(st, &d1, 3, 500, DLV_PENDING);
	static const int codes_b[] = {500, 503, 500};
	attempts_are(st, d1.delivery_id, codes_b, 3);
	record(st, &d1, 3, 200, DLV_DELIVERED);
	attempts_are(st, d1.delivery_id, codes_a, 3);
	/* Sent again by hand and delivered again: both deliveries' attempts are listed. */
	assert_int_equal(
	    st->ops->delivery_requeue(st, "cl_A", d1.delivery_id, 1700000300000LL, &got), LH_OK);
	hooked_clear();
	static const int codes_c[] = {500, 503, 200, 201};
	record(st, &d1, 4, 201, DLV_DELIVERED);
	attempts_are(st, d1.delivery_id, codes_c, 4);
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* outbox_setup, then k events of one bill, each with its delivery to sub_1. */
static void outbox_events(struct store *st, int k)
{
	outbox_setup(st);
	for (int i = 0; i < k; i++) {
		struct event_job j = {"bill_1", "{}", LH_OK, NULL, NULL};
		assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	}
	hooked_clear();
}

/* Outcomes recorded in orders the engine does not make (the contract allows them): each
 * backend lists every attempt as its last record, SQLite's kept attempt (its schema 8)
 * included. */
static void test_attempts_in_any_order(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *list = NULL;
	size_t n = 0;

	outbox_events(st, 3);
	struct delivery *page = NULL;
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 3);
	struct delivery d[3];
	for (size_t i = 0; i < 3; i++) {
		d[i] = page[i];
		free(page[i].payload);
		d[i].payload = NULL;
	}
	free(page);

	/* Delivered twice with no requeue between: both attempts stay. */
	record(st, &d[0], 1, 200, DLV_DELIVERED);
	record(st, &d[0], 2, 201, DLV_DELIVERED);
	static const int codes_a[] = {200, 201};
	attempts_are(st, d[0].delivery_id, codes_a, 2);

	/* Failures, a delivery, a final failure, recovered, delivered again: all five. */
	struct delivery_result fails[2] = {outcome(&d[1], 1, 500, DLV_PENDING, SUBO_NONE),
	                                   outcome(&d[1], 2, 500, DLV_PENDING, SUBO_NONE)};
	assert_int_equal(st->ops->delivery_record(st, fails, 2), LH_OK);
	record(st, &d[1], 3, 200, DLV_DELIVERED);
	record(st, &d[1], 4, 410, DLV_FAILED);
	assert_int_equal(
	    st->ops->delivery_recover(st, "cl_A", "sub_1", 0, 1700000200000LL, &list, &n), LH_OK);
	free(list);
	hooked_clear();
	record(st, &d[1], 5, 202, DLV_DELIVERED);
	static const int codes_b[] = {500, 500, 200, 410, 202};
	attempts_are(st, d[1].delivery_id, codes_b, 5);

	/* Delivered twice, then each attempt recorded again as a failure, the first first:
	 * each number shows its last record. */
	record(st, &d[2], 1, 200, DLV_DELIVERED);
	record(st, &d[2], 2, 201, DLV_DELIVERED);
	record(st, &d[2], 1, 500, DLV_PENDING);
	static const int codes_c[] = {500, 201};
	attempts_are(st, d[2].delivery_id, codes_c, 2);
	record(st, &d[2], 2, 503, DLV_PENDING);
	static const int codes_d[] = {500, 503};
	attempts_are(st, d[2].delivery_id, codes_d, 2);
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* ---- subscription changes: the hook, subs_version, cancellation, conflicts ---- */

static int subs_changed;

static void on_commit_count(void *ctx, struct store_news *nw)
{
	(void)ctx;
	if (nw->subs_changed)
		__atomic_add_fetch(&subs_changed, 1, __ATOMIC_RELAXED);
	for (size_t i = 0; i < nw->nfresh; i++)
		free(nw->fresh[i].payload);
}

static void test_sub_changes_are_announced(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	st->ops->set_commit_hook(st, on_commit_count, NULL);
	__atomic_store_n(&subs_changed, 0, __ATOMIC_RELAXED);
	uint64_t v0 = st->ops->subs_version(st);
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	uint64_t v1 = st->ops->subs_version(st);
	assert_true(v1 > v0);
	assert_true(__atomic_load_n(&subs_changed, __ATOMIC_RELAXED) >= 1);
	snprintf(s.endpoint, sizeof s.endpoint, "https://z.example.com/");
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_ENDPOINT, NULL), LH_OK);
	assert_true(st->ops->subs_version(st) > v1);
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* The engine disables a subscription that keeps failing: it gives its events up. */
static void test_disable_outcome_frees_events(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL;
	struct subscription s, got;
	size_t n = 0;

	outbox_setup(st);
	struct event_job e1 = {"bill_1", "{}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &e1), LH_OK);
	hooked_clear();
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	struct delivery_result r = outcome(&page[0], 1, 500, DLV_FAILED, SUBO_DISABLE);
	free(page[0].payload);
	free(page);
	st->ops->set_commit_hook(st, on_commit_count, NULL);
	uint64_t v0 = st->ops->subs_version(st);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);
	assert_true(st->ops->subs_version(st) > v0);
	assert_int_equal(st->ops->sub_get_any(st, "sub_1", &got), LH_OK);
	assert_int_equal(got.status, SUB_DISABLED);
	assert_int_equal(got.updated_at, r.now);
	make_sub(&s, "sub_2", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK); /* the event is free again */
	/* Re-enabling now collides with the new holder, and changes nothing. */
	got.status = SUB_ACTIVE;
	assert_int_equal(st->ops->sub_update(st, &got, SUBF_STATUS, NULL), LH_ECONFLICT);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &got), LH_OK);
	assert_int_equal(got.status, SUB_DISABLED);
	st->ops->set_commit_hook(st, NULL, NULL);
}

static void test_delete_cancels_deliveries(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *list = NULL;
	struct subscription s, got;
	size_t n = 0;

	outbox_events(st, 3);
	deliver_first(st, 3);

	make_sub(&s, "sub_1", "lab_1", 0);
	s.status = SUB_DELETED;
	s.updated_at = 1700000500;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, &got), LH_OK);
	assert_int_equal(got.status, SUB_DELETED);
	assert_int_equal(pending_count(st), 0);
	assert_int_equal(
	    st->ops->delivery_list(st, "cl_A", "sub_1", DLV_CANCELLED, 0, "", 10, &list, &n),
	    LH_OK);
	assert_int_equal(n, 2); /* the delivered one stays delivered */
	free(list);
	/* An outcome of an attempt in flight at the delete leaves it cancelled. */
	assert_int_equal(
	    st->ops->delivery_list(st, "cl_A", "sub_1", DLV_CANCELLED, 0, "", 1, &list, &n), LH_OK);
	struct delivery_result r = outcome(&list[0], 1, 500, DLV_PENDING, SUBO_NONE);
	free(list);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);
	assert_int_equal(pending_count(st), 0);
	/* The requeue of a deleted subscription's delivery is refused. */
	struct delivery d;
	assert_int_equal(st->ops->delivery_requeue(st, "cl_A", r.a.delivery_id, 1, &d),
	                 LH_ENOTFOUND);
	assert_int_equal(st->ops->sub_get_any(st, "sub_1", &got), LH_OK); /* deleted, still there */
	assert_int_equal(got.status, SUB_DELETED);
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* The value of one series in the metrics exposition (0 if absent). */
static uint64_t metric(const char *series)
{
	size_t len = 0;
	char *text = metrics_render(NULL, 0, NULL, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	const char *p = strstr(text, series);
	uint64_t v = p ? strtoull(p + strlen(series), NULL, 10) : 0;
	free(text);
	return v;
}

/* What GET /metrics shows of the store: pending deliveries (not failed, delivered or
 * cancelled ones), live subscriptions by status, the size; and the events of jobs that
 * committed (a job undone, or a batch that failed, counts none). */
static void test_stats(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct store_stats s0, s;
	struct subscription sub;
	const char *bills = "labhook_events_total{type=\"bill.created\"} ";

	assert_int_equal(st->ops->stats(st, &s0), LH_OK);
	assert_int_equal(s0.pending, 0);
	for (int i = 0; i < SUB_DELETED; i++)
		assert_int_equal(s0.subs[i], 0);
	assert_true(s0.bytes > 0);

	outbox_setup(st);
	uint64_t events0 = metric(bills);
	for (int i = 0; i < 3; i++) {
		struct event_job j = {"bill_1", "{}", LH_OK, NULL, NULL};
		assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	}
	struct event_job undone = {"bill_2", "{}", LH_ECONFLICT, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &undone), LH_ECONFLICT);
	assert_int_equal(metric(bills), events0 + 3);
	hooked_clear();
	deliver_first(st, 3);
	struct delivery *page = NULL;
	size_t n = 0;
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 2);
	struct delivery_result r = outcome(&page[0], 1, 500, DLV_FAILED, SUBO_FAILURE);
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);

	make_sub(&sub, "sub_2", "lab_1", 1u << EV_BILL_DELETED);
	sub.status = SUB_PAUSED;
	assert_int_equal(st->ops->sub_insert(st, &sub), LH_OK);
	for (int i = 3; i <= 5; i++) {
		char id[16];
		snprintf(id, sizeof id, "sub_%d", i);
		make_sub(&sub, id, "lab_1", 0);
		assert_int_equal(st->ops->sub_insert(st, &sub), LH_OK);
		sub.status = i == 3 ? SUB_DISABLED : SUB_DELETED;
		assert_int_equal(st->ops->sub_update(st, &sub, SUBF_STATUS, NULL), LH_OK);
	}

	assert_int_equal(st->ops->stats(st, &s), LH_OK);
	assert_int_equal(s.pending, 1);
	assert_int_equal(s.subs[SUB_ACTIVE], 1);
	assert_int_equal(s.subs[SUB_PAUSED], 1);
	assert_int_equal(s.subs[SUB_DISABLED], 1); /* deleted ones are not counted */
	assert_true(s.bytes >= s0.bytes);
	st->ops->set_commit_hook(st, NULL, NULL);
}

static void test_sub_update_conflict_changes_nothing(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s1, s2, got;
	unsigned bc = 1u << EV_BILL_CREATED, bd = 1u << EV_BILL_DELETED;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_sub(&s1, "sub_1", "lab_1", bc);
	make_sub(&s2, "sub_2", "lab_1", bd);
	assert_int_equal(st->ops->sub_insert(st, &s1), LH_OK);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	s2.events = bc | bd;
	snprintf(s2.endpoint, sizeof s2.endpoint, "https://changed.example.com/");
	assert_int_equal(st->ops->sub_update(st, &s2, SUBF_EVENTS | SUBF_ENDPOINT, &got),
	                 LH_ECONFLICT);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_2", &got), LH_OK);
	assert_int_equal(got.events, bd);
	assert_string_equal(got.endpoint, "https://x.example.com/sub_2");
	struct subscription *list = NULL;
	size_t n = 0;
	assert_int_equal(st->ops->sub_list_holding(st, "lab_1", "", bc | bd, &list, &n), LH_OK);
	assert_int_equal(n, 2);
	free(list);
	/* Status filter of the listing. */
	s1.status = SUB_PAUSED;
	assert_int_equal(st->ops->sub_update(st, &s1, SUBF_STATUS, NULL), LH_OK);
	assert_int_equal(st->ops->sub_list(st, "cl_A", "", SUB_PAUSED, "", 10, &list, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].id, "sub_1");
	free(list);
}

/* ---- bills and reports, leads and bookings (inside submit) ---- */

struct bill_job {
	struct bill b;
	struct report r[2];
	size_t n;
	int step; /* 0 insert, 1 load + complete a report + update the bill */
	struct bill loaded;
	struct report *reports;
	size_t nreports;
};

static enum lh_err job_bill(struct store_tx *tx, void *arg)
{
	struct bill_job *j = arg;
	enum lh_err e;
	if (j->step == 0)
		return tx->ops->bill_insert(tx, &j->b, j->r, j->n);
	if ((e = tx->ops->bill_load(tx, j->b.bill_id, &j->loaded, &j->reports, &j->nreports)) !=
	    LH_OK)
		return e;
	struct report done = j->reports[1];
	done.status = REPORT_COMPLETED;
	done.completed_at = 1700000300;
	if ((e = tx->ops->report_update(tx, &done)) != LH_OK)
		return e;
	struct bill b = j->loaded;
	b.status = BILL_COMPLETED;
	b.updated_at = 1700000300;
	return tx->ops->bill_update(tx, &b);
}

static void bill_fill(struct bill_job *j, const char *id, const char *bar)
{
	memset(j, 0, sizeof *j);
	snprintf(j->b.bill_id, sizeof j->b.bill_id, "%s", id);
	snprintf(j->b.client_id, sizeof j->b.client_id, "cl_A");
	snprintf(j->b.lab_id, sizeof j->b.lab_id, "lab_1");
	snprintf(j->b.integrator_id, sizeof j->b.integrator_id, "integ \"quoted\" \\ name");
	snprintf(j->b.pre_booking_id, sizeof j->b.pre_booking_id, "pb_1");
	snprintf(j->b.bar_code, sizeof j->b.bar_code, "%s", bar);
	snprintf(j->b.lead_source, sizeof j->b.lead_source, "walk-in");
	snprintf(j->b.parties.corporate_user, sizeof j->b.parties.corporate_user, "cu_1");
	snprintf(j->b.patient, sizeof j->b.patient, "{\"name\":\"Zoë\"}");
	j->b.created_at = j->b.updated_at = 1700000200;
	j->n = 2;
	for (size_t i = 0; i < 2; i++) {
		snprintf(j->r[i].report_id, sizeof j->r[i].report_id, "%s_r%zu", id, i);
		snprintf(j->r[i].bill_id, sizeof j->r[i].bill_id, "%s", id);
		j->r[i].seq = (int)i + 1;
		snprintf(j->r[i].name, sizeof j->r[i].name, "Test, \"%zu\" {x}", i);
		snprintf(j->r[i].package, sizeof j->r[i].package, "%s", i ? "pkg" : "");
	}
}

static void test_bills_and_reports(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct bill b;
	struct report *r = NULL;
	size_t n = 0;
	struct bill_job j, k;

	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	make_lab(st, "cl_A", "lab_1");
	bill_fill(&j, "bill_1", "BC1");
	assert_int_equal(st->ops->submit(st, job_bill, &j), LH_OK);
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_1", &b, &r, &n), LH_OK);
	assert_string_equal(b.integrator_id, "integ \"quoted\" \\ name");
	assert_string_equal(b.bar_code, "BC1");
	assert_string_equal(b.patient, "{\"name\":\"Zoë\"}");
	assert_string_equal(b.parties.corporate_user, "cu_1");
	assert_string_equal(b.parties.referred_org, "");
	assert_int_equal(b.status, BILL_PENDING);
	assert_int_equal(n, 2);
	assert_string_equal(r[0].name, "Test, \"0\" {x}");
	assert_string_equal(r[1].package, "pkg");
	assert_int_equal(r[1].seq, 2);
	free(r);
	assert_int_equal(st->ops->bill_get(st, "cl_B", "bill_1", &b, &r, &n), LH_ENOTFOUND);
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_NONE", &b, &r, &n), LH_ENOTFOUND);
	/* The lab side (GET /lab/bills/{id}): any account's bill, which names its account. */
	assert_int_equal(st->ops->bill_get(st, NULL, "bill_1", &b, &r, &n), LH_OK);
	assert_string_equal(b.client_id, "cl_A");
	assert_int_equal(n, 2);
	free(r);
	assert_int_equal(st->ops->bill_get(st, NULL, "bill_NONE", &b, &r, &n), LH_ENOTFOUND);

	/* The same bar code in the lab: refused, alone; none twice: fine. */
	bill_fill(&k, "bill_2", "BC1");
	assert_int_equal(st->ops->submit(st, job_bill, &k), LH_ECONFLICT);
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_2", &b, &r, &n), LH_ENOTFOUND);
	bill_fill(&k, "bill_2", "");
	assert_int_equal(st->ops->submit(st, job_bill, &k), LH_OK);
	bill_fill(&k, "bill_3", "");
	k.n = 0;
	assert_int_equal(st->ops->submit(st, job_bill, &k), LH_OK);
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_3", &b, &r, &n), LH_OK);
	assert_int_equal(n, 0);
	assert_string_equal(b.bar_code, "");
	free(r);

	j.step = 1;
	assert_int_equal(st->ops->submit(st, job_bill, &j), LH_OK);
	assert_int_equal(j.nreports, 2);
	free(j.reports);
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_1", &b, &r, &n), LH_OK);
	assert_int_equal(b.status, BILL_COMPLETED);
	assert_int_equal(b.updated_at, 1700000300);
	assert_int_equal(r[0].status, REPORT_PENDING);
	assert_int_equal(r[1].status, REPORT_COMPLETED);
	assert_int_equal(r[1].completed_at, 1700000300);
	free(r);
}

/* A bill, and with with_event its bill.created event, as the API writes them. */
struct bill_event_job {
	struct bill_job bill;
	int with_event;
	int conflicts; /* runs whose bill_insert said LH_ECONFLICT (the writer thread's) */
};

static enum lh_err job_bill_event(struct store_tx *tx, void *arg)
{
	struct bill_event_job *j = arg;
	enum lh_err e = tx->ops->bill_insert(tx, &j->bill.b, j->bill.r, j->bill.n);
	j->conflicts += e == LH_ECONFLICT;
	if (e != LH_OK || !j->with_event)
		return e;
	/* As the API writes it: no count asked for, so it may be answered later. */
	struct event ev;
	memset(&ev, 0, sizeof ev);
	assert_int_equal(util_new_id("evt_", ev.event_id), LH_OK);
	snprintf(ev.client_id, sizeof ev.client_id, "cl_A");
	snprintf(ev.lab_id, sizeof ev.lab_id, "lab_1");
	snprintf(ev.entity_id, sizeof ev.entity_id, "%s", j->bill.b.bill_id);
	ev.type = EV_BILL_CREATED;
	ev.payload = "{}";
	ev.created_at = 1700000000;
	return tx->ops->event_insert(tx, &ev, NULL, 0, NULL, NULL);
}

/* Runs bills[0..n) (ids[i], bars[i], an event after the bill where events[i]) as one batch
 * of jobs that may run twice (the API's, STORE_JOB_RERUN), queued behind a gated batch of
 * one event, and checks each is told want[i] once, is stored only if LH_OK, and that only
 * a refused bill's own insert ever said LH_ECONFLICT, in either run of the batch. */
static void bill_batch(struct store *st, size_t n, const char *const *ids, const char *const *bars,
                       const int *events, const enum lh_err *want)
{
	struct bill_event_job *jobs = calloc(n, sizeof *jobs);
	struct waiter *w = calloc(n + 1, sizeof *w);
	struct bill b;
	struct report *r = NULL;
	size_t nr = 0;
	struct gate g = {PTHREAD_MUTEX_INITIALIZER,
	                 PTHREAD_COND_INITIALIZER,
	                 0,
	                 0,
	                 {"bill_0", "{}", LH_OK, NULL, NULL}};
	assert_non_null(jobs);
	assert_non_null(w);
	for (size_t i = 0; i <= n; i++)
		w[i] =
		    (struct waiter){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};
	st->ops->submit_async(st, job_gated, &g, 0, on_done, &w[n]);
	gate_wait(&g);
	for (size_t i = 0; i < n; i++) {
		bill_fill(&jobs[i].bill, ids[i], bars[i]);
		jobs[i].with_event = events[i];
		st->ops->submit_async(st, job_bill_event, &jobs[i], STORE_JOB_RERUN, on_done,
		                      &w[i]);
	}
	gate_open(&g);
	assert_int_equal(wait_done(&w[n]), LH_OK);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(wait_done(&w[i]), want[i]);
		assert_int_equal(w[i].calls, 1);
		assert_int_equal(jobs[i].conflicts > 0, want[i] == LH_ECONFLICT);
		enum lh_err e = st->ops->bill_get(st, "cl_A", ids[i], &b, &r, &nr);
		assert_int_equal(e, want[i] == LH_OK ? LH_OK : LH_ENOTFOUND);
		if (e == LH_OK) {
			assert_string_equal(b.bar_code, bars[i]);
			assert_int_equal(nr, 2);
			free(r);
			r = NULL;
		}
	}
	free(jobs);
	free(w);
}

/* In a batch of the API's jobs a backend may answer a bill's insert only later, in another
 * job's statement or after the last job (PostgreSQL does, to save round trips); a refused
 * bill must still be refused alone, with its own error, whether an event follows it or
 * nothing does, and last in its batch too. */
static void test_bills_refused_in_a_rerun_batch(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct bill_event_job first;

	outbox_setup(st);
	/* A first bill alone: its statements are known to the connection afterwards. */
	bill_fill(&first.bill, "bill_1", "BC1");
	first.with_event = 1;
	assert_int_equal(st->ops->submit(st, job_bill_event, &first), LH_OK);

	/* The refused one last, with nothing after its insert. */
	static const char *const ids1[3] = {"bill_2", "bill_3", "bill_4"};
	static const char *const bars1[3] = {"BC2", "BC3", "BC1"};
	static const int events1[3] = {1, 0, 0};
	static const enum lh_err want1[3] = {LH_OK, LH_OK, LH_ECONFLICT};
	hooked_clear();
	bill_batch(st, 3, ids1, bars1, events1, want1);
	/* Handed to the engine once each: the gate's event and bill_2's. */
	assert_int_equal(nhooked, 2);
	assert_string_equal(hooked[0].entity_id, "bill_0");
	assert_string_equal(hooked[1].entity_id, "bill_2");
	hooked_clear();
	/* Refused with its event after it; a bill of the refused one's bar code, alone after. */
	static const char *const ids2[3] = {"bill_5", "bill_6", "bill_7"};
	static const char *const bars2[3] = {"BC1", "BC6", "BC3"};
	static const int events2[3] = {1, 1, 0};
	static const enum lh_err want2[3] = {LH_ECONFLICT, LH_OK, LH_ECONFLICT};
	bill_batch(st, 3, ids2, bars2, events2, want2);
	assert_int_equal(nhooked, 2);
	assert_string_equal(hooked[1].entity_id, "bill_6");
	/* The gated events (2), bill_1's, bill_2's and bill_6's: none of a refused bill. */
	assert_int_equal(pending_count(st), 5);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* A batch longer than what PostgreSQL's writer holds back at once (62 statements): its
 * queue is answered inside a later job's insert, and an early bill's duplicate bar code
 * must not be told to that job as its own refusal (it would answer 409 for another's bar
 * code, and the run again with savepoints corrects the result but not the text). */
static void test_bill_conflict_is_told_to_its_own_job(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct bill_event_job first;
	enum { N = 40 };
	char idbuf[N][16], barbuf[N][16];
	const char *ids[N], *bars[N];
	int events[N];
	enum lh_err want[N];

	outbox_setup(st);
	bill_fill(&first.bill, "bill_1", "BC1");
	first.with_event = 1;
	assert_int_equal(st->ops->submit(st, job_bill_event, &first), LH_OK);
	for (int i = 0; i < N; i++) {
		snprintf(idbuf[i], sizeof idbuf[i], "bill_x%d", i);
		snprintf(barbuf[i], sizeof barbuf[i], "BX%d", i);
		ids[i] = idbuf[i];
		bars[i] = i == 1 ? "BC1" : barbuf[i];
		events[i] = 1;
		want[i] = i == 1 ? LH_ECONFLICT : LH_OK;
	}
	bill_batch(st, N, ids, bars, events, want);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* ---- report documents ---- */

struct doc_job {
	struct report_doc d;
	const unsigned char *data;
	size_t len;
	int fail_after; /* return an error after storing: the savepoint must undo it */
	struct report_doc meta;
	enum lh_err meta_before, meta_after;
};

static enum lh_err job_doc(struct store_tx *tx, void *arg)
{
	struct doc_job *j = arg;
	struct report_doc m;
	j->meta_before = tx->ops->doc_meta(tx, j->d.bill_id, j->d.report_id, &m);
	enum lh_err e = tx->ops->doc_put(tx, &j->d, j->data, j->len);
	if (e != LH_OK)
		return e;
	j->meta_after = tx->ops->doc_meta(tx, j->d.bill_id, j->d.report_id, &j->meta);
	return j->fail_after ? LH_ECONFLICT : LH_OK;
}

static void doc_fill(struct doc_job *j, const char *bill, const char *rep, int64_t version,
                     const unsigned char *data, size_t len)
{
	memset(j, 0, sizeof *j);
	snprintf(j->d.bill_id, sizeof j->d.bill_id, "%s", bill);
	snprintf(j->d.report_id, sizeof j->d.report_id, "%s", rep);
	snprintf(j->d.content_type, sizeof j->d.content_type, "application/pdf");
	j->d.size = (int64_t)len;
	memset(j->d.sha256, (int)version, sizeof j->d.sha256);
	j->d.version = version;
	j->d.updated_at = 1700000400 + version;
	j->data = data;
	j->len = len;
}

static void test_report_documents(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct bill_job bj;
	struct doc_job j;
	struct report_doc_info info;
	size_t len = 2 * REPORT_CHUNK + 5, got = 0;
	unsigned char *doc = malloc(len), *buf = malloc(REPORT_CHUNK);
	assert_non_null(doc);
	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		doc[i] = (unsigned char)(i * 7 + i / 251);

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	bill_fill(&bj, "bill_d", "");
	assert_int_equal(st->ops->submit(st, job_bill, &bj), LH_OK);

	/* A report without a document; unknown ones; another account's. */
	assert_int_equal(st->ops->report_doc_get(st, "", "bill_d", "bill_d_r0", &info), LH_OK);
	assert_int_equal(info.has_doc, 0);
	assert_string_equal(info.client_id, "cl_A");
	assert_int_equal(info.bill_status, BILL_PENDING);
	assert_int_equal(st->ops->report_doc_get(st, "cl_B", "bill_d", "bill_d_r0", &info),
	                 LH_ENOTFOUND);
	assert_int_equal(st->ops->report_doc_get(st, NULL, "bill_d", "bill_x_r0", &info),
	                 LH_ENOTFOUND);
	assert_int_equal(st->ops->report_doc_get(st, NULL, "bill_x", "bill_d_r0", &info),
	                 LH_ENOTFOUND);

	/* Stored in three chunks, read back chunk by chunk at its version only. */
	doc_fill(&j, "bill_d", "bill_d_r0", 1, doc, len);
	assert_int_equal(st->ops->submit(st, job_doc, &j), LH_OK);
	assert_int_equal(j.meta_before, LH_ENOTFOUND);
	assert_int_equal(j.meta_after, LH_OK);
	assert_int_equal(j.meta.size, (int64_t)len);
	assert_int_equal(j.meta.version, 1);
	assert_int_equal(st->ops->report_doc_get(st, "cl_A", "bill_d", "bill_d_r0", &info), LH_OK);
	assert_int_equal(info.has_doc, 1);
	assert_string_equal(info.doc.content_type, "application/pdf");
	assert_string_equal(info.doc.report_id, "bill_d_r0");
	assert_int_equal(info.doc.size, (int64_t)len);
	assert_int_equal(info.doc.version, 1);
	assert_int_equal(info.doc.updated_at, 1700000401);
	assert_memory_equal(info.doc.sha256, j.d.sha256, 32);
	for (int64_t n = 0; n < 3; n++) {
		assert_int_equal(st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 1, n, buf,
		                                           REPORT_CHUNK, &got),
		                 LH_OK);
		size_t want = n < 2 ? REPORT_CHUNK : 5;
		assert_int_equal(got, want);
		assert_memory_equal(buf, doc + n * REPORT_CHUNK, want);
	}
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 1, 3, buf, REPORT_CHUNK, &got),
	    LH_ENOTFOUND);
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 2, 0, buf, REPORT_CHUNK, &got),
	    LH_ENOTFOUND);

	/* A job that fails after storing keeps nothing of it. */
	doc_fill(&j, "bill_d", "bill_d_r0", 9, doc + 1, 10);
	j.fail_after = 1;
	assert_int_equal(st->ops->submit(st, job_doc, &j), LH_ECONFLICT);
	assert_int_equal(st->ops->report_doc_get(st, "", "bill_d", "bill_d_r0", &info), LH_OK);
	assert_int_equal(info.doc.version, 1);
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 1, 2, buf, REPORT_CHUNK, &got),
	    LH_OK);

	/* Replaced by a smaller one: the old chunks and version are gone. */
	doc_fill(&j, "bill_d", "bill_d_r0", 2, doc + 3, 100);
	assert_int_equal(st->ops->submit(st, job_doc, &j), LH_OK);
	assert_int_equal(j.meta_before, LH_OK);
	assert_int_equal(st->ops->report_doc_get(st, "", "bill_d", "bill_d_r0", &info), LH_OK);
	assert_int_equal(info.doc.version, 2);
	assert_int_equal(info.doc.size, 100);
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 2, 0, buf, REPORT_CHUNK, &got),
	    LH_OK);
	assert_int_equal(got, 100);
	assert_memory_equal(buf, doc + 3, 100);
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 2, 1, buf, REPORT_CHUNK, &got),
	    LH_ENOTFOUND);
	assert_int_equal(
	    st->ops->report_doc_chunk(st, "bill_d", "bill_d_r0", 1, 0, buf, REPORT_CHUNK, &got),
	    LH_ENOTFOUND);
	/* The other report of the bill still has none. */
	assert_int_equal(st->ops->report_doc_get(st, "", "bill_d", "bill_d_r1", &info), LH_OK);
	assert_int_equal(info.has_doc, 0);
	free(doc);
	free(buf);
}

struct lead_job {
	struct lead l;
	struct booking bk;
	int dup_contact, dup_email, dup_other;
	struct lead loaded;
	enum lh_err second_booking;
};

static enum lh_err job_lead(struct store_tx *tx, void *arg)
{
	struct lead_job *j = arg;
	enum lh_err e;
	if ((e = tx->ops->lead_insert(tx, &j->l)) != LH_OK)
		return e;
	if ((e = tx->ops->lead_dup(tx, "lab_1", j->l.day, j->l.contact, "", &j->dup_contact)) ||
	    (e = tx->ops->lead_dup(tx, "lab_1", j->l.day, "0000", j->l.email, &j->dup_email)) ||
	    (e = tx->ops->lead_dup(tx, "lab_1", "2001-01-01", j->l.contact, "", &j->dup_other)))
		return e;
	if ((e = tx->ops->booking_insert(tx, &j->bk)) != LH_OK ||
	    (e = tx->ops->lead_set_booking(tx, j->l.lead_id, j->bk.booking_id)) != LH_OK)
		return e;
	j->second_booking = tx->ops->lead_set_booking(tx, j->l.lead_id, "bk_2");
	return tx->ops->lead_load(tx, j->l.lead_id, &j->loaded);
}

static enum lh_err job_lead_missing(struct store_tx *tx, void *arg)
{
	struct lead l;
	int dup = 1;
	(void)arg;
	enum lh_err e = tx->ops->lead_dup(tx, "lab_1", "2026-01-01", "5555", "", &dup);
	assert_int_equal(e, LH_OK);
	assert_int_equal(dup, 0);
	return tx->ops->lead_load(tx, "lead_NONE", &l);
}

/* Lead lead_1 of cl_A in lab_1, and its booking bk_1. */
static void lead_fill(struct lead_job *j)
{
	memset(j, 0, sizeof *j);
	snprintf(j->l.lead_id, sizeof j->l.lead_id, "lead_1");
	snprintf(j->l.client_id, sizeof j->l.client_id, "cl_A");
	snprintf(j->l.lab_id, sizeof j->l.lab_id, "lab_1");
	snprintf(j->l.integrator_id, sizeof j->l.integrator_id, "integ");
	snprintf(j->l.contact, sizeof j->l.contact, "9876543210");
	snprintf(j->l.email, sizeof j->l.email, "a@example.com");
	snprintf(j->l.day, sizeof j->l.day, "2026-01-20");
	snprintf(j->l.parties.referred_org, sizeof j->l.parties.referred_org, "org_1");
	snprintf(j->l.data, sizeof j->l.data, "{\"x\":1}");
	j->l.created_at = 1700000000;
	snprintf(j->bk.booking_id, sizeof j->bk.booking_id, "bk_1");
	snprintf(j->bk.lead_id, sizeof j->bk.lead_id, "lead_1");
	snprintf(j->bk.client_id, sizeof j->bk.client_id, "cl_A");
	snprintf(j->bk.lab_id, sizeof j->bk.lab_id, "lab_1");
	snprintf(j->bk.booking_type, sizeof j->bk.booking_type, "home");
	snprintf(j->bk.scheduled_at, sizeof j->bk.scheduled_at, "2026-01-21T10:00:00Z");
}

static void test_leads_and_bookings(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct lead_job j;

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	lead_fill(&j);
	assert_int_equal(st->ops->submit(st, job_lead, &j), LH_OK);
	assert_int_equal(j.dup_contact, 1);
	assert_int_equal(j.dup_email, 1);
	assert_int_equal(j.dup_other, 0);
	assert_int_equal(j.second_booking, LH_ECONFLICT); /* booked once only */
	assert_string_equal(j.loaded.booking_id, "bk_1");
	assert_int_equal(j.loaded.phase, PHASE_BOOKING);
	assert_string_equal(j.loaded.parties.referred_org, "org_1");
	assert_string_equal(j.loaded.data, "{\"x\":1}");
	assert_string_equal(j.loaded.day, "2026-01-20");
	assert_int_equal(st->ops->submit(st, job_lead, &j), LH_ECONFLICT); /* the same lead id */
	assert_int_equal(st->ops->submit(st, job_lead_missing, NULL), LH_ENOTFOUND);
}

/* ---- concurrency ---- */

struct race {
	struct store *st;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ready, go;
	unsigned char token[32];
	enum refresh_result result[2];
	enum lh_err err[2];
};

struct racer {
	struct race *r;
	int k;
};

static void *rotate_racer(void *arg)
{
	struct racer *me = arg;
	struct race *r = me->r;
	unsigned char next[32];
	memcpy(next, r->token, 32);
	next[0] = (unsigned char)(0xa0 + me->k);
	pthread_mutex_lock(&r->mu);
	r->ready++;
	pthread_cond_broadcast(&r->cv);
	while (!r->go)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	r->err[me->k] = r->st->ops->refresh_rotate(r->st, r->token, "cl_A", 1000, next, 9000,
	                                           &r->result[me->k]);
	return NULL;
}

/* Two rotations of one refresh token at once: exactly one wins; the other sees a reused
 * token and the family, the winner's new token included, is revoked. */
static void test_refresh_rotation_race(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;

	make_account(st, "cl_A", &a);
	for (int round = 0; round < 8; round++) {
		struct race r = {
		    .st = st, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
		struct racer who[2] = {{&r, 0}, {&r, 1}};
		pthread_t t[2];
		char family[16];
		memset(r.token, round + 1, 32);
		snprintf(family, sizeof family, "fam%d", round);
		assert_int_equal(st->ops->refresh_insert(st, r.token, "cl_A", family, 5000), LH_OK);
		for (int i = 0; i < 2; i++)
			assert_int_equal(pthread_create(&t[i], NULL, rotate_racer, &who[i]), 0);
		pthread_mutex_lock(&r.mu);
		while (r.ready < 2)
			pthread_cond_wait(&r.cv, &r.mu);
		r.go = 1;
		pthread_cond_broadcast(&r.cv);
		pthread_mutex_unlock(&r.mu);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		assert_int_equal(r.err[0], LH_OK);
		assert_int_equal(r.err[1], LH_OK);
		int winner = r.result[0] == REFRESH_OK ? 0 : 1;
		assert_int_equal(r.result[winner], REFRESH_OK);
		assert_int_equal(r.result[1 - winner], REFRESH_REUSED);
		unsigned char won[32], next[32];
		enum refresh_result res = REFRESH_OK;
		memcpy(won, r.token, 32);
		won[0] = (unsigned char)(0xa0 + winner);
		memset(next, 0xee, 32);
		next[1] = (unsigned char)round;
		assert_int_equal(st->ops->refresh_rotate(st, won, "cl_A", 1000, next, 9000, &res),
		                 LH_OK);
		assert_int_not_equal(res, REFRESH_OK); /* the family is revoked */
	}
	/* A new secret revokes every token of the account. */
	unsigned char t1[32], t2[32], h[32];
	enum refresh_result res = REFRESH_UNKNOWN;
	struct account got;
	memset(t1, 0x71, 32);
	memset(t2, 0x72, 32);
	memset(h, 0x33, 32);
	assert_int_equal(st->ops->refresh_insert(st, t1, "cl_A", "famX", 5000), LH_OK);
	assert_int_equal(st->ops->account_set_secret(st, "cl_A", h, &got), LH_OK);
	assert_int_equal(st->ops->refresh_rotate(st, t1, "cl_A", 1000, t2, 9000, &res), LH_OK);
	assert_int_not_equal(res, REFRESH_OK);
}

struct submitter {
	struct store *st;
	int k;
};

static void *submit_many(void *arg)
{
	struct submitter *me = arg;
	for (int i = 0; i < 25; i++) {
		char ent[32];
		snprintf(ent, sizeof ent, "bill_%d_%d", me->k, i);
		struct event_job j = {ent, "{}", LH_OK, NULL, NULL};
		if (me->st->ops->submit(me->st, job_event, &j) != LH_OK)
			return (void *)1;
	}
	return NULL;
}

/* Events submitted from several threads at once: each gets its own seq, and a backlog
 * read after a seq misses none. */
static void test_concurrent_events(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL;
	size_t n = 0;
	pthread_t t[4];
	struct submitter who[4];

	outbox_setup(st);
	st->ops->set_commit_hook(st, on_commit_count, NULL);
	for (int i = 0; i < 4; i++) {
		who[i] = (struct submitter){st, i};
		assert_int_equal(pthread_create(&t[i], NULL, submit_many, &who[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		assert_null(rv);
	}
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 1000, &page, &n), LH_OK);
	assert_int_equal(n, 100);
	for (size_t i = 0; i < n; i++) {
		assert_true(i == 0 || page[i].event_seq > page[i - 1].event_seq);
		free(page[i].payload);
	}
	free(page);
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* A payload over DELIVERY_PAYLOAD_INLINE is not copied into deliveries (the hook's or a
 * pending page's): the engine reads it with event_payload. */
static void test_large_payload_not_inlined(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct delivery *page = NULL;
	size_t n = 0;
	char *big = malloc(DELIVERY_PAYLOAD_INLINE + 2), *got = NULL;
	assert_non_null(big);
	memset(big, 'y', DELIVERY_PAYLOAD_INLINE + 1);
	big[DELIVERY_PAYLOAD_INLINE + 1] = '\0';

	outbox_setup(st);
	struct event_job j = {"bill_1", big, LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	assert_int_equal(nhooked, 1);
	assert_null(hooked[0].payload);
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_null(page[0].payload);
	assert_int_equal(st->ops->event_payload(st, page[0].event_id, &got), LH_OK);
	assert_string_equal(got, big);
	free(got);
	free(page);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
	free(big);
}

/* ---- PostgreSQL: several nodes on one database, and a database that goes away ---- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Waits up to 10 s for the store's subs_version to pass v. */
static int version_passes(struct store *st, uint64_t v)
{
	for (int64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20))
		if (st->ops->subs_version(st) > v)
			return 1;
	return 0;
}

static void test_pg_two_nodes(void **state)
{
	struct fixture *f = *state;
	struct store *a = f->st, *b = NULL;
	struct account acct, got;
	struct subscription s;
	struct delivery *page = NULL;
	size_t n = 0;

	pg_only(f);
	assert_int_equal(open_store(f, &b), LH_OK); /* a second node, same database */
	make_account(a, "cl_A", &acct);
	assert_int_equal(b->ops->account_get(b, "cl_A", &got), LH_OK); /* no stale cache */
	make_lab(a, "cl_A", "lab_1");

	/* A subscription made on node a: node b hears of it, and routes to it at once. */
	uint64_t v = b->ops->subs_version(b);
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(a->ops->sub_insert(a, &s), LH_OK);
	assert_true(version_passes(b, v));
	/* The conflict rule holds across nodes (it is the database's). */
	make_sub(&s, "sub_2", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(b->ops->sub_insert(b, &s), LH_ECONFLICT);

	/* Events from both nodes, one after the other: seqs in commit order. */
	for (int i = 0; i < 6; i++) {
		char ent[32];
		snprintf(ent, sizeof ent, "e%d", i);
		struct event_job j = {ent, "{}", LH_OK, NULL, NULL};
		struct store *on = i % 2 ? b : a;
		assert_int_equal(on->ops->submit(on, job_event, &j), LH_OK);
	}
	assert_int_equal(a->ops->delivery_pending(a, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 6);
	for (size_t i = 0; i < n; i++) {
		char ent[32];
		snprintf(ent, sizeof ent, "e%zu", i);
		assert_string_equal(page[i].entity_id, ent);
		free(page[i].payload);
	}
	free(page);

	/* A delete on node b: node a routes nothing more to it. */
	v = a->ops->subs_version(a);
	make_sub(&s, "sub_1", "lab_1", 0);
	s.status = SUB_DELETED;
	assert_int_equal(b->ops->sub_update(b, &s, SUBF_STATUS, NULL), LH_OK);
	assert_true(version_passes(a, v));
	struct route_job r = {NULL, 0, EV_BILL_CREATED, 9};
	assert_int_equal(a->ops->submit(a, job_route, &r), LH_OK);
	assert_int_equal(r.got, 0);
	b->ops->close(b);
}

/* What node b's commit hook heard of other nodes' deliveries. */
static pthread_mutex_t heard_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sub_news heard[16];
static size_t nheard;
static int heard_lost;

static void on_news(void *ctx, struct store_news *nw)
{
	(void)ctx;
	pthread_mutex_lock(&heard_mu);
	for (size_t i = 0; i < nw->nsubs && nheard < 16; i++)
		heard[nheard++] = nw->subs[i];
	heard_lost |= nw->lost;
	pthread_mutex_unlock(&heard_mu);
	for (size_t i = 0; i < nw->nfresh; i++)
		free(nw->fresh[i].payload);
}

/* 1 once node b heard of sub_id (with this rescan flag), within 10 s. */
static int news_heard(const char *sub_id, int rescan)
{
	for (int64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20)) {
		pthread_mutex_lock(&heard_mu);
		int got = 0;
		for (size_t i = 0; i < nheard; i++)
			got |= strcmp(heard[i].sub_id, sub_id) == 0 && heard[i].rescan == rescan;
		pthread_mutex_unlock(&heard_mu);
		if (got)
			return 1;
	}
	return 0;
}

static const struct lease *lease_in(const struct lease *l, size_t n, const char *sub_id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].sub_id, sub_id) == 0)
			return &l[i];
	return NULL;
}

/* Two nodes: leases spread the subscriptions over them, a released or expired lease is
 * taken over with a higher epoch, an outcome made under the old epoch is refused (the
 * fence), and each node hears of the deliveries the other commits. */
static void test_pg_leases_fence_and_news(void **state)
{
	struct fixture *f = *state;
	struct store *a = f->st, *b = NULL;
	struct account acct;
	struct subscription s;
	struct lease *la = NULL, *lb = NULL;
	size_t na = 0, nb = 0, share = 0;
	int all = 1;
	int64_t expiry = 0;
	struct delivery *page = NULL;
	size_t n = 0;

	pg_only(f);
	make_account(a, "cl_A", &acct);
	make_lab(a, "cl_A", "lab_1");
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(a->ops->sub_insert(a, &s), LH_OK);
	make_sub(&s, "sub_2", "lab_1", 1u << EV_BILL_DELETED);
	assert_int_equal(a->ops->sub_insert(a, &s), LH_OK);

	/* Alone, node a takes both. */
	assert_int_equal(a->ops->lease_sync(a, 60000, &la, &na, &share, &all, &expiry), LH_OK);
	assert_int_equal(all, 0);
	assert_int_equal(share, 2);
	assert_int_equal(na, 2);
	assert_string_equal(la[0].sub_id, "sub_1"); /* ordered */
	int64_t epoch_a = la[0].epoch;
	free(la);

	/* Node b joins: its share is one, but both are held, so it gets none yet. */
	assert_int_equal(open_store(f, &b), LH_OK);
	b->ops->set_commit_hook(b, on_news, NULL);
	nheard = 0;
	heard_lost = 0;
	assert_int_equal(b->ops->lease_sync(b, 60000, &lb, &nb, &share, &all, &expiry), LH_OK);
	assert_int_equal(share, 1);
	assert_int_equal(nb, 0);
	assert_true(expiry > 50000 && expiry <= 60000); /* when node a's leases could lapse */
	free(lb);

	/* Node a gives sub_1 back; node b takes it under a higher epoch. */
	struct lease give = {"sub_1", epoch_a};
	assert_int_equal(a->ops->lease_release(a, &give, 1), LH_OK);
	assert_int_equal(b->ops->lease_sync(b, 60000, &lb, &nb, &share, &all, &expiry), LH_OK);
	assert_int_equal(nb, 1);
	assert_string_equal(lb[0].sub_id, "sub_1");
	assert_true(lb[0].epoch > epoch_a);
	int64_t epoch_b = lb[0].epoch;
	free(lb);
	assert_int_equal(a->ops->lease_sync(a, 60000, &la, &na, &share, &all, &expiry), LH_OK);
	assert_int_equal(na, 1);
	assert_null(lease_in(la, na, "sub_1"));
	free(la);

	/* A delivery committed on node a: node b, which sends it now, hears of it. */
	struct event_job j = {"bill_f", "{}", LH_OK, NULL, NULL};
	assert_int_equal(a->ops->submit(a, job_event, &j), LH_OK);
	assert_true(news_heard("sub_1", 0));
	assert_int_equal(b->ops->delivery_pending(b, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	struct delivery d = page[0];
	free(page[0].payload);
	free(page);

	/* The fence: node a's outcome under its old epoch is refused, node b's is kept. */
	struct delivery_result r = outcome(&d, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	r.epoch = epoch_a;
	assert_int_equal(a->ops->delivery_record(a, &r, 1), LH_OK);
	assert_int_equal(b->ops->delivery_pending(b, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1); /* still pending */
	free(page[0].payload);
	free(page);
	r.epoch = epoch_b;
	assert_int_equal(b->ops->delivery_record(b, &r, 1), LH_OK);
	assert_int_equal(b->ops->delivery_pending(b, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 0);
	free(page);

	/* A retry on node a of a delivery node b sends: node b hears it must read again. */
	struct delivery again;
	assert_int_equal(
	    a->ops->delivery_requeue(a, "cl_A", d.delivery_id, 1700000001000LL, &again), LH_OK);
	assert_true(news_heard("sub_1", 1));

	/* Node b stops renewing (a lease of 50 ms lapses) and leaves: node a, alone again,
	 * takes sub_1 back, and the epoch moves again. (A node killed outright leaves its row
	 * behind: it stops counting once its heartbeat is a lease-time old.) */
	assert_int_equal(b->ops->lease_sync(b, 50, &lb, &nb, &share, &all, &expiry), LH_OK);
	free(lb);
	b->ops->set_commit_hook(b, NULL, NULL);
	b->ops->close(b);
	lease_store = a;
	sleep_ms(120);
	assert_int_equal(a->ops->lease_sync(a, 60000, &la, &na, &share, &all, &expiry), LH_OK);
	assert_int_equal(share, 2);
	const struct lease *back = lease_in(la, na, "sub_1");
	assert_non_null(back);
	assert_true(back->epoch > epoch_b);
	free(la);

	/* A disabled subscription's lease neither counts toward the share nor is listed: a
	 * node holding it is not over its share (it gave a live one away as if it were). */
	make_sub(&s, "sub_2", "lab_1", 0);
	s.status = SUB_DISABLED;
	assert_int_equal(a->ops->sub_update(a, &s, SUBF_STATUS, NULL), LH_OK);
	assert_int_equal(a->ops->lease_sync(a, 60000, &la, &na, &share, &all, &expiry), LH_OK);
	assert_int_equal(share, 1);
	assert_int_equal(na, 1);
	assert_string_equal(la[0].sub_id, "sub_1");
	free(la);
}

/* A node that restarts (the same node id, kept in its data directory) takes its
 * subscriptions back at once, under a new epoch: the leases its earlier process held
 * lapse at open, so nothing waits a lease-time, and that process's outcomes are refused. */
static void test_pg_node_restart_takes_back_at_once(void **state)
{
	struct fixture *f = *state;
	struct store *n1 = NULL;
	struct account acct;
	struct subscription s;
	struct lease *l = NULL;
	size_t n = 0, share = 0;
	int all = 1;
	int64_t expiry = 0;

	pg_only(f);
	make_account(f->st, "cl_A", &acct);
	make_lab(f->st, "cl_A", "lab_1");
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(f->st->ops->sub_insert(f->st, &s), LH_OK);
	assert_int_equal(store_pg_open_as(f->pg, "node_restarting", &n1), LH_OK);
	assert_int_equal(n1->ops->lease_sync(n1, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	assert_int_equal(n, 1);
	int64_t before = l[0].epoch;
	free(l);
	n1->ops->close(n1); /* killed, say: its lease has 60 s to run */
	assert_int_equal(store_pg_open_as(f->pg, "node_restarting", &n1), LH_OK);
	assert_int_equal(n1->ops->lease_sync(n1, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(l[0].sub_id, "sub_1");
	assert_true(l[0].epoch > before);
	free(l);
	n1->ops->close(n1);
	lease_store = f->st;
}

/* A node whose own lease lapsed (the database was away longer than a lease-time) and that
 * takes it back, no other node having held it, keeps its epoch: the outcomes it made
 * meanwhile, waiting for the database, are recorded rather than refused and sent again. */
static void test_pg_own_lapsed_lease_keeps_epoch(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account acct;
	struct subscription s;
	struct lease *l = NULL;
	size_t n = 0, share = 0;
	int all = 1;
	int64_t expiry = 0;
	struct delivery *page = NULL;
	size_t np = 0;

	pg_only(f);
	make_account(st, "cl_A", &acct);
	make_lab(st, "cl_A", "lab_1");
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	assert_int_equal(st->ops->lease_sync(st, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	assert_int_equal(n, 1);
	int64_t epoch = l[0].epoch;
	free(l);
	struct event_job j = {"bill_f", "{}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &j), LH_OK);
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &np), LH_OK);
	assert_int_equal(np, 1);
	struct delivery d = page[0];
	free(page[0].payload);
	free(page);

	/* Sent under the lease, then the lease lapses before the outcome could be recorded. */
	struct delivery_result r = outcome(&d, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	r.epoch = epoch;
	assert_int_equal(st->ops->lease_sync(st, 50, &l, &n, &share, &all, &expiry), LH_OK);
	free(l);
	sleep_ms(120);
	assert_int_equal(st->ops->lease_sync(st, 60000, &l, &n, &share, &all, &expiry), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(l[0].sub_id, "sub_1");
	assert_int_equal(l[0].epoch, epoch); /* nobody else held it: the same epoch */
	free(l);
	assert_int_equal(st->ops->delivery_record(st, &r, 1), LH_OK);
	assert_int_equal(st->ops->delivery_pending(st, 0, "sub_1", 10, &page, &np), LH_OK);
	assert_int_equal(np, 0); /* recorded: not sent again */
	free(page);
}

/* A database on which commits are not durable when acknowledged is refused. */
static void test_pg_refuses_synchronous_commit_off(void **state)
{
	struct fixture *f = *state;
	struct store *st = NULL;
	char uri[1024];

	pg_only(f);
	snprintf(uri, sizeof uri, "%s%coptions=-csynchronous_commit%%3Doff", f->pg,
	         strchr(f->pg, '?') ? '&' : '?');
	assert_int_equal(store_pg_open(uri, &st), LH_ESTORE);
	assert_null(st);
	snprintf(uri, sizeof uri, "%s%coptions=-csynchronous_commit%%3Dlocal", f->pg,
	         strchr(f->pg, '?') ? '&' : '?');
	assert_int_equal(store_pg_open(uri, &st), LH_OK); /* durable locally: fine */
	st->ops->close(st);
}

/* Runs a PostgreSQL program of the throwaway server (tests/pg/with_pg.py) on it: as its
 * owner, postgres, when we are root. */
static int pg_ctl(const char *args)
{
	const char *bin = getenv("LABHOOK_TEST_PG_BIN"), *dir = getenv("LABHOOK_TEST_PG_DIR");
	const char *port = getenv("LABHOOK_TEST_PG_PORT");
	char cmd[1024];
	if (!bin || !dir || !port)
		return -1;
	snprintf(cmd, sizeof cmd,
	         "%s %s/pg_ctl -D %s/data -l %s/server.log -w -m fast"
	         " -o \"-c listen_addresses='' -k %s -p %s -c max_connections=200\" %s"
	         " >/dev/null",
	         geteuid() == 0 ? "runuser -u postgres --" : "", bin, dir, dir, dir, port, args);
	return system(cmd);
}

/* The writer's connection, killed from outside while it is inside a batch. */
static int kill_writer_session(void)
{
	const char *bin = getenv("LABHOOK_TEST_PG_BIN"), *uri = getenv("LABHOOK_TEST_PG");
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
	         "%s/psql -q -t '%s' -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
	         " WHERE application_name = 'labhook' AND state = 'idle in transaction'\""
	         " >/dev/null",
	         bin, uri);
	return system(cmd);
}

static enum lh_err job_kill_then_event(struct store_tx *tx, void *arg)
{
	assert_int_equal(kill_writer_session(), 0);
	return job_event(tx, arg);
}

/* The connection lost in the middle of a batch: every job of it fails (LH_EUNAVAIL),
 * nothing is kept or handed to the engine, and the next batch reconnects. */
static void test_pg_connection_lost_mid_batch(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	enum lh_err got[3];
	struct event_job jobs[3] = {{"bill_1", "{}", LH_OK, NULL, NULL},
	                            {"bill_2", "{}", LH_OK, NULL, NULL},
	                            {"bill_3", "{}", LH_OK, NULL, NULL}};

	pg_only(f);
	if (!getenv("LABHOOK_TEST_PG_BIN"))
		skip();
	outbox_setup(st);
	batch_around(st, job_kill_then_event, jobs, 0, got);
	for (int i = 0; i < 3; i++)
		assert_int_equal(got[i], LH_EUNAVAIL);
	assert_int_equal(err_http_status(LH_EUNAVAIL), 503);
	assert_int_equal(nhooked, 1); /* the gated one's alone */
	hooked_clear();
	assert_int_equal(pending_count(st), 1);
	/* The next batch reconnects. */
	assert_int_equal(st->ops->submit(st, job_event, &jobs[2]), LH_OK);
	assert_int_equal(pending_count(st), 2);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

/* Retries op until it is LH_OK, for up to 10 s. */
#define EVENTUALLY_OK(op)                                                                          \
	do {                                                                                       \
		enum lh_err e_ = LH_EUNAVAIL;                                                      \
		for (int64_t end_ = now_ms() + 10000; now_ms() < end_; sleep_ms(50))               \
			if ((e_ = (op)) == LH_OK)                                                  \
				break;                                                             \
		assert_int_equal(e_, LH_OK);                                                       \
	} while (0)

/* The database stops: operations fail fast with LH_EUNAVAIL, reads and the writer alike.
 * It starts again: the same store works, without a restart, and re-reads subscriptions. */
static void test_pg_database_goes_away_and_back(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a, got;
	struct event_job j = {"bill_1", "{}", LH_OK, NULL, NULL};

	pg_only(f);
	if (!getenv("LABHOOK_TEST_PG_BIN"))
		skip();
	outbox_setup(st);
	hooked_clear();
	assert_int_equal(pg_ctl("stop"), 0);
	for (int i = 0; i < 3; i++) {
		int64_t t0 = now_ms();
		assert_int_equal(st->ops->account_get(st, "cl_A", &got), LH_EUNAVAIL);
		assert_int_equal(st->ops->submit(st, job_event, &j), LH_EUNAVAIL);
		assert_int_equal(st->ops->lab_insert(st, &(struct lab){"lab_9", "cl_A", "n", 0}),
		                 LH_EUNAVAIL);
		assert_true(now_ms() - t0 < 2000); /* fast, not a connect timeout each */
	}
	uint64_t v = st->ops->subs_version(st);
	assert_int_equal(pg_ctl("start"), 0);
	EVENTUALLY_OK(st->ops->account_get(st, "cl_A", &got));
	EVENTUALLY_OK(st->ops->submit(st, job_event, &j));
	assert_true(version_passes(st, v)); /* the listener is back, and said so */
	make_account(st, "cl_B", &a);
	assert_int_equal(pending_count(st), 1);
	hooked_clear();

	/* A restart between two operations: the next ones reconnect at once. */
	assert_int_equal(pg_ctl("restart"), 0);
	EVENTUALLY_OK(st->ops->account_get(st, "cl_B", &got));
	EVENTUALLY_OK(st->ops->submit(st, job_event, &j));
	assert_int_equal(pending_count(st), 2);
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}
/* ---- moving a store: export_rows and import_from ---- */

/* A second store of the backend under test, empty: SQLite in another directory; on
 * PostgreSQL the database labhook_copy, made anew beside the fixture's. */
struct second {
	char dir[64];
	char uri[1024];
};

static struct store *second_open(const struct fixture *f, struct second *w)
{
	struct store *st = NULL;
	char cmd[2600];
	memset(w, 0, sizeof *w);
	if (!f->pg) {
		snprintf(w->dir, sizeof w->dir, "/tmp/labhook-copy-XXXXXX");
		assert_non_null(mkdtemp(w->dir));
		assert_int_equal(store_sqlite_open(w->dir, &st), LH_OK);
		return st;
	}
	const char *db = strstr(f->pg, "/labhook?"), *bin = getenv("LABHOOK_TEST_PG_BIN");
	if (!db)
		skip(); /* not the URI tests/pg/with_pg.py makes: no second database to be had */
	snprintf(w->uri, sizeof w->uri, "%.*s/labhook_copy%s", (int)(db - f->pg), f->pg, db + 8);
	snprintf(cmd, sizeof cmd,
	         "%s%spsql -q '%s' -c 'SET client_min_messages = warning'"
	         " -c 'DROP DATABASE IF EXISTS labhook_copy WITH (FORCE)'"
	         " -c 'CREATE DATABASE labhook_copy' >/dev/null",
	         bin ? bin : "", bin ? "/" : "", f->pg);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(store_pg_open(w->uri, &st), LH_OK);
	return st;
}

static void second_close(struct store *st, const struct second *w)
{
	char cmd[128];
	st->ops->close(st);
	if (w->dir[0]) {
		snprintf(cmd, sizeof cmd, "rm -rf %s", w->dir);
		assert_int_equal(system(cmd), 0);
	}
}

/* Every exported row as a line "table|value|..." (bytes as x and hex, NULL as \N), so two
 * stores compare whole. */
struct dump {
	char *buf;
	size_t len, cap;
};

static void dump_put(struct dump *d, const char *p, size_t n)
{
	assert_int_equal(UTIL_GROW(d->buf, d->cap, d->len + n + 1, 4096), 0);
	memcpy(d->buf + d->len, p, n);
	d->len += n;
	d->buf[d->len] = '\0';
}

static enum lh_err dump_row(void *ctx, size_t t, const struct store_val *v)
{
	struct dump *d = ctx;
	const struct store_table *tb = &store_copy_tables[t];
	dump_put(d, tb->name, strlen(tb->name));
	for (size_t i = 0; i < tb->ncols; i++) {
		dump_put(d, "|", 1);
		if (v[i].kind == STORE_VAL_NULL) {
			dump_put(d, "\\N", 2);
		} else if (v[i].kind == STORE_VAL_BYTES) {
			dump_put(d, "x", 1);
			for (size_t k = 0; k < v[i].len; k++) {
				char h[3];
				snprintf(h, sizeof h, "%02x", (unsigned char)v[i].p[k]);
				dump_put(d, h, 2);
			}
		} else {
			assert_int_equal(strlen(v[i].p), v[i].len);
			dump_put(d, v[i].p, v[i].len);
		}
	}
	dump_put(d, "\n", 1);
	return LH_OK;
}

/* The whole store as text (free it); rows gets the counts. */
static char *dump_store(struct store *st, int64_t rows[STORE_COPY_NTABLES])
{
	struct dump d = {NULL, 0, 0};
	dump_put(&d, "", 0);
	assert_int_equal(st->ops->export_rows(st, dump_row, &d, rows), LH_OK);
	return d.buf;
}

static int64_t copied(const int64_t rows[STORE_COPY_NTABLES], const char *table)
{
	for (size_t i = 0; i < STORE_COPY_NTABLES; i++)
		if (strcmp(store_copy_tables[i].name, table) == 0)
			return rows[i];
	fail_msg("no table %s", table);
	return -1;
}

#define COPY_PAYLOAD "{\"n\":1,\n\t\"s\":\"back\\\\slash \\\"q\\\" Zoë\"}"

/* A store with some of everything a copy moves: the signing and admin keys, two accounts
 * (one party-scoped, with a party), a refresh token, three subscriptions (sub_1 paused,
 * sub_3 deleted), three bills (two without a bar code: NULL, which the unique index lets
 * repeat), a lead and its booking, three events to sub_1, one delivered with its attempt
 * and two pending, and text that needs escaping (tabs, newlines, quotes, backslashes). */
static void copy_fill(struct store *st)
{
	struct account a;
	struct subscription s;
	struct bill_job b;
	struct lead_job l;
	unsigned char t1[32];
	char out[64];
	const char *bars[3] = {"BAR-1", "", ""};

	assert_int_equal(st->ops->meta_get_or_put(st, "jwt_hs256_key", "key-src", out, sizeof out),
	                 LH_OK);
	assert_int_equal(st->ops->meta_get_or_put(st, "admin_key", "lhk_src", out, sizeof out),
	                 LH_OK);
	make_account(st, "cl_A", &a);
	make_account(st, "cl_B", &a);
	assert_int_equal(st->ops->account_set_mode(st, "cl_B", MODE_PARTY_SCOPED, &a), LH_OK);
	make_lab(st, "cl_A", "lab_1");
	make_lab(st, "cl_B", "lab_2");
	make_party(st, "cl_B", "cu_1", PARTY_CORPORATE_USER);
	struct catalog_item items[] = {cat_item(CATALOG_TEST, "T1", "CBC", 100),
	                               cat_item(CATALOG_PACKAGE, "P1", "Pack", 200)};
	struct catalog_member members[] = {cat_member("P1", "T1")};
	assert_int_equal(st->ops->catalog_put(st, "lab_2", items, 2, members, 1, NULL), LH_OK);
	assert_int_equal(st->ops->catalog_rate_set(st, "lab_2", CATALOG_TEST, "T1", "cu_1", 90),
	                 LH_OK);
	memset(t1, 1, 32);
	assert_int_equal(st->ops->refresh_insert(st, t1, "cl_A", "fam1", 4000000000LL), LH_OK);
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	snprintf(s.auth_token, sizeof s.auth_token, "tok\t\"x\"\\\n");
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	make_sub(&s, "sub_2", "lab_2", 1u << EV_BILL_CREATED);
	snprintf(s.client_id, sizeof s.client_id, "cl_B");
	snprintf(s.party_id, sizeof s.party_id, "cu_1");
	s.party_kind = PARTY_CORPORATE_USER;
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	make_sub(&s, "sub_3", "lab_1", 1u << EV_BILL_DELETED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	s.status = SUB_DELETED;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, NULL), LH_OK);
	for (int i = 0; i < 3; i++) {
		char id[16];
		snprintf(id, sizeof id, "bill_%d", i + 1);
		bill_fill(&b, id, bars[i]);
		assert_int_equal(st->ops->submit(st, job_bill, &b), LH_OK);
	}
	lead_fill(&l);
	assert_int_equal(st->ops->submit(st, job_lead, &l), LH_OK);
	struct event_job ev[3] = {{"bill_1", COPY_PAYLOAD, LH_OK, NULL, NULL},
	                          {"bill_1", "{\"n\":2}", LH_OK, NULL, NULL},
	                          {"bill_2", "{\"n\":3}", LH_OK, NULL, NULL}};
	for (int i = 0; i < 3; i++)
		assert_int_equal(st->ops->submit(st, job_event, &ev[i]), LH_OK);
	deliver_first(st, 3);
	static const unsigned char doc[] = "%PDF-1.7\n\0\t\\ binary";
	struct doc_job dj;
	doc_fill(&dj, "bill_1", "bill_1_r0", 1, doc, sizeof doc);
	assert_int_equal(st->ops->submit(st, job_doc, &dj), LH_OK);
	make_sub(&s, "sub_1", "lab_1", 0);
	s.status = SUB_PAUSED;
	assert_int_equal(st->ops->sub_update(st, &s, SUBF_STATUS, NULL), LH_OK);
}

/* What the copy of copy_fill's store must hold, read through the store's own operations:
 * the keys, an account's secret, a paused subscription, the pending deliveries in their
 * order with their payloads and seqs, a refresh token that still rotates, a bill without a
 * bar code; and the copy works on: a new event routes to the copied subscription and its
 * seq follows the copied ones. */
static void copy_check(struct store *dst)
{
	struct account a;
	struct subscription s;
	struct delivery *page = NULL;
	struct bill b;
	struct report *reports = NULL;
	unsigned char t1[32], t2[32];
	enum refresh_result rr = REFRESH_UNKNOWN;
	char out[64];
	size_t n = 0;

	assert_int_equal(dst->ops->meta_get_or_put(dst, "jwt_hs256_key", "x", out, sizeof out),
	                 LH_OK);
	assert_string_equal(out, "key-src");
	assert_int_equal(dst->ops->meta_get_or_put(dst, "admin_key", "x", out, sizeof out), LH_OK);
	assert_string_equal(out, "lhk_src");
	struct report_doc_info info;
	unsigned char chunk[64];
	assert_int_equal(dst->ops->report_doc_get(dst, "cl_A", "bill_1", "bill_1_r0", &info),
	                 LH_OK);
	assert_int_equal(info.has_doc, 1);
	assert_int_equal(info.doc.size, 20);
	assert_int_equal(
	    dst->ops->report_doc_chunk(dst, "bill_1", "bill_1_r0", 1, 0, chunk, sizeof chunk, &n),
	    LH_OK);
	assert_int_equal(n, 20);
	assert_memory_equal(chunk, "%PDF-1.7\n\0\t\\ binary", 20);
	n = 0;
	assert_int_equal(dst->ops->account_get(dst, "cl_B", &a), LH_OK);
	assert_int_equal(a.mode, MODE_PARTY_SCOPED);
	memset(t1, 0x11, 32);
	assert_memory_equal(a.secret_hash, t1, 32);
	assert_int_equal(dst->ops->sub_get(dst, "cl_A", "sub_1", &s), LH_OK);
	assert_int_equal(s.status, SUB_PAUSED);
	assert_string_equal(s.auth_token, "tok\t\"x\"\\\n");
	assert_int_equal(dst->ops->sub_get(dst, "cl_A", "sub_3", &s), LH_ENOTFOUND); /* deleted */
	assert_int_equal(dst->ops->delivery_pending(dst, 0, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 2);
	assert_string_equal(page[0].entity_id, "bill_1");
	assert_string_equal(page[0].payload, "{\"n\":2}");
	assert_string_equal(page[1].entity_id, "bill_2");
	assert_true(page[0].event_seq < page[1].event_seq);
	int64_t last_seq = page[1].event_seq;
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	memset(t1, 1, 32);
	memset(t2, 2, 32);
	assert_int_equal(dst->ops->refresh_rotate(dst, t1, "cl_A", 1000, t2, 4000000000LL, &rr),
	                 LH_OK);
	assert_int_equal(rr, REFRESH_OK);
	assert_int_equal(dst->ops->bill_get(dst, "cl_A", "bill_2", &b, &reports, &n), LH_OK);
	assert_string_equal(b.bar_code, "");
	assert_int_equal(n, 2);
	free(reports);

	/* Resumed, sub_1 takes the next event (routing reads the copied subscriptions), after
	 * the copied ones in seq order. */
	make_sub(&s, "sub_1", "lab_1", 0);
	s.status = SUB_ACTIVE;
	assert_int_equal(dst->ops->sub_update(dst, &s, SUBF_STATUS, NULL), LH_OK);
	struct event_job j = {"bill_3", "{\"n\":4}", LH_OK, NULL, NULL};
	assert_int_equal(dst->ops->submit(dst, job_event, &j), LH_OK);
	assert_int_equal(dst->ops->delivery_pending(dst, last_seq, "sub_1", 10, &page, &n), LH_OK);
	assert_int_equal(n, 1);
	assert_string_equal(page[0].entity_id, "bill_3");
	assert_true(page[0].event_seq > last_seq);
	free(page[0].payload);
	free(page);
}

/* Everything moves, and the copy is the source to the last byte (its export equals the
 * source's), into a store that a node had already opened (its own signing key is replaced
 * by the source's). */
static void test_copy_moves_everything(void **state)
{
	struct fixture *f = *state;
	struct store *src = f->st, *dst;
	struct second w;
	int64_t rows[STORE_COPY_NTABLES], got[STORE_COPY_NTABLES];
	char out[64];

	copy_fill(src);
	char *before = dump_store(src, rows);
	dst = second_open(f, &w);
	assert_int_equal(
	    dst->ops->meta_get_or_put(dst, "jwt_hs256_key", "key-dst", out, sizeof out), LH_OK);
	assert_int_equal(dst->ops->import_from(dst, dst, got), LH_EINVAL);
	assert_int_equal(dst->ops->import_from(dst, src, got), LH_OK);
	assert_memory_equal(rows, got, sizeof rows);
	assert_int_equal(copied(got, "meta"), 2);
	assert_int_equal(copied(got, "accounts"), 2);
	assert_int_equal(copied(got, "subscriptions"), 3);
	assert_int_equal(copied(got, "subscription_events"), 2);
	assert_int_equal(copied(got, "bills"), 3);
	assert_int_equal(copied(got, "reports"), 6);
	assert_int_equal(copied(got, "bookings"), 1);
	assert_int_equal(copied(got, "events"), 3);
	assert_int_equal(copied(got, "deliveries"), 3);
	assert_int_equal(copied(got, "attempts"), 1);
	assert_int_equal(copied(got, "catalog_items"), 2);
	assert_int_equal(copied(got, "catalog_members"), 1);
	assert_int_equal(copied(got, "catalog_rates"), 1);
	char *after = dump_store(dst, NULL);
	assert_string_equal(before, after);
	copy_check(dst);
	/* Now it holds data: a second copy is refused. */
	assert_int_equal(dst->ops->import_from(dst, src, got), LH_ECONFLICT);
	free(before);
	free(after);
	second_close(dst, &w);
}

/* A store that holds anything but meta rows takes no copy, and is left as it was. */
static void test_copy_refuses_a_store_with_data(void **state)
{
	struct fixture *f = *state;
	struct store *src = f->st, *dst;
	struct second w;
	struct account a;
	int64_t rows[STORE_COPY_NTABLES];

	copy_fill(src);
	dst = second_open(f, &w);
	make_account(dst, "cl_Z", &a);
	char *before = dump_store(dst, NULL);
	memset(rows, 0x5a, sizeof rows);
	assert_int_equal(dst->ops->import_from(dst, src, rows), LH_ECONFLICT);
	assert_int_equal((unsigned char)((unsigned char *)rows)[0], 0x5a); /* untouched */
	char *after = dump_store(dst, NULL);
	assert_string_equal(before, after);
	free(before);
	free(after);
	second_close(dst, &w);
}

/* A source whose export goes wrong: the real store's rows, then (mode) an error after the
 * first 12 rows, an account whose mode is not a number, or counts that are not what it
 * passed; or one that exports a missing bar code as "" instead of NULL. */
enum copy_fault { CF_FAIL_MIDWAY, CF_BAD_VALUE, CF_COUNTS_LIE, CF_EMPTY_BAR_CODE };
struct faulty_source {
	struct store base;
	struct store *real;
	enum copy_fault mode;
	size_t passed;
	store_row_fn fn;
	void *ctx;
};

static enum lh_err faulty_row(void *ctx, size_t t, const struct store_val *v)
{
	struct faulty_source *fs = ctx;
	struct store_val bad[STORE_COPY_MAXCOLS];
	if (fs->mode == CF_FAIL_MIDWAY && fs->passed == 12)
		return LH_EIO;
	fs->passed++;
	if (fs->mode == CF_BAD_VALUE && strcmp(store_copy_tables[t].name, "accounts") == 0) {
		memcpy(bad, v, store_copy_tables[t].ncols * sizeof *v);
		bad[2] = (struct store_val){STORE_VAL_TEXT, "two", 3}; /* mode */
		return fs->fn(fs->ctx, t, bad);
	}
	if (fs->mode == CF_EMPTY_BAR_CODE && strcmp(store_copy_tables[t].name, "bills") == 0 &&
	    v[5].kind == STORE_VAL_NULL) {
		memcpy(bad, v, store_copy_tables[t].ncols * sizeof *v);
		bad[5] = (struct store_val){STORE_VAL_TEXT, "", 0}; /* bar_code */
		return fs->fn(fs->ctx, t, bad);
	}
	return fs->fn(fs->ctx, t, v);
}

static enum lh_err faulty_export(struct store *base, store_row_fn fn, void *ctx,
                                 int64_t rows[STORE_COPY_NTABLES])
{
	struct faulty_source *fs = (struct faulty_source *)base;
	fs->fn = fn;
	fs->ctx = ctx;
	fs->passed = 0;
	enum lh_err e = fs->real->ops->export_rows(fs->real, faulty_row, fs, rows);
	if (e == LH_OK && fs->mode == CF_COUNTS_LIE)
		rows[12]++; /* one delivery (store_copy_tables) more than it passed */
	return e;
}

static const struct store_ops faulty_ops = {.name = "faulty", .export_rows = faulty_export};

/* A copy that fails anywhere (the source, a value, the final counts) leaves the target as
 * it was, meta rows included, and the next copy into it works. */
static void test_copy_failure_changes_nothing(void **state)
{
	struct fixture *f = *state;
	struct store *dst;
	struct second w;
	struct faulty_source fs = {{&faulty_ops}, f->st, CF_FAIL_MIDWAY, 0, NULL, NULL};
	const enum lh_err want[] = {LH_EIO, LH_EINVAL, LH_ESTORE};
	int64_t rows[STORE_COPY_NTABLES];
	char out[64];

	copy_fill(f->st);
	dst = second_open(f, &w);
	assert_int_equal(
	    dst->ops->meta_get_or_put(dst, "jwt_hs256_key", "key-dst", out, sizeof out), LH_OK);
	char *before = dump_store(dst, NULL);
	for (int m = CF_FAIL_MIDWAY; m <= CF_COUNTS_LIE; m++) {
		fs.mode = (enum copy_fault)m;
		assert_int_equal(dst->ops->import_from(dst, &fs.base, rows), want[m]);
		char *after = dump_store(dst, NULL);
		assert_string_equal(before, after);
		free(after);
	}
	assert_int_equal(dst->ops->import_from(dst, f->st, rows), LH_OK);
	copy_check(dst);
	free(before);
	second_close(dst, &w);
}

/* SQLite: a column the copy does not name is refused, in deliveries too, whose kept
 * attempt (schema 8) the copy reads through views that name their columns themselves:
 * checked on the views, the column was left out of the copy without a word. */
static void test_copy_refuses_an_unnamed_column(void **state)
{
	struct fixture *f = *state;
	struct store *dst;
	struct second w;
	int64_t rows[STORE_COPY_NTABLES];
	char path[128];
	sqlite3 *db = NULL;

	sqlite_only(f);
	copy_fill(f->st);
	dst = second_open(f, &w);
	assert_int_equal(dst->ops->import_from(dst, f->st, rows), LH_OK);
	second_close(dst, &w);

	/* What a later migration could add without naming it in store_copy_tables. */
	snprintf(path, sizeof path, "%s/labhook.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(
	    sqlite3_exec(db, "ALTER TABLE deliveries ADD COLUMN note TEXT", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	dst = second_open(f, &w);
	assert_int_equal(dst->ops->import_from(dst, f->st, rows), LH_ESTORE);
	second_close(dst, &w);
}

/* A missing bar code comes in as "" (as a store could once have kept it): it goes in as
 * NULL, so two bills without one do not collide on the unique (lab, bar code) rule. */
static void test_copy_empty_bar_code_is_null(void **state)
{
	struct fixture *f = *state;
	struct store *dst;
	struct second w;
	struct faulty_source fs = {{&faulty_ops}, f->st, CF_EMPTY_BAR_CODE, 0, NULL, NULL};
	int64_t rows[STORE_COPY_NTABLES];

	copy_fill(f->st); /* two of its bills have no bar code */
	char *before = dump_store(f->st, NULL);
	dst = second_open(f, &w);
	assert_int_equal(dst->ops->import_from(dst, &fs.base, rows), LH_OK);
	char *after = dump_store(dst, NULL);
	assert_string_equal(before, after); /* NULL, as in the source */
	free(before);
	free(after);
	second_close(dst, &w);
}

/* The upgrade path itself: a SQLite store copied into PostgreSQL (labhook store copy). */
static void test_copy_sqlite_into_pg(void **state)
{
	struct fixture *f = *state;
	struct store *src = NULL;
	char dir[64] = "/tmp/labhook-src-XXXXXX", cmd[128];
	int64_t rows[STORE_COPY_NTABLES];

	pg_only(f);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(store_sqlite_open(dir, &src), LH_OK);
	lease_store = src;
	copy_fill(src);
	char *before = dump_store(src, NULL);
	lease_store = f->st;
	assert_int_equal(f->st->ops->import_from(f->st, src, rows), LH_OK);
	char *after = dump_store(f->st, NULL);
	assert_string_equal(before, after);
	copy_check(f->st);
	free(before);
	free(after);
	src->ops->close(src);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- retention: old finished deliveries and unreferenced events go ---- */

/* The oldest pending delivery of sub_id (no payload kept). */
static struct delivery first_pending(struct store *st, const char *sub_id)
{
	struct delivery *page = NULL, d;
	size_t n = 0;
	assert_int_equal(st->ops->delivery_pending(st, 0, sub_id, 100, &page, &n), LH_OK);
	assert_true(n > 0);
	d = page[0];
	for (size_t i = 0; i < n; i++)
		free(page[i].payload);
	free(page);
	d.payload = NULL;
	return d;
}

/* A whole retention pass with `before`, in batches of `batch`: the rows it removed. */
static size_t sweep_pass(struct store *st, int64_t before, size_t batch)
{
	struct retention_cursor cur;
	size_t total = 0, removed = 0, calls = 0;
	memset(&cur, 0, sizeof cur);
	while (!cur.done) {
		assert_int_equal(st->ops->retention_sweep(st, before, batch, &cur, &removed),
		                 LH_OK);
		total += removed;
		assert_true(++calls < 1000);
	}
	/* A finished pass takes no more batches. */
	assert_int_equal(st->ops->retention_sweep(st, before, batch, &cur, &removed), LH_EINVAL);
	return total;
}

static size_t list_count(struct store *st, const char *sub_id)
{
	struct delivery *list = NULL;
	size_t n = 0;
	assert_int_equal(st->ops->delivery_list(st, "cl_A", sub_id, -1, 0, "", 100, &list, &n),
	                 LH_OK);
	free(list);
	return n;
}

static int event_kept(struct store *st, const char *event_id)
{
	char *payload = NULL;
	enum lh_err e = st->ops->event_payload(st, event_id, &payload);
	free(payload);
	assert_true(e == LH_OK || e == LH_ENOTFOUND);
	return e == LH_OK;
}

static void test_retention_sweep(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct attempt *at = NULL;
	struct bill b;
	struct report *reps = NULL;
	struct bill_job bill;
	size_t n = 0;
	const char *cu[] = {"cu_1"};

	outbox_setup(st); /* sub_1: catch-all, bill.created */
	add_party_sub(st, "sub_p", "lab_1", "cu_1", 1u << EV_BILL_CREATED);
	bill_fill(&bill, "bill_1", "bc-1");
	assert_int_equal(st->ops->submit(st, job_bill, &bill), LH_OK);

	/* e1: to sub_1 (delivered) and sub_p (still pending): the event stays. */
	struct route_job r1 = {cu, 1, EV_BILL_CREATED, 0};
	assert_int_equal(st->ops->submit(st, job_route, &r1), LH_OK);
	assert_int_equal(r1.got, 2);
	struct delivery d1 = first_pending(st, "sub_1"), d1p = first_pending(st, "sub_p");
	struct delivery_result res = outcome(&d1, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	assert_int_equal(st->ops->delivery_record(st, &res, 1), LH_OK);
	/* e2 delivered, e3 failed after two attempts: both go, with their attempts. */
	struct event_job e2 = {"bill_2", "{\"n\":2}", LH_OK, NULL, NULL};
	struct event_job e3 = {"bill_3", "{\"n\":3}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &e2), LH_OK);
	struct delivery d2 = first_pending(st, "sub_1");
	res = outcome(&d2, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	assert_int_equal(st->ops->delivery_record(st, &res, 1), LH_OK);
	assert_int_equal(st->ops->submit(st, job_event, &e3), LH_OK);
	struct delivery d3 = first_pending(st, "sub_1");
	struct delivery_result fails[2] = {outcome(&d3, 1, 500, DLV_PENDING, SUBO_FAILURE),
	                                   outcome(&d3, 2, 500, DLV_FAILED, SUBO_FAILURE)};
	assert_int_equal(st->ops->delivery_record(st, fails, 2), LH_OK);
	/* e4 pending: stays. */
	struct event_job e4 = {"bill_4", "{\"n\":4}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &e4), LH_OK);
	struct delivery d4 = first_pending(st, "sub_1");
	/* e5: nobody subscribed, no delivery at all: goes. */
	struct route_job r5 = {NULL, 0, EV_LEAD_CREATED, 0};
	assert_int_equal(st->ops->submit(st, job_route, &r5), LH_OK);
	assert_int_equal(r5.got, 0);
	/* e6 delivered later than the cutoff: stays (and so does its event). */
	struct event_job e6 = {"bill_6", "{\"n\":6}", LH_OK, NULL, NULL};
	assert_int_equal(st->ops->submit(st, job_event, &e6), LH_OK);
	struct delivery *page = NULL;
	assert_int_equal(st->ops->delivery_pending(st, d4.event_seq, "sub_1", 10, &page, &n),
	                 LH_OK);
	assert_int_equal(n, 1);
	struct delivery d6 = page[0];
	free(page[0].payload);
	free(page);
	res = outcome(&d6, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	res.now = 1700000100;
	assert_int_equal(st->ops->delivery_record(st, &res, 1), LH_OK);
	assert_int_equal(list_count(st, "sub_1"), 5);

	/* Nothing finished before 1700000000 (every outcome is later, every event made then). */
	assert_int_equal(sweep_pass(st, 1700000000, 500), 0);
	assert_int_equal(list_count(st, "sub_1"), 5);

	/* Batches of two rows: d1, d2, d3 and their four attempts, then e2, e3 and e5. */
	assert_int_equal(sweep_pass(st, 1700000050, 2), 10);
	assert_int_equal(list_count(st, "sub_1"), 2); /* d4 pending, d6 recent */
	assert_int_equal(list_count(st, "sub_p"), 1);
	assert_int_equal(st->ops->attempt_list(st, d3.delivery_id, &at, &n), LH_OK);
	assert_int_equal(n, 0);
	free(at);
	assert_true(event_kept(st, d1.event_id)); /* sub_p's delivery still pending */
	assert_false(event_kept(st, d2.event_id));
	assert_false(event_kept(st, d3.event_id));
	assert_true(event_kept(st, d4.event_id));
	assert_true(event_kept(st, d6.event_id));
	assert_int_equal(pending_count(st), 1);
	assert_string_equal(first_pending(st, "sub_1").delivery_id, d4.delivery_id);
	assert_string_equal(first_pending(st, "sub_p").delivery_id, d1p.delivery_id);
	/* The lab's records stay. */
	assert_int_equal(st->ops->bill_get(st, "cl_A", "bill_1", &b, &reps, &n), LH_OK);
	assert_int_equal(n, 2);
	free(reps);
	/* A late outcome for a removed delivery (it was cancelled while the attempt ran) is
	 * dropped: no attempt without its delivery, and the batch still commits. */
	res = outcome(&d3, 3, 200, DLV_DELIVERED, SUBO_NONE);
	assert_int_equal(st->ops->delivery_record(st, &res, 1), LH_OK);
	assert_int_equal(st->ops->attempt_list(st, d3.delivery_id, &at, &n), LH_OK);
	assert_int_equal(n, 0);
	free(at);
	assert_int_equal(list_count(st, "sub_1"), 2);
	/* Nothing left to remove: a pass again removes nothing. */
	assert_int_equal(sweep_pass(st, 1700000050, 500), 0);

	/* Once sub_p's delivery is finished, it and e1 go too; a retried delivery is pending
	 * again and stays. */
	res = outcome(&d1p, 1, 200, DLV_DELIVERED, SUBO_SUCCESS);
	assert_int_equal(st->ops->delivery_record(st, &res, 1), LH_OK);
	struct delivery again;
	assert_int_equal(
	    st->ops->delivery_requeue(st, "cl_A", d6.delivery_id, 1700000000000LL, &again), LH_OK);
	assert_int_equal(sweep_pass(st, 1700000200, 500), 3); /* d1p, its attempt, e1 */
	assert_false(event_kept(st, d1.event_id));
	assert_int_equal(list_count(st, "sub_p"), 0);
	assert_int_equal(list_count(st, "sub_1"), 2); /* d4 and d6, both pending */
	assert_true(event_kept(st, d6.event_id));
	hooked_clear();
	st->ops->set_commit_hook(st, NULL, NULL);
}

int main(void)
{
#define T(name)  cmocka_unit_test_setup_teardown(name, setup, teardown)
#define TF(name) cmocka_unit_test_setup_teardown(name, setup_faults, teardown_faults)
	const struct CMUnitTest tests[] = {
	    T(test_accounts),
	    T(test_labs_scoped_to_account),
	    T(test_parties_and_labs),
	    T(test_catalog),
	    T(test_refresh_rotation),
	    T(test_refresh_rotation_race),
	    T(test_one_live_subscription_per_event),
	    T(test_sub_update_changes_only_its_fields),
	    T(test_sub_update_conflict_changes_nothing),
	    T(test_sub_changes_are_announced),
	    T(test_async_submit_and_outbox),
	    T(test_routing_across_parties),
	    T(test_deleted_subscription_takes_no_deliveries),
	    T(test_delete_cancels_deliveries),
	    T(test_stats),
	    T(test_disable_outcome_frees_events),
	    T(test_pending_per_subscription),
	    T(test_delivery_lifecycle),
	    T(test_attempts_in_any_order),
	    T(test_retention_sweep),
	    T(test_event_party_limit),
	    T(test_large_payload_not_inlined),
	    T(test_bills_and_reports),
	    T(test_bills_refused_in_a_rerun_batch),
	    T(test_bill_conflict_is_told_to_its_own_job),
	    T(test_leads_and_bookings),
	    T(test_report_documents),
	    T(test_concurrent_events),
	    T(test_meta_first_writer_wins),
	    T(test_reopen_keeps_data),
	    T(test_copy_moves_everything),
	    T(test_copy_refuses_a_store_with_data),
	    T(test_copy_failure_changes_nothing),
	    T(test_copy_empty_bar_code_is_null),
	    T(test_copy_refuses_an_unnamed_column),
	    T(test_copy_sqlite_into_pg),
	    TF(test_failed_commit_keeps_nothing),
	    TF(test_full_disk_then_space_again),
	    TF(test_io_error_mid_batch_fails_every_job),
	    T(test_rerun_batch_undoes_only_the_failure),
	    T(test_pg_two_nodes),
	    T(test_pg_leases_fence_and_news),
	    T(test_pg_node_restart_takes_back_at_once),
	    T(test_pg_own_lapsed_lease_keeps_epoch),
	    T(test_pg_refuses_synchronous_commit_off),
	    T(test_pg_connection_lost_mid_batch),
	    T(test_pg_database_goes_away_and_back),
	};
#undef T
#undef TF
	return cmocka_run_group_tests(tests, NULL, NULL);
}
