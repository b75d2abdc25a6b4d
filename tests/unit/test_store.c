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
#include "store.h"

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
	assert_int_equal(st->ops->sub_update(st, &s1), LH_OK);
	make_sub(&s2, "sub_4", "lab_1", bc);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_ECONFLICT);
	s1.status = SUB_DELETED;
	assert_int_equal(st->ops->sub_update(st, &s1), LH_OK);
	assert_int_equal(st->ops->sub_insert(st, &s2), LH_OK);
	assert_int_equal(st->ops->sub_get(st, "cl_A", "sub_1", &got), LH_ENOTFOUND);
	assert_int_equal(st->ops->sub_update(st, &s1), LH_ENOTFOUND); /* deleted stays deleted */
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
	enum lh_err e = tx->ops->event_insert(tx, &ev, NULL, 0, NULL, &n);
	assert_int_equal(n, 1);
	return e == LH_OK ? j->then : e;
}

static struct delivery hooked[4];
static size_t nhooked;

static void on_commit(void *ctx, const struct delivery *d, size_t n)
{
	(void)ctx;
	for (size_t i = 0; i < n && nhooked < 4; i++)
		hooked[nhooked++] = d[i]; /* takes the payloads */
}

static void test_async_submit_and_outbox(void **state)
{
	struct fixture *f = *state;
	struct store *st = f->st;
	struct account a;
	struct subscription s;
	struct delivery *page = NULL;
	size_t n = 0;
	struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, LH_OK};

	make_account(st, "cl_A", &a);
	make_lab(st, "cl_A", "lab_1");
	make_sub(&s, "sub_1", "lab_1", 1u << EV_BILL_CREATED);
	assert_int_equal(st->ops->sub_insert(st, &s), LH_OK);
	nhooked = 0;
	st->ops->set_commit_hook(st, on_commit, NULL);

	/* Done once, durable by then, and the hook was handed the delivery with its payload. */
	struct event_job ok = {"bill_1", "{\"n\":1}", LH_OK, NULL};
	st->ops->submit_async(st, job_event, &ok, on_done, &w);
	assert_int_equal(wait_done(&w), LH_OK);
	assert_int_equal(w.calls, 1);
	assert_int_equal(nhooked, 1);
	assert_string_equal(hooked[0].sub_id, "sub_1");
	assert_non_null(hooked[0].payload);
	assert_string_equal(hooked[0].payload, "{\"n\":1}");
	free(hooked[0].payload);

	/* A job that fails is undone, alone, and its delivery never reaches the hook. */
	struct event_job bad = {"bill_2", "{\"n\":2}", LH_ECONFLICT, NULL};
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
		struct event_job j = {ent[i], "{}", LH_OK, i % 2 ? "lab_2" : "lab_1"};
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_labs_scoped_to_account, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refresh_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_one_live_subscription_per_event, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_async_submit_and_outbox, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pending_per_subscription, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_meta_first_writer_wins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
