/* store_pg.c: the PostgreSQL backend of store.h (see store_pg.h).
 *
 * Connections: `wc`, the writer's, used only by the lh-writer thread (the group commit of
 * store_writer.c, through the wb_* primitives and the tx ops); a pool of POOL_SIZE, each
 * borrowed for one operation, for reads and for the operations that run their own
 * transaction; and the listener's (LISTEN labhook_subs, its own thread). Statements are
 * prepared lazily per connection and cached by the address of their SQL text.
 * Every batch of the writer and every subscription change takes the advisory lock
 * LOCK_ORDER first (see wb_begin): it orders events across nodes and keeps routing, which
 * reads subscriptions from the database inside the event's transaction, from racing a
 * subscription change. Durable before LH_OK: synchronous_commit must not be off.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "store_pg.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "config.h"
#include "log.h"
#include "store_shared.h"
#include "store_writer.h"

#define POOL_SIZE      8
#define STMT_CACHE     96
#define PIPE_MAX       64 /* statements in one round trip on the writer's connection */
#define MAX_PARAMS     24
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LISTEN_POLL_MS 1000

/* Advisory lock keys (bigint): "lh" and a number, unlikely to meet another application's. */
#define LOCK_MIGRATE "7020658810001" /* session lock around the migrations at open */
#define LOCK_ORDER   "7020658810002" /* transaction lock: event order, routing vs. changes */

/* A batch of the writer, and a subscription change, begin with this. Why the lock:
 * - event_seq is the commit order across every node. The engine reads each subscription's
 *   backlog "after seq N" (delivery_pending) and moves N past what it has read, so a seq
 *   that committed after a larger one was read would never be sent. The lock is held from
 *   before the first event of a batch gets its seq (nextval) to the commit, so the seqs of
 *   transactions of different nodes are ordered as their commits are.
 * - Routing reads subscription_events inside the event's transaction. A subscription change
 *   holding the same lock commits either before the batch takes it (so routing, whose
 *   statements start after, sees the change) or after the batch commits (so a delete's
 *   cancellation sees the batch's deliveries): no delivery to a deleted subscription stays
 *   pending, and no event reaches two live holders.
 * - Taken before any row of the batch is written, it keeps one lock order (this lock, then
 *   rows) for every writer of subscriptions and deliveries, so they cannot deadlock. */
#define ORDER_LOCK    "SELECT pg_advisory_xact_lock(" LOCK_ORDER ")"
#define BEGIN_ORDERED "BEGIN; " ORDER_LOCK
/* A subscription change also tells the other nodes, at its commit. */
#define BEGIN_SUBS BEGIN_ORDERED "; NOTIFY labhook_subs"

struct pg_conn {
	PGconn *pg;
	const char *stmt[STMT_CACHE]; /* prepared as "s<index>" on this connection */
	size_t nstmt;
};

/* The subscriptions a batch made deliveries pending for, to tell the other nodes at its
 * commit (NOTIFY labhook_deliveries, "<node> <kind> <sub>,<sub>,..."). Past NEWS_MAX
 * subscriptions, or a payload near NOTIFY's 8,000 bytes, it says "all" instead. */
#define NEWS_MAX 64
struct batch_news {
	char subs[NEWS_MAX][ID_CAP];
	size_t n;
	int all;
};

/* Accounts and labs are read by every client request (the token check, then the lab named
 * in the body). Labs never change once created, so a lab read is kept. An account can
 * change on any node (a rotated secret, a new mode): a copy is kept for ACCOUNT_TTL_US
 * from the moment its read began, so another node's change is seen within that (a
 * rotated secret refuses the old tokens everywhere within 1 s), and this node's own
 * changes at once. Direct-mapped by a hash of the id: a collision replaces. */
#define CACHE_SLOTS    1024
#define ACCOUNT_TTL_US 500000
struct pg_cache {
	pthread_mutex_t mu;
	uint64_t gen; /* bumped by this node's account changes: a read begun before is not kept */
	struct account acct[CACHE_SLOTS];
	int64_t acct_read_us[CACHE_SLOTS]; /* when the read of the copy began (monotonic) */
	struct lab lab[CACHE_SLOTS];
};

struct pg_store {
	struct store base;
	struct store_tx tx;
	struct pg_cache *cache;
	char *uri;
	char node_id[ID_CAP]; /* this store is one node of the cluster */
	int64_t started_at;
	/* The writer's connection and its batch state: the writer thread only. */
	struct pg_conn wc;
	int release_pending;   /* the last job's savepoint is released with the next SAVEPOINT */
	int savepoint_pending; /* the job's SAVEPOINT goes with its first statement */
	int savepoint_open;    /* this job's SAVEPOINT is confirmed open */
	int job_sent_nothing;  /* the job failed before sending anything */
	int may_hold;          /* every job of the batch may run again: see hold */
	int npipe;             /* statements queued in pipeline mode, not yet answered */
	struct pipe_q {
		const char *what;
		unsigned char kind; /* enum pipe_kind */
		struct event ev;    /* PIPE_EVENT: what its deliveries are made of (no payload) */
	} pipe[PIPE_MAX];
	int subs_dirty; /* a job changed a subscription in the open batch */
	struct batch_news fresh_news, rescan_news; /* what the batch tells the other nodes */
	struct store_writer *writer;
	/* The pool: a slot is borrowed by one thread for one operation. */
	pthread_mutex_t pool_mu;
	pthread_cond_t pool_cv;
	struct pg_conn pool[POOL_SIZE];
	int busy[POOL_SIZE];
	/* Whether the database is reachable, for one log line per change and for backoff. */
	pthread_mutex_t health_mu;
	int down;
	int64_t next_try_us; /* no reconnection before (monotonic) */
	int backoff_ms;
	uint64_t subs_version; /* __atomic */
	/* The listener thread; wake[1] is written to stop it. */
	pthread_t listener;
	int listening;
	int wake[2];
	int stopping; /* __atomic */
};

/* The schema: the tables and columns of the SQLite backend's, in PostgreSQL types (BIGINT
 * for integers, BYTEA for hashes). Forward only; labhook_schema holds the version. */
static const char *const migrations[] = {
    /* 1: accounts, labs, parties, refresh tokens, subscriptions. */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE accounts(client_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " mode BIGINT NOT NULL, secret_hash BYTEA NOT NULL, secret_version BIGINT NOT NULL,"
    " created_at BIGINT NOT NULL);"
    "CREATE TABLE labs(lab_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), name TEXT NOT NULL,"
    " created_at BIGINT NOT NULL);"
    "CREATE INDEX labs_client ON labs(client_id, lab_id);"
    "CREATE TABLE parties(party_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), kind BIGINT NOT NULL,"
    " name TEXT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE INDEX parties_client ON parties(client_id, party_id);"
    "CREATE TABLE refresh_tokens(hash BYTEA PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), family TEXT NOT NULL,"
    " state BIGINT NOT NULL, expires_at BIGINT NOT NULL);"
    "CREATE INDEX refresh_family ON refresh_tokens(family);"
    "CREATE INDEX refresh_client ON refresh_tokens(client_id);"
    "CREATE TABLE subscriptions(sub_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), party_id TEXT NOT NULL,"
    " party_kind BIGINT NOT NULL, events BIGINT NOT NULL, endpoint TEXT NOT NULL,"
    " auth_token TEXT NOT NULL, status BIGINT NOT NULL, secret TEXT NOT NULL,"
    " prev_secret TEXT NOT NULL, prev_secret_until BIGINT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
    " failing_since BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX subs_client ON subscriptions(client_id, sub_id);"
    /* One row per (live subscription, event): the unique constraint is the 409 rule. */
    "CREATE TABLE subscription_events(sub_id TEXT NOT NULL REFERENCES subscriptions(sub_id),"
    " lab_id TEXT NOT NULL, party_id TEXT NOT NULL, event BIGINT NOT NULL,"
    " PRIMARY KEY(sub_id, event), CONSTRAINT sub_events_holder"
    " UNIQUE(lab_id, party_id, event));",
    /* 2: bills and reports, leads and bookings, events and their deliveries (the outbox). */
    "CREATE TABLE bills(bill_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " pre_booking_id TEXT NOT NULL, bar_code TEXT, lead_source TEXT NOT NULL,"
    " status BIGINT NOT NULL, corporate_user TEXT NOT NULL, referred_org TEXT NOT NULL,"
    " referred_hospital_org TEXT NOT NULL, patient TEXT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX bills_bar_code ON bills(lab_id, bar_code) WHERE bar_code IS NOT NULL;"
    "CREATE TABLE reports(report_id TEXT PRIMARY KEY,"
    " bill_id TEXT NOT NULL REFERENCES bills(bill_id), seq BIGINT NOT NULL,"
    " name TEXT NOT NULL, package TEXT NOT NULL, status BIGINT NOT NULL,"
    " completed_at BIGINT NOT NULL);"
    "CREATE INDEX reports_bill ON reports(bill_id, seq);"
    "CREATE TABLE leads(lead_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " phase BIGINT NOT NULL, contact TEXT NOT NULL, email TEXT NOT NULL, day TEXT NOT NULL,"
    " booking_id TEXT NOT NULL, corporate_user TEXT NOT NULL, referred_org TEXT NOT NULL,"
    " referred_hospital_org TEXT NOT NULL, data TEXT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE INDEX leads_contact ON leads(lab_id, day, contact);"
    "CREATE INDEX leads_email ON leads(lab_id, day, email);"
    "CREATE TABLE bookings(booking_id TEXT PRIMARY KEY, lead_id TEXT NOT NULL,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " booking_type TEXT NOT NULL, scheduled_at TEXT NOT NULL, corporate_user TEXT NOT NULL,"
    " referred_org TEXT NOT NULL, referred_hospital_org TEXT NOT NULL,"
    " created_at BIGINT NOT NULL);"
    /* seq comes from a sequence, under LOCK_ORDER: commit order across nodes. */
    "CREATE TABLE events(seq BIGSERIAL PRIMARY KEY,"
    " event_id TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL,"
    " lab_id TEXT NOT NULL, type BIGINT NOT NULL, entity_id TEXT NOT NULL,"
    " payload TEXT NOT NULL, created_at BIGINT NOT NULL);"
    /* The outbox. status: 0 pending, 1 delivered, 2 failed, 3 cancelled; next_at in ms. */
    "CREATE TABLE deliveries(delivery_id TEXT PRIMARY KEY,"
    " event_id TEXT NOT NULL REFERENCES events(event_id), event_seq BIGINT NOT NULL,"
    " event_type BIGINT NOT NULL, sub_id TEXT NOT NULL, entity_id TEXT NOT NULL,"
    " status BIGINT NOT NULL, attempts BIGINT NOT NULL, next_at BIGINT NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL);"
    /* Each subscription's backlog in event order, and which subscriptions have one. */
    "CREATE INDEX deliveries_pending ON deliveries(sub_id, event_seq) WHERE status = 0;"
    "CREATE INDEX deliveries_sub ON deliveries(sub_id, delivery_id);"
    "CREATE TABLE attempts(delivery_id TEXT NOT NULL REFERENCES deliveries(delivery_id),"
    " n BIGINT NOT NULL, started_at BIGINT NOT NULL, duration_ms BIGINT NOT NULL,"
    " status_code BIGINT NOT NULL, error TEXT NOT NULL, response TEXT NOT NULL,"
    " PRIMARY KEY(delivery_id, n));",
    /* 3: several nodes. A node row is its heartbeat; a lease says which node sends a
     * subscription's deliveries until when, and its epoch (bumped at every takeover) is
     * the fence its outcomes are checked against. Times on the database's clock. */
    "CREATE TABLE nodes(node_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid BIGINT NOT NULL,"
    " started_at BIGINT NOT NULL, seen_at TIMESTAMPTZ NOT NULL);"
    "CREATE TABLE leases(sub_id TEXT PRIMARY KEY REFERENCES subscriptions(sub_id),"
    " node_id TEXT NOT NULL, epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);"
    "CREATE INDEX leases_node ON leases(node_id, sub_id);",
    /* 4: retention removes events no delivery refers to any more: the check, and the
     * foreign key's own check on each event removed, are an index seek each instead of a
     * scan of every delivery. */
    "CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);",
    /* 5: report documents, in chunks of REPORT_CHUNK bytes (as in store_sqlite.c). */
    ("CREATE TABLE report_documents(bill_id TEXT NOT NULL,"
     " report_id TEXT NOT NULL REFERENCES reports(report_id), content_type TEXT NOT NULL,"
     " size BIGINT NOT NULL, sha256 BYTEA NOT NULL, version BIGINT NOT NULL,"
     " updated_at BIGINT NOT NULL, PRIMARY KEY(bill_id, report_id));"
     "CREATE TABLE report_chunks(bill_id TEXT NOT NULL, report_id TEXT NOT NULL,"
     " n BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY(bill_id, report_id, n));"),
    /* 6: each lab's catalog: tests and packages (kind 0, 1) with prices in minor units, the
     * tests of each package in order, and rates per party. */
    "CREATE TABLE catalog_items(lab_id TEXT NOT NULL REFERENCES labs(lab_id),"
    " kind BIGINT NOT NULL, item_id TEXT NOT NULL, name TEXT NOT NULL,"
    " price BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
    " PRIMARY KEY(lab_id, kind, item_id));"
    "CREATE TABLE catalog_members(lab_id TEXT NOT NULL, package_id TEXT NOT NULL,"
    " seq BIGINT NOT NULL, test_id TEXT NOT NULL, PRIMARY KEY(lab_id, package_id, seq));"
    "CREATE INDEX catalog_members_test ON catalog_members(lab_id, test_id);"
    "CREATE TABLE catalog_rates(lab_id TEXT NOT NULL, kind BIGINT NOT NULL,"
    " item_id TEXT NOT NULL, party_id TEXT NOT NULL REFERENCES parties(party_id),"
    " price BIGINT NOT NULL, PRIMARY KEY(lab_id, kind, item_id, party_id));",
};
#define N_MIGRATIONS (COUNTOF(migrations))

static struct pg_store *S(struct store *s)
{
	return (struct pg_store *)s;
}

static struct pg_store *TX(struct store_tx *tx)
{
	return (struct pg_store *)(void *)((char *)tx - offsetof(struct pg_store, tx));
}

/* A libpq message as one log value: whitespace runs (it has newlines and tabs) become one
 * space, quotes and anything unprintable are replaced, and it is cut to fit. */
static const char *msg_line(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; in && *in && o + 1 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
			if (o && out[o - 1] != ' ')
				out[o++] = ' ';
		} else {
			out[o++] = c == '"' || c == '\\'   ? '\''
			           : c < 0x20 || c >= 0x7f ? '?'
			                                   : (char)c;
		}
	}
	while (o && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	return out;
}

/* ---- reachability: one log line when the database goes away, one when it is back ---- */

/* The database could not be reached: a connect failed (retry after the backoff, doubled
 * from the second failure on) or, with lost set, a connection in use was lost (the next
 * operation reconnects at once). Logs once per outage. */
static void health_failed(struct pg_store *s, const PGconn *pg, int lost)
{
	char msg[256];
	pthread_mutex_lock(&s->health_mu);
	if (!s->down) {
		LOG(LOG_ERROR, "store",
		    "backend=postgresql err=\"%s\" the database is unreachable: operations fail"
		    " with 503 until it is back",
		    msg_line(pg ? PQerrorMessage(pg) : "out of memory", msg, sizeof msg));
		s->down = 1;
		s->backoff_ms = BACKOFF_MIN_MS;
		s->next_try_us = lost ? 0 : util_mono_us() + BACKOFF_MIN_MS * 1000;
	} else if (!lost) {
		s->backoff_ms =
		    s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
		s->next_try_us = util_mono_us() + (int64_t)s->backoff_ms * 1000;
	}
	pthread_mutex_unlock(&s->health_mu);
}

static void health_ok(struct pg_store *s)
{
	pthread_mutex_lock(&s->health_mu);
	if (s->down)
		LOG(LOG_INFO, "store", "backend=postgresql the database is reachable again");
	s->down = 0;
	s->backoff_ms = BACKOFF_MIN_MS;
	s->next_try_us = 0;
	pthread_mutex_unlock(&s->health_mu);
}

/* 1 if this thread may try to reconnect now. While the database is down, one thread per
 * backoff period probes it and the others fail at once, so no request waits on a connect
 * that is likely to fail (a connect to a silent host takes its whole timeout). */
static int health_may_try(struct pg_store *s)
{
	pthread_mutex_lock(&s->health_mu);
	int64_t now = util_mono_us();
	int ok = !s->down || now >= s->next_try_us;
	if (s->down && ok) /* claimed: the others wait for its outcome */
		s->next_try_us = now + (int64_t)s->backoff_ms * 1000;
	pthread_mutex_unlock(&s->health_mu);
	return ok;
}

/* ---- connections ---- */

/* Server notices (and the FATAL a terminated session is sent) go to the debug log, not to
 * libpq's default printer on stderr. */
static void on_notice(void *arg, const char *message)
{
	char msg[256];
	(void)arg;
	LOG(LOG_DEBUG, "store", "backend=postgresql notice=\"%s\"",
	    msg_line(message, msg, sizeof msg));
}

/* A new connection to s->uri (check PQstatus). The URI's own settings win over these:
 * - keepalives, so a server that vanished without a reset (a partition) is noticed by the
 *   listener and by an operation waiting on it (TCP only);
 * - idle_in_transaction_session_timeout: a node that stalls inside a batch (a pause, a
 *   partition) holds LOCK_ORDER, and every node's writer waits for it; the server ends
 *   such a session after 30 s. Our transactions are idle only between two statements. */
static PGconn *pg_connect(const struct pg_store *s)
{
	const char *const keys[] = {
	    "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
	    "keepalives_count", "options",          "dbname",          NULL};
	const char *const vals[] = {
	    "5",    "labhook", "30", "10", "3", "-c idle_in_transaction_session_timeout=30000",
	    s->uri, NULL};
	PGconn *pg = PQconnectdbParams(keys, vals, 1);
	if (pg)
		PQsetNoticeProcessor(pg, on_notice, NULL);
	return pg;
}

/* Refuses a server on which a commit could return before it is durable. */
static enum lh_err conn_check(PGconn *pg)
{
	PGresult *r = PQexec(pg, "SHOW synchronous_commit");
	enum lh_err e = LH_OK;
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		e = LH_EUNAVAIL;
	} else if (strcmp(PQgetvalue(r, 0, 0), "off") == 0) {
		LOG(LOG_ERROR, "store",
		    "backend=postgresql synchronous_commit=off commits would not be durable before"
		    " they are acknowledged: refusing the database (set synchronous_commit = on)");
		e = LH_ESTORE;
	}
	PQclear(r);
	return e;
}

/* Makes c usable: a connection found closed (an idle socket that reads as EOF or an error)
 * or broken by an earlier operation is reset, once; LH_EUNAVAIL if that fails or the
 * database is known down and its backoff has not passed. Prepared statements go with the
 * old session. */
static enum lh_err conn_ready(struct pg_store *s, struct pg_conn *c)
{
	/* Idle, yet readable: a notice, or the server ended the session (the FATAL it sends
	 * first, then end of file). Read to the end, so a closed one is reset now, not found
	 * out by a failed statement. */
	for (int k = 0; k < 4 && PQstatus(c->pg) == CONNECTION_OK; k++) {
		struct pollfd p = {PQsocket(c->pg), POLLIN, 0};
		if (poll(&p, 1, 0) <= 0 || !PQconsumeInput(c->pg))
			break;
	}
	if (PQstatus(c->pg) == CONNECTION_OK)
		return LH_OK;
	if (!health_may_try(s))
		return LH_EUNAVAIL;
	c->nstmt = 0;
	if (c->pg)
		PQreset(c->pg);
	else if (!(c->pg = pg_connect(s)))
		return LH_ENOMEM;
	if (PQstatus(c->pg) != CONNECTION_OK) {
		health_failed(s, c->pg, 0);
		return LH_EUNAVAIL;
	}
	enum lh_err e = conn_check(c->pg);
	if (e != LH_OK) {
		PQfinish(c->pg);
		c->pg = NULL;
		return e;
	}
	health_ok(s);
	return LH_OK;
}

static void conn_close(struct pg_conn *c)
{
	PQfinish(c->pg); /* accepts NULL */
	c->pg = NULL;
	c->nstmt = 0;
}

/* Borrows a pool connection, ready for use, for one operation: give it back with pool_put. */
static enum lh_err pool_get(struct pg_store *s, struct pg_conn **out)
{
	size_t i;
	pthread_mutex_lock(&s->pool_mu);
	for (;;) {
		for (i = 0; i < POOL_SIZE && s->busy[i]; i++)
			;
		if (i < POOL_SIZE)
			break;
		pthread_cond_wait(&s->pool_cv, &s->pool_mu);
	}
	s->busy[i] = 1;
	pthread_mutex_unlock(&s->pool_mu);
	enum lh_err e = conn_ready(s, &s->pool[i]);
	if (e != LH_OK) {
		pthread_mutex_lock(&s->pool_mu);
		s->busy[i] = 0;
		pthread_cond_signal(&s->pool_cv);
		pthread_mutex_unlock(&s->pool_mu);
		return e;
	}
	*out = &s->pool[i];
	return LH_OK;
}

static void pool_put(struct pg_store *s, struct pg_conn *c)
{
	size_t i = (size_t)(c - s->pool);
	assert(i < POOL_SIZE && s->busy[i]);
	pthread_mutex_lock(&s->pool_mu);
	s->busy[i] = 0;
	pthread_cond_signal(&s->pool_cv);
	pthread_mutex_unlock(&s->pool_mu);
}

/* ---- statements ---- */

/* Text parameters of one statement: strings are borrowed, numbers and hashes are formatted
 * here, arrays (text[] literals) are owned and freed by params_free. */
struct params {
	int n;
	const char *v[MAX_PARAMS];
	char buf[MAX_PARAMS][68];
	char *owned[16];
	int nowned;
};

static void p_text(struct params *p, const char *v)
{
	assert(p->n < MAX_PARAMS);
	p->v[p->n++] = v;
}

/* "" as SQL NULL (bar codes: NULL is outside the unique rule). */
static void p_text_or_null(struct params *p, const char *v)
{
	p_text(p, v[0] ? v : NULL);
}

static void p_i64(struct params *p, int64_t v)
{
	assert(p->n < MAX_PARAMS);
	snprintf(p->buf[p->n], sizeof p->buf[0], "%" PRId64, v);
	p->v[p->n] = p->buf[p->n];
	p->n++;
}

/* A 32-byte hash as a bytea literal: \x and 64 hex digits. */
static void p_hash(struct params *p, const unsigned char h[32])
{
	static const char hex[] = "0123456789abcdef";
	assert(p->n < MAX_PARAMS);
	char *o = p->buf[p->n];
	*o++ = '\\';
	*o++ = 'x';
	for (int i = 0; i < 32; i++) {
		*o++ = hex[h[i] >> 4];
		*o++ = hex[h[i] & 15];
	}
	*o = '\0';
	p->v[p->n] = p->buf[p->n];
	p->n++;
}

static void params_free(struct params *p)
{
	for (int i = 0; i < p->nowned; i++)
		free(p->owned[i]);
	p->nowned = 0;
}

/* A text[] literal being built: {"a","b"} with " and \ escaped. */
struct pg_array {
	char *buf;
	size_t len, cap;
	int oom;
};

static void arr_put(struct pg_array *a, const char *s, size_t n)
{
	if (a->oom || UTIL_GROW(a->buf, a->cap, a->len + n + 1, 256)) {
		a->oom = 1;
		return;
	}
	memcpy(a->buf + a->len, s, n);
	a->len += n;
	a->buf[a->len] = '\0';
}

static void arr_add(struct pg_array *a, const char *v)
{
	arr_put(a, a->len ? ",\"" : "{\"", 2);
	for (const char *q = v; *q; q++) {
		if (*q == '"' || *q == '\\')
			arr_put(a, "\\", 1);
		arr_put(a, q, 1);
	}
	arr_put(a, "\"", 1);
}

static void arr_add_i64(struct pg_array *a, int64_t v)
{
	char num[24];
	snprintf(num, sizeof num, "%" PRId64, v);
	arr_add(a, num);
}

/* Passes the array as the next parameter (taking its buffer); LH_ENOMEM if it ran out. */
static enum lh_err p_array(struct params *p, struct pg_array *a)
{
	if (!a->len)
		arr_put(a, "{", 1);
	arr_put(a, "}", 1);
	if (a->oom) {
		free(a->buf);
		return LH_ENOMEM;
	}
	assert(p->nowned < (int)COUNTOF(p->owned));
	p->owned[p->nowned++] = a->buf;
	p_text(p, a->buf);
	return LH_OK;
}

/* A failed result (or none) as a project error. A lost connection is LH_EUNAVAIL (the
 * next operation reconnects); an integrity violation (unique, foreign key, not null: class
 * 23) LH_ECONFLICT, as SQLite's constraint errors; a full disk LH_EFULL. */
static enum lh_err fail(struct pg_store *s, struct pg_conn *c, const PGresult *r, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	if (PQstatus(c->pg) != CONNECTION_OK ||
	    (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))) {
		health_failed(s, c->pg, 1);
		return LH_EUNAVAIL;
	}
	if (state && strncmp(state, "23", 2) == 0)
		return LH_ECONFLICT;
	/* The primary message only: the detail can quote the row's values. */
	char msg[256];
	LOG(LOG_ERROR, "store", "op=%s sqlstate=%s err=\"%s\" postgresql call failed", what,
	    state ? state : "-",
	    msg_line(r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : PQerrorMessage(c->pg),
	             msg, sizeof msg));
	if (!state)
		return LH_ENOMEM; /* no result from a connection that is fine: out of memory */
	if (strncmp(state, "22", 2) == 0)
		return LH_EINVAL; /* data exception: e.g. text that is not UTF-8 */
	if (strcmp(state, "53100") == 0)
		return LH_EFULL;
	if (strcmp(state, "58030") == 0)
		return LH_EDISK;
	return LH_ESTORE;
}

/* ---- the writer's pipeline: several statements, one round trip ----
 * A round trip costs the writer's connection more than most statements do (a wake-up on
 * each side), so statements on it are queued in pipeline mode and sent with one sync:
 * - A job's savepoint (store_writer.c opens one per job) is only noted by wb_savepoint and
 *   goes ahead of the job's first statement, after the previous job's RELEASE. A job that
 *   fails before any statement has nothing to undo, and ROLLBACK TO is then not sent (it
 *   would undo the previous job, whose savepoint is still open until its RELEASE goes).
 * - In a batch whose jobs may all run again (wb_begin's may_hold), the writes whose
 *   results no caller waits for (a bill with its reports; an event with its deliveries,
 *   which become fresh deliveries when answered) are held: queued without waiting, and
 *   answered with the next statement whose result is needed (a read), when the queue is
 *   full, or at the end of the jobs (wb_flush): one round trip for many jobs (libpq
 *   sends the queue when its buffer passes 64 KiB, or at the sync). A held statement's
 *   failure is reported late, perhaps to a later job (as a store error: its conflict is
 *   not that job's to refuse); the writer then rolls the batch back and runs it again with
 *   a savepoint per job, where nothing is held and each call reports its own outcome.
 * - The batch's BEGIN and order lock go with its first statement, its NOTIFY with its
 *   COMMIT. */

enum pipe_kind {
	PIPE_PLAIN,     /* its result is read and dropped */
	PIPE_SAVEPOINT, /* the job's SAVEPOINT: once it succeeded, ROLLBACK TO undoes the job */
	PIPE_LAST,      /* the statement whose result the caller gets */
	PIPE_EVENT,     /* a held event: its rows become fresh deliveries */
};

static enum lh_err event_rows(struct pg_store *s, const PGresult *r, const struct event *ev,
                              const char *only_sub, size_t *ndeliveries);

/* Queues one statement (prepared as name, or sql without parameters) in pipeline mode.
 * Returns 0 if it could not be sent; pipe_sync(s, 0, ...) then cleans up. */
static int pipe_send(struct pg_store *s, const char *name, const char *sql, const struct params *p,
                     enum pipe_kind kind, const struct event *ev, const char *what)
{
	PGconn *pg = s->wc.pg;
	assert(s->npipe < PIPE_MAX);
	if (s->npipe == 0 && !PQenterPipelineMode(pg))
		return 0;
	int ok = name ? PQsendQueryPrepared(pg, name, p->n, p->v, NULL, NULL, 0)
	              : PQsendQueryParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0);
	if (ok) {
		struct pipe_q *q = &s->pipe[s->npipe++];
		q->what = what;
		q->kind = (unsigned char)kind;
		if (ev) {
			q->ev = *ev;
			q->ev.payload = NULL;
		}
	}
	return ok;
}

/* Sends the sync (when sent, the queue went out whole) and reads every queued statement's
 * result, in order. Returns the first failure's error (later statements of a pipeline that
 * failed are aborted, not run), else LH_OK with the PIPE_LAST result in *out (may be NULL:
 * then it is dropped). Leaves pipeline mode. */
static enum lh_err pipe_sync(struct pg_store *s, int sent, PGresult **out, const char *what)
{
	PGconn *pg = s->wc.pg;
	int nq = s->npipe;
	s->npipe = 0;
	sent = sent && nq > 0 && PQpipelineSync(pg);
	/* Not sent: the connection went away (or libpq's memory did). */
	enum lh_err e = sent                            ? LH_OK
	                : PQstatus(pg) != CONNECTION_OK ? fail(s, &s->wc, NULL, what)
	                                                : LH_ESTORE;
	PGresult *last = NULL;
	for (int q = 0; q < nq && sent; q++) {
		PGresult *r = PQgetResult(pg);
		if (!r) { /* the connection went away */
			e = e == LH_OK ? fail(s, &s->wc, NULL, s->pipe[q].what) : e;
			break;
		}
		ExecStatusType st = PQresultStatus(r);
		int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
		if (ok && s->pipe[q].kind == PIPE_SAVEPOINT)
			s->savepoint_open = 1;
		if (!ok && e == LH_OK && st != PGRES_PIPELINE_ABORTED) {
			e = fail(s, &s->wc, r, s->pipe[q].what);
			/* A held statement's conflict (another job's duplicate bar code) is not the
			 * caller's to refuse: only its own statement's is (PIPE_LAST). */
			if (e == LH_ECONFLICT && s->pipe[q].kind != PIPE_LAST)
				e = LH_ESTORE;
		}
		if (ok && e == LH_OK && s->pipe[q].kind == PIPE_EVENT)
			e = event_rows(s, r, &s->pipe[q].ev, NULL, NULL);
		if (s->pipe[q].kind == PIPE_LAST && ok && e == LH_OK && out)
			last = r;
		else
			PQclear(r);
		PGresult *end = PQgetResult(pg); /* NULL: the end of this query's results */
		if (end) {
			PQclear(end);
			e = e == LH_OK ? LH_ESTORE : e;
		}
	}
	/* The sync's own result, then back to one query at a time. */
	for (PGresult *r; sent && (r = PQgetResult(pg)) != NULL;) {
		int sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
		PQclear(r);
		if (sync)
			break;
	}
	if (PQpipelineStatus(pg) != PQ_PIPELINE_OFF && !PQexitPipelineMode(pg)) {
		/* Left in pipeline mode (queries not answered: the connection went away), every
		 * later statement would fail: the connection is closed, which ends the
		 * transaction, so the batch fails as a whole, and the next batch connects again
		 * (conn_ready: within the backoff, and checked). */
		LOG(LOG_WARN, "store",
		    "op=%s the writer's connection is closed: %d statements unanswered", what, nq);
		conn_close(&s->wc);
		e = e == LH_OK ? LH_ESTORE : e;
	}
	if (e != LH_OK) {
		PQclear(last);
		return e;
	}
	if (out)
		*out = last;
	return LH_OK;
}

/* Queues the job's pending [RELEASE SAVEPOINT job,] SAVEPOINT job; 0 if they could not be
 * sent. */
static int pipe_savepoint(struct pg_store *s)
{
	int release = s->release_pending;
	if (!s->savepoint_pending)
		return 1;
	s->savepoint_pending = s->release_pending = 0;
	return (!release ||
	        pipe_send(s, NULL, "RELEASE SAVEPOINT job", NULL, PIPE_PLAIN, NULL, "savepoint")) &&
	       pipe_send(s, NULL, "SAVEPOINT job", NULL, PIPE_SAVEPOINT, NULL, "savepoint");
}

/* Answers what the writer's connection holds (before a statement that cannot be pipelined
 * with it): the pending RELEASE and SAVEPOINT, held statements. */
static enum lh_err pipe_flush(struct pg_store *s, struct pg_conn *c, const char *what)
{
	if (c != &s->wc || (!s->savepoint_pending && !s->npipe))
		return LH_OK;
	return pipe_sync(s, pipe_savepoint(s), NULL, what);
}

/* Runs a string of SQL without parameters (several statements allowed). */
static enum lh_err exec_sql(struct pg_store *s, struct pg_conn *c, const char *sql,
                            const char *what)
{
	enum lh_err e = pipe_flush(s, c, what);
	if (e != LH_OK)
		return e;
	PGresult *r = PQexec(c->pg, sql);
	ExecStatusType st = PQresultStatus(r);
	e = r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? LH_OK : fail(s, c, r, what);
	PQclear(r);
	return e;
}

/* The index of sql (a string literal) among c's prepared statements, prepared now if new;
 * STMT_CACHE past the cache (more statements than it holds). */
static enum lh_err stmt_prepare(struct pg_store *s, struct pg_conn *c, const char *sql,
                                const struct params *p, size_t *index, const char *what)
{
	size_t i;
	for (i = 0; i < c->nstmt && c->stmt[i] != sql; i++)
		;
	*index = i;
	if (i < c->nstmt || i >= STMT_CACHE)
		return LH_OK;
	enum lh_err e = pipe_flush(s, c, what); /* PQprepare waits for its answer */
	if (e != LH_OK)
		return e;
	char name[16];
	snprintf(name, sizeof name, "s%zu", i);
	PGresult *r = PQprepare(c->pg, name, sql, p->n, NULL);
	e = PQresultStatus(r) == PGRES_COMMAND_OK ? LH_OK : fail(s, c, r, what);
	PQclear(r);
	if (e == LH_OK)
		c->stmt[c->nstmt++] = sql;
	return e;
}

/* Runs sql (a string literal: prepared once per connection, cached by its address) with
 * p's parameters. On LH_OK *out holds the result: free it with PQclear. */
static enum lh_err run(struct pg_store *s, struct pg_conn *c, const char *sql,
                       const struct params *p, PGresult **out, const char *what)
{
	char name[16];
	size_t i;
	enum lh_err e = stmt_prepare(s, c, sql, p, &i, what);
	if (e != LH_OK)
		return e;
	snprintf(name, sizeof name, "s%zu", i);
	if (c == &s->wc && (s->savepoint_pending || s->npipe) && i < STMT_CACHE) {
		if (s->npipe > PIPE_MAX - 3 && (e = pipe_sync(s, 1, NULL, what)) != LH_OK)
			return e; /* no room left for the savepoint's two and this one */
		return pipe_sync(
		    s, pipe_savepoint(s) && pipe_send(s, name, NULL, p, PIPE_LAST, NULL, what), out,
		    what);
	}
	if ((e = pipe_flush(s, c, what)) != LH_OK)
		return e;
	/* Past the cache, unprepared. */
	PGresult *r = i < STMT_CACHE ? PQexecPrepared(c->pg, name, p->n, p->v, NULL, NULL, 0)
	                             : PQexecParams(c->pg, sql, p->n, NULL, p->v, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
		*out = r;
		return LH_OK;
	}
	e = fail(s, c, r, what);
	PQclear(r);
	return e;
}

/* Runs a write on the writer's connection that no caller waits for: held (see "the
 * writer's pipeline") when always or the batch's may_hold allows it, else at once. kind is
 * PIPE_PLAIN, or PIPE_EVENT with ev (the event whose deliveries sql returns). */
static enum lh_err hold(struct pg_store *s, const char *sql, const struct params *p, int always,
                        enum pipe_kind kind, const struct event *ev, const char *what)
{
	char name[16];
	size_t i;
	enum lh_err e = stmt_prepare(s, &s->wc, sql, p, &i, what);
	if (e == LH_OK && s->npipe > PIPE_MAX - 3)
		e = pipe_sync(s, 1, NULL, what); /* full: the held ones are answered first */
	if (e != LH_OK)
		return e;
	if (!(always || s->may_hold) || s->savepoint_pending || i >= STMT_CACHE) {
		PGresult *r = NULL;
		e = run(s, &s->wc, sql, p, &r, what);
		if (e == LH_OK && kind == PIPE_EVENT)
			e = event_rows(s, r, ev, NULL, NULL);
		PQclear(r);
		return e;
	}
	snprintf(name, sizeof name, "s%zu", i);
	return pipe_send(s, name, NULL, p, kind, ev, what) ? LH_OK : pipe_sync(s, 0, NULL, what);
}

/* Runs a statement whose rows are not read; *changed (may be NULL) gets the rows it
 * changed. */
static enum lh_err run_cmd(struct pg_store *s, struct pg_conn *c, const char *sql,
                           const struct params *p, int64_t *changed, const char *what)
{
	PGresult *r = NULL;
	enum lh_err e = run(s, c, sql, p, &r, what);
	if (e == LH_OK && changed)
		*changed = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return e;
}

/* ---- reading rows ---- */

static void col_text(const PGresult *r, int row, int col, char *out, size_t cap)
{
	const char *t = PQgetvalue(r, row, col); /* "" for NULL */
	size_t n = (size_t)PQgetlength(r, row, col);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, t, n);
	out[n] = '\0';
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A bytea of 32 bytes (text output: \x and hex); zeros if it is anything else. */
static void col_hash(const PGresult *r, int row, int col, unsigned char out[32])
{
	const char *t = PQgetvalue(r, row, col);
	memset(out, 0, 32);
	if (PQgetlength(r, row, col) != 66 || t[0] != '\\' || t[1] != 'x')
		return;
	for (int i = 0; i < 32; i++) {
		int hi = hexval(t[2 + 2 * i]), lo = hexval(t[3 + 2 * i]);
		if (hi < 0 || lo < 0)
			return;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
}

typedef void (*row_fn)(const PGresult *r, int row, void *out);

/* The rows of r as a new array of elem-byte records (free with free()). */
static enum lh_err rows_collect(const PGresult *r, size_t elem, row_fn from_row, void **out,
                                size_t *n)
{
	size_t cnt = (size_t)PQntuples(r);
	char *arr = calloc(cnt ? cnt : 1, elem);
	if (!arr)
		return LH_ENOMEM;
	for (size_t i = 0; i < cnt; i++)
		from_row(r, (int)i, arr + i * elem);
	*out = arr;
	*n = cnt;
	return LH_OK;
}

/* Runs a query and collects its rows (see rows_collect). */
static enum lh_err query_list(struct pg_store *s, struct pg_conn *c, const char *sql,
                              const struct params *p, size_t elem, row_fn from_row, void **out,
                              size_t *n, const char *what)
{
	PGresult *r = NULL;
	enum lh_err e = run(s, c, sql, p, &r, what);
	if (e == LH_OK)
		e = rows_collect(r, elem, from_row, out, n);
	PQclear(r);
	return e;
}

/* Runs a query for at most one row into out: LH_ENOTFOUND when there is none. */
static enum lh_err query_one(struct pg_store *s, struct pg_conn *c, const char *sql,
                             const struct params *p, row_fn from_row, void *out, const char *what)
{
	PGresult *r = NULL;
	enum lh_err e = run(s, c, sql, p, &r, what);
	if (e == LH_OK) {
		if (PQntuples(r) > 0)
			from_row(r, 0, out);
		else
			e = LH_ENOTFOUND;
	}
	PQclear(r);
	return e;
}

/* ---- transactions ---- */

/* Commits when e is LH_OK, else rolls back; leaves no transaction open. Returns the
 * outcome. (A COMMIT of a transaction an error aborted would answer ROLLBACK: checked.) */
static enum lh_err tx_close(struct pg_store *s, struct pg_conn *c, enum lh_err e)
{
	if (c == &s->wc && s->npipe) {
		/* Held statements: the COMMIT goes with them (or they are answered before the
		 * ROLLBACK). */
		enum lh_err f = pipe_sync(
		    s, e != LH_OK || pipe_send(s, NULL, "COMMIT", NULL, PIPE_PLAIN, NULL, "commit"),
		    NULL, "commit");
		e = e == LH_OK ? f : e;
	} else if (e == LH_OK)
		e = PQtransactionStatus(c->pg) == PQTRANS_INTRANS
		        ? exec_sql(s, c, "COMMIT", "commit")
		    : PQstatus(c->pg) == CONNECTION_OK ? LH_ESTORE
		                                       : LH_EUNAVAIL;
	PGTransactionStatusType ts = PQtransactionStatus(c->pg);
	if (e != LH_OK && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR))
		exec_sql(s, c, "ROLLBACK", "rollback");
	assert(PQtransactionStatus(c->pg) != PQTRANS_INTRANS &&
	       PQtransactionStatus(c->pg) != PQTRANS_INERROR);
	return e;
}

/* Borrows a pool connection and opens a transaction with begin_sql (BEGIN and whatever
 * must come first). End it with pool_end. */
static enum lh_err pool_begin(struct pg_store *s, const char *begin_sql, struct pg_conn **out)
{
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	if ((e = exec_sql(s, c, begin_sql, "begin")) != LH_OK) {
		tx_close(s, c, e);
		pool_put(s, c);
		return e;
	}
	*out = c;
	return LH_OK;
}

/* Commits (e == LH_OK) or rolls back, and gives the connection back. Returns the outcome. */
static enum lh_err pool_end(struct pg_store *s, struct pg_conn *c, enum lh_err e)
{
	e = tx_close(s, c, e);
	pool_put(s, c);
	return e;
}

/* Bumps subs_version once a subscription change has ended (its rows are visible), and
 * tells the commit hook. Also called by the listener for other nodes' changes. */
static void subs_bump(struct pg_store *s)
{
	__atomic_add_fetch(&s->subs_version, 1, __ATOMIC_RELEASE);
	if (s->writer)
		writer_notify(s->writer, &(struct store_news){.subs_changed = 1});
}

/* A statement on a borrowed pool connection, in its own (implicit) transaction. */
static enum lh_err pool_cmd(struct pg_store *s, const char *sql, const struct params *p,
                            int64_t *changed, const char *what)
{
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	e = run_cmd(s, c, sql, p, changed, what);
	pool_put(s, c);
	return e;
}

static enum lh_err pool_one(struct pg_store *s, const char *sql, const struct params *p,
                            row_fn from_row, void *out, const char *what)
{
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	e = query_one(s, c, sql, p, from_row, out, what);
	pool_put(s, c);
	return e;
}

static enum lh_err pool_list(struct pg_store *s, const char *sql, const struct params *p,
                             size_t elem, row_fn from_row, void **out, size_t *n, const char *what)
{
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	e = query_list(s, c, sql, p, elem, from_row, out, n, what);
	pool_put(s, c);
	return e;
}

/* ---- meta, accounts, labs, parties ---- */

static enum lh_err pgs_meta_set(struct store *base, const char *key, const char *value)
{
	struct params p = {0};
	p_text(&p, key);
	p_text(&p, value);
	return pool_cmd(S(base),
	                "INSERT INTO meta(key, value) VALUES($1, $2)"
	                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	                &p, NULL, "meta_set");
}

static enum lh_err pgs_meta_get_or_put(struct store *base, const char *key, const char *value,
                                       char *out, size_t cap)
{
	struct pg_store *s = S(base);
	struct params p = {0};
	PGresult *r = NULL;
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	p_text(&p, key);
	p_text(&p, value);
	/* Two statements: the SELECT's snapshot must see a row another node inserted while
	 * this INSERT waited for it. */
	e = run_cmd(s, c, "INSERT INTO meta(key, value) VALUES($1, $2) ON CONFLICT DO NOTHING", &p,
	            NULL, "meta_put");
	p.n = 1;
	if (e == LH_OK &&
	    (e = run(s, c, "SELECT value FROM meta WHERE key = $1", &p, &r, "meta_get")) == LH_OK) {
		if (PQntuples(r) == 1)
			col_text(r, 0, 0, out, cap);
		else
			e = LH_ESTORE;
	}
	PQclear(r);
	pool_put(s, c);
	return e;
}

#define ACCOUNT_COLS "client_id, name, mode, secret_hash, secret_version, created_at"

static void account_from_row(const PGresult *r, int i, void *out)
{
	struct account *a = out;
	memset(a, 0, sizeof *a);
	col_text(r, i, 0, a->client_id, sizeof a->client_id);
	col_text(r, i, 1, a->name, sizeof a->name);
	a->mode = (enum account_mode)col_i64(r, i, 2);
	col_hash(r, i, 3, a->secret_hash);
	a->secret_version = col_i64(r, i, 4);
	a->created_at = col_i64(r, i, 5);
}

static enum lh_err pgs_account_insert(struct store *base, const struct account *a)
{
	struct params p = {0};
	p_text(&p, a->client_id);
	p_text(&p, a->name);
	p_i64(&p, a->mode);
	p_hash(&p, a->secret_hash);
	p_i64(&p, a->secret_version);
	p_i64(&p, a->created_at);
	return pool_cmd(S(base),
	                "INSERT INTO accounts(" ACCOUNT_COLS ") VALUES($1, $2, $3, $4, $5, $6)", &p,
	                NULL, "account_insert");
}

static size_t cache_slot(const char *id)
{
	return util_fnv1a(UTIL_FNV_BASIS, id) & (CACHE_SLOTS - 1);
}

static enum lh_err pgs_account_get(struct store *base, const char *client_id, struct account *out)
{
	struct pg_store *s = S(base);
	struct pg_cache *pc = s->cache;
	size_t at = cache_slot(client_id);
	int64_t now = util_mono_us();
	pthread_mutex_lock(&pc->mu);
	if (pc->acct[at].client_id[0] && strcmp(pc->acct[at].client_id, client_id) == 0 &&
	    now - pc->acct_read_us[at] < ACCOUNT_TTL_US) {
		*out = pc->acct[at];
		pthread_mutex_unlock(&pc->mu);
		return LH_OK;
	}
	uint64_t gen = pc->gen;
	pthread_mutex_unlock(&pc->mu);
	struct params p = {0};
	p_text(&p, client_id);
	enum lh_err e = pool_one(s, "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id = $1",
	                         &p, account_from_row, out, "account");
	if (e == LH_OK) {
		pthread_mutex_lock(&pc->mu);
		if (pc->gen == gen) { /* no account changed here meanwhile */
			pc->acct[at] = *out;
			pc->acct_read_us[at] = now;
		}
		pthread_mutex_unlock(&pc->mu);
	}
	return e;
}

/* After this node changed an account (committed or not): its copy goes. */
static void account_forget(struct pg_store *s, const char *client_id)
{
	struct pg_cache *pc = s->cache;
	size_t at = cache_slot(client_id);
	pthread_mutex_lock(&pc->mu);
	pc->gen++;
	if (strcmp(pc->acct[at].client_id, client_id) == 0)
		pc->acct[at].client_id[0] = '\0';
	pthread_mutex_unlock(&pc->mu);
}

static enum lh_err pgs_account_list(struct store *base, const char *after, size_t limit,
                                    struct account **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, after);
	p_i64(&p, (int64_t)limit);
	return pool_list(S(base),
	                 "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id > $1"
	                 " ORDER BY client_id LIMIT $2",
	                 &p, sizeof **out, account_from_row, (void **)out, n, "account_list");
}

static enum lh_err pgs_account_set_secret(struct store *base, const char *client_id,
                                          const unsigned char hash[32], struct account *out)
{
	struct params p = {0};
	p_text(&p, client_id);
	p_hash(&p, hash);
	/* One statement, so one transaction: the new secret and the revoked tokens. */
	enum lh_err e = pool_one(S(base),
	                         "WITH a AS (UPDATE accounts SET secret_hash = $2,"
	                         " secret_version = secret_version + 1 WHERE client_id = $1"
	                         " RETURNING " ACCOUNT_COLS "),"
	                         " r AS (UPDATE refresh_tokens SET state = 2 WHERE client_id = $1"
	                         " AND EXISTS (SELECT 1 FROM a))"
	                         " SELECT " ACCOUNT_COLS " FROM a",
	                         &p, account_from_row, out, "account_secret");
	account_forget(S(base), client_id);
	return e;
}

static enum lh_err pgs_account_set_mode(struct store *base, const char *client_id,
                                        enum account_mode mode, struct account *out)
{
	struct params p = {0};
	p_text(&p, client_id);
	p_i64(&p, mode);
	enum lh_err e = pool_one(S(base),
	                         "UPDATE accounts SET mode = $2 WHERE client_id = $1"
	                         " RETURNING " ACCOUNT_COLS,
	                         &p, account_from_row, out, "account_mode");
	account_forget(S(base), client_id);
	return e;
}

static enum lh_err pgs_lab_insert(struct store *base, const struct lab *l)
{
	struct params p = {0};
	p_text(&p, l->lab_id);
	p_text(&p, l->client_id);
	p_text(&p, l->name);
	p_i64(&p, l->created_at);
	return pool_cmd(S(base),
	                "INSERT INTO labs(lab_id, client_id, name, created_at)"
	                " VALUES($1, $2, $3, $4)",
	                &p, NULL, "lab_insert");
}

static void lab_from_row(const PGresult *r, int i, void *out)
{
	struct lab *l = out;
	memset(l, 0, sizeof *l);
	col_text(r, i, 0, l->lab_id, sizeof l->lab_id);
	col_text(r, i, 1, l->client_id, sizeof l->client_id);
	col_text(r, i, 2, l->name, sizeof l->name);
	l->created_at = col_i64(r, i, 3);
}

static enum lh_err pgs_lab_get(struct store *base, const char *client_id, const char *lab_id,
                               struct lab *out)
{
	struct pg_store *s = S(base);
	struct pg_cache *pc = s->cache;
	size_t at = cache_slot(lab_id);
	pthread_mutex_lock(&pc->mu);
	if (pc->lab[at].lab_id[0] && strcmp(pc->lab[at].lab_id, lab_id) == 0) {
		/* Labs never change: a cached lab of another account is still not this one's. */
		enum lh_err e =
		    strcmp(pc->lab[at].client_id, client_id) == 0 ? LH_OK : LH_ENOTFOUND;
		if (e == LH_OK)
			*out = pc->lab[at];
		pthread_mutex_unlock(&pc->mu);
		return e;
	}
	pthread_mutex_unlock(&pc->mu);
	struct params p = {0};
	p_text(&p, lab_id);
	p_text(&p, client_id);
	enum lh_err e = pool_one(s,
	                         "SELECT lab_id, client_id, name, created_at FROM labs"
	                         " WHERE lab_id = $1 AND client_id = $2",
	                         &p, lab_from_row, out, "lab");
	if (e == LH_OK) {
		pthread_mutex_lock(&pc->mu);
		pc->lab[at] = *out;
		pthread_mutex_unlock(&pc->mu);
	}
	return e;
}

static enum lh_err pgs_lab_list(struct store *base, const char *client_id, struct lab **out,
                                size_t *n)
{
	struct params p = {0};
	p_text(&p, client_id);
	return pool_list(S(base),
	                 "SELECT lab_id, client_id, name, created_at FROM labs"
	                 " WHERE client_id = $1 ORDER BY lab_id",
	                 &p, sizeof **out, lab_from_row, (void **)out, n, "lab_list");
}

static enum lh_err pgs_lab_find(struct store *base, const char *lab_id, struct lab *out)
{
	struct params p = {0};
	p_text(&p, lab_id);
	return pool_one(S(base),
	                "SELECT lab_id, client_id, name, created_at FROM labs"
	                " WHERE lab_id = $1",
	                &p, lab_from_row, out, "lab_find");
}

static enum lh_err pgs_party_insert(struct store *base, const struct party *pa)
{
	struct params p = {0};
	p_text(&p, pa->party_id);
	p_text(&p, pa->client_id);
	p_i64(&p, pa->kind);
	p_text(&p, pa->name);
	p_i64(&p, pa->created_at);
	return pool_cmd(S(base),
	                "INSERT INTO parties(party_id, client_id, kind, name, created_at)"
	                " VALUES($1, $2, $3, $4, $5)",
	                &p, NULL, "party_insert");
}

static void party_from_row(const PGresult *r, int i, void *out)
{
	struct party *pa = out;
	memset(pa, 0, sizeof *pa);
	col_text(r, i, 0, pa->party_id, sizeof pa->party_id);
	col_text(r, i, 1, pa->client_id, sizeof pa->client_id);
	pa->kind = (enum party_kind)col_i64(r, i, 2);
	col_text(r, i, 3, pa->name, sizeof pa->name);
	pa->created_at = col_i64(r, i, 4);
}

static enum lh_err pgs_party_get(struct store *base, const char *client_id, const char *party_id,
                                 struct party *out)
{
	struct params p = {0};
	p_text(&p, party_id);
	p_text(&p, client_id);
	return pool_one(S(base),
	                "SELECT party_id, client_id, kind, name, created_at FROM parties"
	                " WHERE party_id = $1 AND client_id = $2",
	                &p, party_from_row, out, "party");
}

static enum lh_err pgs_party_list(struct store *base, const char *client_id, struct party **out,
                                  size_t *n)
{
	struct params p = {0};
	p_text(&p, client_id);
	return pool_list(S(base),
	                 "SELECT party_id, client_id, kind, name, created_at FROM parties"
	                 " WHERE client_id = $1 ORDER BY party_id",
	                 &p, sizeof **out, party_from_row, (void **)out, n, "party_list");
}

/* ---- refresh tokens: state 0 live, 1 rotated, 2 revoked ---- */

static enum lh_err pgs_refresh_insert(struct store *base, const unsigned char hash[32],
                                      const char *client_id, const char *family, int64_t expires_at)
{
	struct params p = {0};
	p_hash(&p, hash);
	p_text(&p, client_id);
	p_text(&p, family);
	p_i64(&p, expires_at);
	p_i64(&p, util_now());
	/* Expired tokens are dead weight; swept on issue, which is rare enough. */
	return pool_cmd(S(base),
	                "WITH sweep AS (DELETE FROM refresh_tokens WHERE client_id = $2"
	                " AND expires_at < $5)"
	                " INSERT INTO refresh_tokens(hash, client_id, family, state, expires_at)"
	                " VALUES($1, $2, $3, 0, $4)",
	                &p, NULL, "refresh_insert");
}

static enum lh_err pgs_refresh_rotate(struct store *base, const unsigned char hash[32],
                                      const char *client_id, int64_t now,
                                      const unsigned char new_hash[32], int64_t new_expires,
                                      enum refresh_result *result)
{
	struct pg_store *s = S(base);
	struct params p = {0};
	enum refresh_result res = REFRESH_UNKNOWN;
	PGresult *r = NULL;
	struct pg_conn *c;
	enum lh_err e = pool_begin(s, "BEGIN", &c);
	if (e != LH_OK)
		return e;
	p_hash(&p, hash);
	p_text(&p, client_id);
	/* FOR UPDATE: of two rotations of one token, the second waits for the first to commit,
	 * then reads the token as rotated (REFRESH_REUSED). */
	if ((e = run(s, c,
	             "SELECT family, state, expires_at FROM refresh_tokens"
	             " WHERE hash = $1 AND client_id = $2 FOR UPDATE",
	             &p, &r, "refresh_get")) != LH_OK)
		goto out;
	if (PQntuples(r) == 1) {
		char family[ID_CAP];
		int64_t state = col_i64(r, 0, 1), expires = col_i64(r, 0, 2);
		col_text(r, 0, 0, family, sizeof family);
		struct params q = {0};
		if (state == 1) {
			/* A rotated token came back: someone holds a copy. Kill the family. */
			res = REFRESH_REUSED;
			p_text(&q, family);
			e = run_cmd(s, c, "UPDATE refresh_tokens SET state = 2 WHERE family = $1",
			            &q, NULL, "refresh_revoke");
		} else if (state == 0 && expires < now) {
			res = REFRESH_EXPIRED;
		} else if (state == 0) {
			res = REFRESH_OK;
			p_hash(&q, hash);
			p_hash(&q, new_hash);
			p_text(&q, client_id);
			p_text(&q, family);
			p_i64(&q, new_expires);
			e = run_cmd(
			    s, c,
			    "WITH used AS (UPDATE refresh_tokens SET state = 1 WHERE hash = $1)"
			    " INSERT INTO refresh_tokens(hash, client_id, family, state,"
			    " expires_at) VALUES($2, $3, $4, 0, $5)",
			    &q, NULL, "refresh_use");
		}
	}
out:
	PQclear(r);
	if ((e = pool_end(s, c, e)) == LH_OK)
		*result = res;
	return e;
}

/* ---- subscriptions ---- */

#define SUB_COLS                                                                                   \
	"sub_id, client_id, lab_id, party_id, party_kind, events, endpoint, auth_token,"           \
	" status, secret, prev_secret, prev_secret_until, created_at, updated_at, failing_since"

static void sub_from_row(const PGresult *r, int i, void *out)
{
	struct subscription *u = out;
	memset(u, 0, sizeof *u);
	col_text(r, i, 0, u->id, sizeof u->id);
	col_text(r, i, 1, u->client_id, sizeof u->client_id);
	col_text(r, i, 2, u->lab_id, sizeof u->lab_id);
	col_text(r, i, 3, u->party_id, sizeof u->party_id);
	u->party_kind = (enum party_kind)col_i64(r, i, 4);
	u->events = (unsigned)col_i64(r, i, 5);
	col_text(r, i, 6, u->endpoint, sizeof u->endpoint);
	col_text(r, i, 7, u->auth_token, sizeof u->auth_token);
	u->status = (enum sub_status)col_i64(r, i, 8);
	col_text(r, i, 9, u->secret, sizeof u->secret);
	col_text(r, i, 10, u->prev_secret, sizeof u->prev_secret);
	u->prev_secret_until = col_i64(r, i, 11);
	u->created_at = col_i64(r, i, 12);
	u->updated_at = col_i64(r, i, 13);
	u->failing_since = col_i64(r, i, 14);
}

/* $1..$15 in SUB_COLS order (an insert). */
static void p_sub(struct params *p, const struct subscription *u)
{
	p_text(p, u->id);
	p_text(p, u->client_id);
	p_text(p, u->lab_id);
	p_text(p, u->party_id);
	p_i64(p, u->party_kind);
	p_i64(p, u->events);
	p_text(p, u->endpoint);
	p_text(p, u->auth_token);
	p_i64(p, u->status);
	p_text(p, u->secret);
	p_text(p, u->prev_secret);
	p_i64(p, u->prev_secret_until);
	p_i64(p, u->created_at);
	p_i64(p, u->updated_at);
	p_i64(p, u->failing_since);
}

/* Writes the event-holder rows of u, one per event when it is live (none otherwise); clear
 * first removes the old ones. Inside a transaction that holds LOCK_ORDER. A holder of one
 * of the events already is LH_ECONFLICT (the unique constraint sub_events_holder). */
static enum lh_err sub_write_events(struct pg_store *s, struct pg_conn *c,
                                    const struct subscription *u, int clear)
{
	struct params p = {0};
	enum lh_err e;
	p_text(&p, u->id);
	if (clear && (e = run_cmd(s, c, "DELETE FROM subscription_events WHERE sub_id = $1", &p,
	                          NULL, "sub_events_clear")) != LH_OK)
		return e;
	if (u->status != SUB_ACTIVE && u->status != SUB_PAUSED)
		return LH_OK;
	p_text(&p, u->lab_id);
	p_text(&p, u->party_id);
	p_i64(&p, u->events);
	return run_cmd(s, c,
	               "INSERT INTO subscription_events(sub_id, lab_id, party_id, event)"
	               " SELECT $1, $2, $3, b FROM generate_series(0, 31) b"
	               " WHERE ($4::bigint >> b) & 1 = 1",
	               &p, NULL, "sub_events_put");
}

static enum lh_err pgs_sub_insert(struct store *base, const struct subscription *u)
{
	struct pg_store *s = S(base);
	struct params p = {0};
	struct pg_conn *c;
	enum lh_err e = pool_begin(s, BEGIN_SUBS, &c);
	if (e != LH_OK)
		return e;
	p_sub(&p, u);
	e = run_cmd(s, c,
	            "INSERT INTO subscriptions(" SUB_COLS ") VALUES($1, $2, $3, $4, $5, $6, $7,"
	            " $8, $9, $10, $11, $12, $13, $14, $15)",
	            &p, NULL, "sub_insert");
	if (e == LH_OK)
		e = sub_write_events(s, c, u, 0);
	e = pool_end(s, c, e);
	subs_bump(s);
	return e;
}

static enum lh_err pgs_sub_update(struct store *base, const struct subscription *want,
                                  unsigned fields, struct subscription *out)
{
	struct pg_store *s = S(base);
	struct subscription cur;
	struct params p = {0};
	struct pg_conn *c;
	enum lh_err e = pool_begin(s, BEGIN_SUBS, &c);
	if (e != LH_OK)
		return e;
	/* Read locked, inside the transaction, so the fields not changed here are the latest. */
	p_text(&p, want->id);
	p_text(&p, want->client_id);
	if ((e = query_one(s, c,
	                   "SELECT " SUB_COLS " FROM subscriptions"
	                   " WHERE sub_id = $1 AND client_id = $2 AND status <> 3 FOR UPDATE",
	                   &p, sub_from_row, &cur, "sub_read")) != LH_OK)
		goto out;
	store_sub_apply(&cur, want, fields);
	p.n = 0;
	p_text(&p, cur.id);
	p_i64(&p, cur.events);
	p_text(&p, cur.endpoint);
	p_text(&p, cur.auth_token);
	p_i64(&p, cur.status);
	p_text(&p, cur.secret);
	p_text(&p, cur.prev_secret);
	p_i64(&p, cur.prev_secret_until);
	p_i64(&p, cur.updated_at);
	p_i64(&p, cur.failing_since);
	if ((e = run_cmd(s, c,
	                 "UPDATE subscriptions SET events = $2, endpoint = $3, auth_token = $4,"
	                 " status = $5, secret = $6, prev_secret = $7, prev_secret_until = $8,"
	                 " updated_at = $9, failing_since = $10 WHERE sub_id = $1",
	                 &p, NULL, "sub_update")) != LH_OK)
		goto out;
	if ((fields & (SUBF_EVENTS | SUBF_STATUS)) &&
	    (e = sub_write_events(s, c, &cur, 1)) != LH_OK)
		goto out;
	if (cur.status == SUB_DELETED) {
		/* Unsubscribing cancels what was still waiting to be sent. */
		p.n = 0;
		p_text(&p, cur.id);
		p_i64(&p, cur.updated_at);
		e = run_cmd(s, c,
		            "UPDATE deliveries SET status = 3, updated_at = $2"
		            " WHERE sub_id = $1 AND status = 0",
		            &p, NULL, "deliveries_cancel");
	}
out:
	e = pool_end(s, c, e);
	subs_bump(s);
	if (e == LH_OK && out)
		*out = cur;
	return e;
}

static enum lh_err pgs_sub_get(struct store *base, const char *client_id, const char *id,
                               struct subscription *out)
{
	struct params p = {0};
	p_text(&p, id);
	p_text(&p, client_id);
	return pool_one(S(base),
	                "SELECT " SUB_COLS " FROM subscriptions"
	                " WHERE sub_id = $1 AND client_id = $2 AND status <> 3",
	                &p, sub_from_row, out, "sub");
}

static enum lh_err pgs_sub_get_any(struct store *base, const char *id, struct subscription *out)
{
	struct params p = {0};
	p_text(&p, id);
	return pool_one(S(base), "SELECT " SUB_COLS " FROM subscriptions WHERE sub_id = $1", &p,
	                sub_from_row, out, "sub_any");
}

static enum lh_err pgs_sub_list_holding(struct store *base, const char *lab_id,
                                        const char *party_id, unsigned events,
                                        struct subscription **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, lab_id);
	p_text(&p, party_id);
	p_i64(&p, events);
	return pool_list(S(base),
	                 "SELECT " SUB_COLS " FROM subscriptions WHERE sub_id IN"
	                 " (SELECT sub_id FROM subscription_events WHERE lab_id = $1"
	                 " AND party_id = $2 AND ($3::bigint >> event::int) & 1 = 1)"
	                 " ORDER BY sub_id",
	                 &p, sizeof **out, sub_from_row, (void **)out, n, "sub_list_holding");
}

static enum lh_err pgs_sub_list(struct store *base, const char *client_id, const char *lab_id,
                                int status, const char *after, size_t limit,
                                struct subscription **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, client_id);
	p_text(&p, lab_id);
	p_i64(&p, status);
	p_text(&p, after);
	p_i64(&p, (int64_t)limit);
	return pool_list(S(base),
	                 "SELECT " SUB_COLS " FROM subscriptions WHERE client_id = $1"
	                 " AND status <> 3 AND ($2::text = '' OR lab_id = $2::text)"
	                 " AND ($3::bigint < 0 OR status = $3::bigint) AND sub_id > $4"
	                 " ORDER BY sub_id LIMIT $5",
	                 &p, sizeof **out, sub_from_row, (void **)out, n, "sub_list");
}

static uint64_t pgs_subs_version(struct store *base)
{
	return __atomic_load_n(&S(base)->subs_version, __ATOMIC_ACQUIRE);
}

/* ---- inside the writer's transaction (the writer thread, on wc) ---- */

static void p_parties(struct params *p, const struct parties *pa)
{
	p_text(p, pa->corporate_user);
	p_text(p, pa->referred_org);
	p_text(p, pa->referred_hospital_org);
}

static void col_parties(const PGresult *r, int i, int first, struct parties *pa)
{
	col_text(r, i, first, pa->corporate_user, sizeof pa->corporate_user);
	col_text(r, i, first + 1, pa->referred_org, sizeof pa->referred_org);
	col_text(r, i, first + 2, pa->referred_hospital_org, sizeof pa->referred_hospital_org);
}

static enum lh_err tx_bill_insert(struct store_tx *tx, const struct bill *b,
                                  const struct report *reports, size_t n)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	struct pg_array col[7] = {{0}};
	enum lh_err e = LH_OK;
	p_text(&p, b->bill_id);
	p_text(&p, b->client_id);
	p_text(&p, b->lab_id);
	p_text(&p, b->integrator_id);
	p_text(&p, b->pre_booking_id);
	p_text_or_null(&p, b->bar_code);
	p_text(&p, b->lead_source);
	p_i64(&p, b->status);
	p_parties(&p, &b->parties);
	p_text(&p, b->patient);
	p_i64(&p, b->created_at);
	p_i64(&p, b->updated_at);
	for (size_t i = 0; i < n; i++) {
		arr_add(&col[0], reports[i].report_id);
		arr_add(&col[1], reports[i].bill_id);
		arr_add_i64(&col[2], reports[i].seq);
		arr_add(&col[3], reports[i].name);
		arr_add(&col[4], reports[i].package);
		arr_add_i64(&col[5], reports[i].status);
		arr_add_i64(&col[6], reports[i].completed_at);
	}
	for (size_t k = 0; k < COUNTOF(col); k++)
		if (p_array(&p, &col[k]) != LH_OK)
			e = LH_ENOMEM;
	/* The bill and all its reports in one statement, held in the API's batches (see "the
	 * writer's pipeline"). */
	if (e == LH_OK)
		e = hold(s,
		         "WITH b AS (INSERT INTO bills(bill_id, client_id, lab_id, integrator_id,"
		         " pre_booking_id, bar_code, lead_source, status, corporate_user,"
		         " referred_org, referred_hospital_org, patient, created_at, updated_at)"
		         " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14))"
		         " INSERT INTO reports(report_id, bill_id, seq, name, package, status,"
		         " completed_at) SELECT * FROM unnest($15::text[], $16::text[],"
		         " $17::bigint[], $18::text[], $19::text[], $20::bigint[], $21::bigint[])",
		         &p, 0, PIPE_PLAIN, NULL, "bill_insert");
	params_free(&p);
	return e;
}

#define BILL_COLS                                                                                  \
	"bill_id, client_id, lab_id, integrator_id, pre_booking_id, bar_code, lead_source,"        \
	" status, corporate_user, referred_org, referred_hospital_org, patient, created_at,"       \
	" updated_at"

static void bill_from_row(const PGresult *r, int i, void *out)
{
	struct bill *b = out;
	memset(b, 0, sizeof *b);
	col_text(r, i, 0, b->bill_id, sizeof b->bill_id);
	col_text(r, i, 1, b->client_id, sizeof b->client_id);
	col_text(r, i, 2, b->lab_id, sizeof b->lab_id);
	col_text(r, i, 3, b->integrator_id, sizeof b->integrator_id);
	col_text(r, i, 4, b->pre_booking_id, sizeof b->pre_booking_id);
	col_text(r, i, 5, b->bar_code, sizeof b->bar_code);
	col_text(r, i, 6, b->lead_source, sizeof b->lead_source);
	b->status = (enum bill_status)col_i64(r, i, 7);
	col_parties(r, i, 8, &b->parties);
	col_text(r, i, 11, b->patient, sizeof b->patient);
	b->created_at = col_i64(r, i, 12);
	b->updated_at = col_i64(r, i, 13);
}

static void report_from_row(const PGresult *r, int i, void *out)
{
	struct report *rp = out;
	memset(rp, 0, sizeof *rp);
	col_text(r, i, 0, rp->report_id, sizeof rp->report_id);
	col_text(r, i, 1, rp->bill_id, sizeof rp->bill_id);
	rp->seq = (int)col_i64(r, i, 2);
	col_text(r, i, 3, rp->name, sizeof rp->name);
	col_text(r, i, 4, rp->package, sizeof rp->package);
	rp->status = (enum report_status)col_i64(r, i, 5);
	rp->completed_at = col_i64(r, i, 6);
}

/* Reads a bill (of client_id unless NULL) and its reports, on c. */
static enum lh_err bill_read(struct pg_store *s, struct pg_conn *c, const char *client_id,
                             const char *bill_id, struct bill *out, struct report **reports,
                             size_t *n)
{
	struct bill b;
	struct params p = {0};
	p_text(&p, bill_id);
	enum lh_err e = query_one(s, c, "SELECT " BILL_COLS " FROM bills WHERE bill_id = $1", &p,
	                          bill_from_row, &b, "bill");
	if (e != LH_OK)
		return e;
	if (client_id && strcmp(b.client_id, client_id) != 0)
		return LH_ENOTFOUND;
	e = query_list(s, c,
	               "SELECT report_id, bill_id, seq, name, package, status, completed_at"
	               " FROM reports WHERE bill_id = $1 ORDER BY seq",
	               &p, sizeof **reports, report_from_row, (void **)reports, n, "reports");
	if (e == LH_OK)
		*out = b;
	return e;
}

static enum lh_err tx_bill_load(struct store_tx *tx, const char *bill_id, struct bill *out,
                                struct report **reports, size_t *n)
{
	struct pg_store *s = TX(tx);
	return bill_read(s, &s->wc, NULL, bill_id, out, reports, n);
}

static enum lh_err tx_bill_update(struct store_tx *tx, const struct bill *b)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	p_text(&p, b->bill_id);
	p_i64(&p, b->status);
	p_i64(&p, b->updated_at);
	return run_cmd(s, &s->wc,
	               "UPDATE bills SET status = $2, updated_at = $3 WHERE bill_id = $1", &p, NULL,
	               "bill_update");
}

static enum lh_err tx_report_update(struct store_tx *tx, const struct report *r)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	p_text(&p, r->report_id);
	p_text(&p, r->bill_id);
	p_i64(&p, r->status);
	p_i64(&p, r->completed_at);
	return run_cmd(s, &s->wc,
	               "UPDATE reports SET status = $3, completed_at = $4"
	               " WHERE report_id = $1 AND bill_id = $2",
	               &p, NULL, "report_update");
}

static enum lh_err tx_lead_dup(struct store_tx *tx, const char *lab_id, const char *day,
                               const char *contact, const char *email, int *dup)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	PGresult *r = NULL;
	p_text(&p, lab_id);
	p_text(&p, day);
	p_text(&p, contact);
	p_text(&p, email);
	enum lh_err e = run(s, &s->wc,
	                    "SELECT 1 FROM leads WHERE lab_id = $1 AND day = $2 AND"
	                    " (contact = $3 OR ($4::text <> '' AND email = $4::text)) LIMIT 1",
	                    &p, &r, "lead_dup");
	if (e == LH_OK)
		*dup = PQntuples(r) > 0;
	PQclear(r);
	return e;
}

#define LEAD_COLS                                                                                  \
	"lead_id, client_id, lab_id, integrator_id, phase, contact, email, day, booking_id,"       \
	" corporate_user, referred_org, referred_hospital_org, data, created_at"

static enum lh_err tx_lead_insert(struct store_tx *tx, const struct lead *l)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	p_text(&p, l->lead_id);
	p_text(&p, l->client_id);
	p_text(&p, l->lab_id);
	p_text(&p, l->integrator_id);
	p_i64(&p, l->phase);
	p_text(&p, l->contact);
	p_text(&p, l->email);
	p_text(&p, l->day);
	p_text(&p, l->booking_id);
	p_parties(&p, &l->parties);
	p_text(&p, l->data);
	p_i64(&p, l->created_at);
	return run_cmd(s, &s->wc,
	               "INSERT INTO leads(" LEAD_COLS ") VALUES($1, $2, $3, $4, $5, $6, $7, $8,"
	               " $9, $10, $11, $12, $13, $14)",
	               &p, NULL, "lead_insert");
}

static void lead_from_row(const PGresult *r, int i, void *out)
{
	struct lead *l = out;
	memset(l, 0, sizeof *l);
	col_text(r, i, 0, l->lead_id, sizeof l->lead_id);
	col_text(r, i, 1, l->client_id, sizeof l->client_id);
	col_text(r, i, 2, l->lab_id, sizeof l->lab_id);
	col_text(r, i, 3, l->integrator_id, sizeof l->integrator_id);
	l->phase = (enum lead_phase)col_i64(r, i, 4);
	col_text(r, i, 5, l->contact, sizeof l->contact);
	col_text(r, i, 6, l->email, sizeof l->email);
	col_text(r, i, 7, l->day, sizeof l->day);
	col_text(r, i, 8, l->booking_id, sizeof l->booking_id);
	col_parties(r, i, 9, &l->parties);
	col_text(r, i, 12, l->data, sizeof l->data);
	l->created_at = col_i64(r, i, 13);
}

static enum lh_err tx_lead_load(struct store_tx *tx, const char *lead_id, struct lead *out)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	p_text(&p, lead_id);
	return query_one(s, &s->wc, "SELECT " LEAD_COLS " FROM leads WHERE lead_id = $1", &p,
	                 lead_from_row, out, "lead");
}

static enum lh_err tx_lead_set_booking(struct store_tx *tx, const char *lead_id,
                                       const char *booking_id)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	int64_t changed = 0;
	p_text(&p, lead_id);
	p_text(&p, booking_id);
	enum lh_err e = run_cmd(s, &s->wc,
	                        "UPDATE leads SET booking_id = $2, phase = 1"
	                        " WHERE lead_id = $1 AND booking_id = ''",
	                        &p, &changed, "lead_set_booking");
	return e == LH_OK && changed == 0 ? LH_ECONFLICT : e;
}

static enum lh_err tx_booking_insert(struct store_tx *tx, const struct booking *b)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	p_text(&p, b->booking_id);
	p_text(&p, b->lead_id);
	p_text(&p, b->client_id);
	p_text(&p, b->lab_id);
	p_text(&p, b->integrator_id);
	p_text(&p, b->booking_type);
	p_text(&p, b->scheduled_at);
	p_parties(&p, &b->parties);
	p_i64(&p, b->created_at);
	return run_cmd(s, &s->wc,
	               "INSERT INTO bookings(booking_id, lead_id, client_id, lab_id,"
	               " integrator_id, booking_type, scheduled_at, corporate_user,"
	               " referred_org, referred_hospital_org, created_at)"
	               " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
	               &p, NULL, "booking_insert");
}

/* The event, its routing and its deliveries in one statement (one round trip), read from
 * the database inside the batch's transaction, which holds LOCK_ORDER (see wb_begin): the
 * seq comes from the events sequence under that lock. Routing: the holders of (lab, party
 * in $9, type), catch-all "" first; a subscription has one party, so none matches twice.
 * Or, with only_sub ($8), that subscription if it is not deleted. $10 holds as many fresh
 * delivery ids as there can be matches. */
/* ---- telling the other nodes ---- */

static void news_add(struct batch_news *b, const char *sub_id)
{
	if (b->all)
		return;
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->subs[i], sub_id) == 0)
			return;
	if (b->n == NEWS_MAX) {
		b->all = 1;
		return;
	}
	snprintf(b->subs[b->n++], ID_CAP, "%s", sub_id);
}

/* NOTIFY labhook_deliveries with "<node> <kind> <subs>" (kind n: new deliveries, r: older
 * ones pending again) or "<node> <kind> *" for all, inside the batch's transaction: the
 * other nodes hear of it at the commit, and only then. */
static enum lh_err news_send(struct pg_store *s, struct pg_conn *c, struct batch_news *b, char kind)
{
	char payload[NEWS_MAX * ID_CAP + 64];
	size_t o;
	if (!b->n && !b->all)
		return LH_OK;
	o = (size_t)snprintf(payload, sizeof payload, "%s %c ", s->node_id, kind);
	if (b->all)
		o += (size_t)snprintf(payload + o, sizeof payload - o, "*");
	for (size_t i = 0; i < b->n && !b->all; i++)
		o += (size_t)snprintf(payload + o, sizeof payload - o, "%s%s", i ? "," : "",
		                      b->subs[i]);
	struct params p = {0};
	p_text(&p, payload);
	b->n = 0;
	b->all = 0;
	static const char *const sql = "SELECT pg_notify('labhook_deliveries', $1)";
	/* On the writer's connection, answered with the COMMIT (tx_close): one round trip. */
	return c == &s->wc ? hold(s, sql, &p, 1, PIPE_PLAIN, NULL, "notify")
	                   : run_cmd(s, c, sql, &p, NULL, "notify");
}

static const char *const EVENT_SQL =
    "WITH ev AS (INSERT INTO events(event_id, client_id, lab_id, type, entity_id, payload,"
    " created_at) VALUES($1, $2, $3, $4, $5, $6, $7) RETURNING seq),"
    " m AS (SELECT sub_id, array_position($9::text[], party_id) AS k"
    "  FROM subscription_events WHERE $8::text = '' AND lab_id = $3 AND event = $4"
    "  AND party_id = ANY($9::text[])"
    "  UNION ALL SELECT sub_id, 0 FROM subscriptions WHERE sub_id = $8::text AND status <> 3),"
    " subs AS (SELECT sub_id, row_number() OVER (ORDER BY k, sub_id) AS rn FROM m)"
    " INSERT INTO deliveries(delivery_id, event_id, event_seq, event_type, sub_id, entity_id,"
    " status, attempts, next_at, created_at, updated_at)"
    " SELECT ($10::text[])[subs.rn], $1, ev.seq, $4, subs.sub_id, $5, 0, 0, $7::bigint * 1000,"
    " $7, $7 FROM subs, ev RETURNING delivery_id, sub_id, event_seq";

static enum lh_err tx_event_insert(struct store_tx *tx, const struct event *ev,
                                   const char *const *party_ids, size_t n, const char *only_sub,
                                   size_t *ndeliveries)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	struct pg_array parties = {0}, ids = {0};
	PGresult *r = NULL;
	size_t nid = 1;
	enum lh_err e = LH_OK;
	if (n > STORE_MAX_PARTIES)
		return LH_EINVAL;
	arr_add(&parties, ""); /* the catch-all */
	for (size_t i = 0; i < n && !only_sub; i++)
		if (party_ids[i] && party_ids[i][0]) {
			arr_add(&parties, party_ids[i]);
			nid++;
		}
	for (size_t i = 0; i < nid && e == LH_OK; i++) {
		char id[ID_CAP];
		if ((e = util_new_id("dlv_", id)) == LH_OK)
			arr_add(&ids, id);
	}
	p_text(&p, ev->event_id);
	p_text(&p, ev->client_id);
	p_text(&p, ev->lab_id);
	p_i64(&p, ev->type);
	p_text(&p, ev->entity_id);
	p_text(&p, ev->payload);
	p_i64(&p, ev->created_at);
	p_text(&p, only_sub ? only_sub : "");
	if (p_array(&p, &parties) != LH_OK || p_array(&p, &ids) != LH_OK)
		e = e == LH_OK ? LH_ENOMEM : e;
	/* With no count wanted (the API's jobs) and no subscription of its own (test events:
	 * a deleted one is refused), the deliveries need not be known before the job goes on. */
	if (e == LH_OK && !only_sub && !ndeliveries)
		e = hold(s, EVENT_SQL, &p, 0, PIPE_EVENT, ev, "event_insert");
	else if (e == LH_OK && (e = run(s, &s->wc, EVENT_SQL, &p, &r, "event_insert")) == LH_OK)
		e = event_rows(s, r, ev, only_sub, ndeliveries);
	PQclear(r);
	params_free(&p);
	return e;
}

/* EVENT_SQL's rows (the deliveries it made) become fresh deliveries; *ndeliveries (may be
 * NULL) gets their count. */
static enum lh_err event_rows(struct pg_store *s, const PGresult *r, const struct event *ev,
                              const char *only_sub, size_t *ndeliveries)
{
	enum lh_err e = LH_OK;
	size_t nd = (size_t)PQntuples(r);
	if (only_sub && nd == 0)
		e = LH_ENOTFOUND; /* deleted: a racing delete cannot strand the delivery */
	for (size_t k = 0; k < nd && e == LH_OK; k++) {
		struct delivery d;
		char id[ID_CAP], sub[ID_CAP];
		col_text(r, (int)k, 0, id, sizeof id);
		col_text(r, (int)k, 1, sub, sizeof sub);
		store_delivery_new(&d, ev, id, sub, col_i64(r, (int)k, 2));
		/* No copy of the payload: on a shared store the engine reads this node's fresh
		 * deliveries back from the store in seq order (another node's earlier commit may
		 * not have been heard of yet), so a copy here would only be freed unread. */
		e = store_fresh_delivery(s->writer, &d, NULL);
		news_add(&s->fresh_news, sub);
	}
	if (e == LH_OK) {
		writer_event_made(s->writer, ev->type);
		if (ndeliveries)
			*ndeliveries = nd;
	}
	return e;
}

static enum lh_err tx_doc_meta(struct store_tx *tx, const char *bill_id, const char *report_id,
                               struct report_doc *out);
static enum lh_err tx_doc_put(struct store_tx *tx, const struct report_doc *d, const void *data,
                              size_t len);
/* ---- a lab's catalog ---- */

static void catalog_item_from_row(const PGresult *r, int i, void *out)
{
	struct catalog_item *it = out;
	memset(it, 0, sizeof *it);
	col_text(r, i, 0, it->lab_id, sizeof it->lab_id);
	it->kind = (enum catalog_kind)col_i64(r, i, 1);
	col_text(r, i, 2, it->id, sizeof it->id);
	col_text(r, i, 3, it->name, sizeof it->name);
	it->price = col_i64(r, i, 4);
	it->updated_at = col_i64(r, i, 5);
	it->party_price = PQgetisnull(r, i, 6) ? -1 : col_i64(r, i, 6);
}

static void catalog_member_from_row(const PGresult *r, int i, void *out)
{
	struct catalog_member *m = out;
	memset(m, 0, sizeof *m);
	col_text(r, i, 0, m->package_id, sizeof m->package_id);
	col_text(r, i, 1, m->test_id, sizeof m->test_id);
	col_text(r, i, 2, m->name, sizeof m->name);
}

static const char *const CATALOG_MEMBERS_SQL =
    "SELECT m.package_id, m.test_id, COALESCE(t.name, m.test_id) FROM catalog_members m"
    " LEFT JOIN catalog_items t ON t.lab_id = m.lab_id AND t.kind = 0"
    " AND t.item_id = m.test_id WHERE m.lab_id = $1"
    " AND m.package_id COLLATE \"C\" BETWEEN $2 AND $3"
    " ORDER BY m.package_id COLLATE \"C\", m.seq";

static enum lh_err tx_catalog_any(struct store_tx *tx, const char *lab_id, int *any)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	PGresult *r = NULL;
	p_text(&p, lab_id);
	enum lh_err e = run(s, &s->wc, "SELECT 1 FROM catalog_items WHERE lab_id = $1 LIMIT 1", &p,
	                    &r, "catalog_any");
	if (e == LH_OK)
		*any = PQntuples(r) > 0;
	PQclear(r);
	return e;
}

static enum lh_err tx_catalog_get(struct store_tx *tx, const char *lab_id, enum catalog_kind kind,
                                  const char *id, struct catalog_item *out,
                                  struct catalog_member **members, size_t *n)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	struct catalog_item it;
	struct catalog_member *m = NULL;
	size_t nm = 0;
	p_text(&p, lab_id);
	p_i64(&p, kind);
	p_text(&p, id);
	enum lh_err e = query_one(s, &s->wc,
	                          "SELECT lab_id, kind, item_id, name, price, updated_at, NULL"
	                          " FROM catalog_items WHERE lab_id = $1 AND kind = $2"
	                          " AND item_id = $3",
	                          &p, catalog_item_from_row, &it, "catalog_get");
	if (e != LH_OK)
		return e;
	if (members && kind == CATALOG_PACKAGE) {
		struct params q = {0};
		p_text(&q, lab_id);
		p_text(&q, id);
		p_text(&q, id);
		if ((e = query_list(s, &s->wc, CATALOG_MEMBERS_SQL, &q, sizeof *m,
		                    catalog_member_from_row, (void **)&m, &nm,
		                    "catalog_members")) != LH_OK)
			return e;
	}
	*out = it;
	if (members) {
		*members = m;
		*n = nm;
	}
	return LH_OK;
}

/* Inside a catalog change: the lab's row locked (FOR NO KEY UPDATE does not conflict with
 * the key-share locks foreign keys take), so changes to one lab's catalog run one at a time.
 * At READ COMMITTED, a delete that checked no package holds a test and a put adding that
 * test to a package could otherwise both commit. */
static enum lh_err catalog_lock(struct pg_store *s, struct pg_conn *c, const char *lab_id)
{
	struct params p = {0};
	PGresult *r = NULL;
	p_text(&p, lab_id);
	enum lh_err e = run(s, c, "SELECT 1 FROM labs WHERE lab_id = $1 FOR NO KEY UPDATE", &p, &r,
	                    "catalog_lock");
	PQclear(r);
	return e;
}

static enum lh_err pgs_catalog_put(struct store *base, const char *lab_id,
                                   const struct catalog_item *items, size_t n,
                                   const struct catalog_member *members, size_t nmembers,
                                   size_t *bad)
{
	struct pg_store *s = S(base);
	struct pg_conn *c;
	size_t bad_at = 0;
	enum lh_err e = pool_begin(s, "BEGIN", &c);
	if (e != LH_OK)
		return e;
	e = catalog_lock(s, c, lab_id);
	for (size_t i = 0; e == LH_OK && i < n; i++) {
		struct params p = {0};
		p_text(&p, lab_id);
		p_i64(&p, items[i].kind);
		p_text(&p, items[i].id);
		p_text(&p, items[i].name);
		p_i64(&p, items[i].price);
		p_i64(&p, items[i].updated_at);
		e = run_cmd(
		    s, c,
		    "INSERT INTO catalog_items(lab_id, kind, item_id, name, price, updated_at)"
		    " VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT(lab_id, kind, item_id)"
		    " DO UPDATE SET name = excluded.name, price = excluded.price,"
		    " updated_at = excluded.updated_at",
		    &p, NULL, "catalog_put");
		if (e == LH_OK && items[i].kind == CATALOG_PACKAGE) {
			struct params q = {0};
			p_text(&q, lab_id);
			p_text(&q, items[i].id);
			e = run_cmd(
			    s, c,
			    "DELETE FROM catalog_members WHERE lab_id = $1 AND package_id = $2", &q,
			    NULL, "catalog_members_clear");
		}
	}
	for (size_t i = 0; e == LH_OK && i < nmembers; i++) {
		struct params p = {0};
		int64_t added = 0;
		p_text(&p, lab_id);
		p_text(&p, members[i].package_id);
		p_text(&p, members[i].test_id);
		/* Inserted only when the test is in the catalog: no row means an unknown test. */
		e = run_cmd(
		    s, c,
		    "INSERT INTO catalog_members(lab_id, package_id, seq, test_id)"
		    " SELECT $1, $2, (SELECT COALESCE(MAX(seq) + 1, 0) FROM catalog_members"
		    " WHERE lab_id = $1 AND package_id = $2), $3"
		    " WHERE EXISTS(SELECT 1 FROM catalog_items WHERE lab_id = $1 AND kind = 0"
		    " AND item_id = $3)",
		    &p, &added, "catalog_member");
		if (e == LH_OK && added == 0) {
			e = LH_ENOTFOUND;
			bad_at = i;
		}
	}
	e = pool_end(s, c, e);
	if (e == LH_ENOTFOUND && bad)
		*bad = bad_at;
	return e;
}

static enum lh_err pgs_catalog_delete(struct store *base, const char *lab_id,
                                      enum catalog_kind kind, const char *id,
                                      char in_package[ID_CAP])
{
	static const char *const sql[] = {
	    "DELETE FROM catalog_items WHERE lab_id = $1 AND kind = $2 AND item_id = $3",
	    "DELETE FROM catalog_rates WHERE lab_id = $1 AND kind = $2 AND item_id = $3",
	    "DELETE FROM catalog_members WHERE lab_id = $1 AND package_id = $3 AND $2 = 1",
	};
	struct pg_store *s = S(base);
	struct pg_conn *c;
	char pkg[ID_CAP] = "";
	enum lh_err e = pool_begin(s, "BEGIN", &c);
	if (e != LH_OK)
		return e;
	e = catalog_lock(s, c, lab_id);
	if (e == LH_OK && kind == CATALOG_TEST) {
		struct params p = {0};
		PGresult *r = NULL;
		p_text(&p, lab_id);
		p_text(&p, id);
		e = run(s, c,
		        "SELECT package_id FROM catalog_members WHERE lab_id = $1 AND test_id = $2"
		        " ORDER BY package_id COLLATE \"C\" LIMIT 1",
		        &p, &r, "catalog_in_package");
		if (e == LH_OK && PQntuples(r) > 0) {
			col_text(r, 0, 0, pkg, sizeof pkg);
			e = LH_ECONFLICT;
		}
		PQclear(r);
	}
	for (size_t k = 0; e == LH_OK && k < COUNTOF(sql); k++) {
		struct params p = {0};
		int64_t changed = 0;
		p_text(&p, lab_id);
		p_i64(&p, kind);
		p_text(&p, id);
		e = run_cmd(s, c, sql[k], &p, &changed, "catalog_delete");
		if (e == LH_OK && k == 0 && changed == 0)
			e = LH_ENOTFOUND;
	}
	e = pool_end(s, c, e);
	if (e == LH_ECONFLICT && in_package)
		memcpy(in_package, pkg, ID_CAP);
	return e;
}

#define CATALOG_LIST_FROM                                                                          \
	" FROM catalog_items i LEFT JOIN catalog_rates r ON r.lab_id = i.lab_id"                   \
	" AND r.kind = i.kind AND r.item_id = i.item_id AND r.party_id = $3"                       \
	" WHERE i.lab_id = $1 AND ($2::bigint < 0 OR i.kind = $2::bigint)"                         \
	" AND ($4::bigint = 0 OR r.price IS NOT NULL)"

static const char *const CATALOG_PAGE_SQL =
    "SELECT i.lab_id, i.kind, i.item_id, i.name, i.price, i.updated_at, r.price" CATALOG_LIST_FROM
    " ORDER BY i.kind, i.item_id COLLATE \"C\" LIMIT $5 OFFSET $6";

static enum lh_err pgs_catalog_list(struct store *base, const char *lab_id, int kind,
                                    const char *party_id, int only_rated, size_t offset,
                                    size_t limit, struct catalog_item **out, size_t *n,
                                    int64_t *total)
{
	struct pg_store *s = S(base);
	struct pg_conn *c;
	struct params p = {0};
	PGresult *r = NULL;
	int64_t count = 0;
	p_text(&p, lab_id);
	p_i64(&p, kind);
	p_text(&p, party_id);
	p_i64(&p, only_rated);
	if (!total) { /* the page alone, one round trip (a bill's "is there a catalog?") */
		p_i64(&p, (int64_t)limit);
		p_i64(&p, (int64_t)offset);
		return pool_list(s, CATALOG_PAGE_SQL, &p, sizeof **out, catalog_item_from_row,
		                 (void **)out, n, "catalog_list");
	}
	/* One snapshot for the total and the page. */
	enum lh_err e = pool_begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", &c);
	if (e != LH_OK)
		return e;
	e = run(s, c, "SELECT count(*)" CATALOG_LIST_FROM, &p, &r, "catalog_count");
	if (e == LH_OK)
		count = PQntuples(r) > 0 ? col_i64(r, 0, 0) : 0;
	PQclear(r);
	p_i64(&p, (int64_t)limit);
	p_i64(&p, (int64_t)offset);
	if (e == LH_OK)
		e = query_list(s, c, CATALOG_PAGE_SQL, &p, sizeof **out, catalog_item_from_row,
		               (void **)out, n, "catalog_list");
	enum lh_err end = pool_end(s, c, e);
	if (e == LH_OK && end != LH_OK) {
		free(*out);
		e = end;
	}
	if (e == LH_OK && total)
		*total = count;
	return e;
}

static enum lh_err pgs_catalog_members(struct store *base, const char *lab_id, const char *first_id,
                                       const char *last_id, struct catalog_member **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, lab_id);
	p_text(&p, first_id);
	p_text(&p, last_id);
	return pool_list(S(base), CATALOG_MEMBERS_SQL, &p, sizeof **out, catalog_member_from_row,
	                 (void **)out, n, "catalog_members");
}

static enum lh_err pgs_catalog_rate_set(struct store *base, const char *lab_id,
                                        enum catalog_kind kind, const char *item_id,
                                        const char *party_id, int64_t price)
{
	struct params p = {0};
	int64_t changed = 0;
	p_text(&p, lab_id);
	p_i64(&p, kind);
	p_text(&p, item_id);
	p_text(&p, party_id);
	enum lh_err e;
	if (price < 0) {
		e = pool_cmd(S(base),
		             "DELETE FROM catalog_rates WHERE lab_id = $1 AND kind = $2"
		             " AND item_id = $3 AND party_id = $4",
		             &p, &changed, "catalog_rate");
	} else {
		p_i64(&p, price);
		e = pool_cmd(S(base),
		             "INSERT INTO catalog_rates(lab_id, kind, item_id, party_id, price)"
		             " SELECT $1, $2, $3, $4, $5 WHERE EXISTS(SELECT 1 FROM catalog_items"
		             " WHERE lab_id = $1 AND kind = $2 AND item_id = $3)"
		             " ON CONFLICT(lab_id, kind, item_id, party_id)"
		             " DO UPDATE SET price = excluded.price",
		             &p, &changed, "catalog_rate");
	}
	return e == LH_OK && changed == 0 ? LH_ENOTFOUND : e;
}

static const struct store_tx_ops pg_tx_ops = {
    .bill_insert = tx_bill_insert,
    .bill_load = tx_bill_load,
    .bill_update = tx_bill_update,
    .report_update = tx_report_update,
    .lead_dup = tx_lead_dup,
    .lead_insert = tx_lead_insert,
    .lead_load = tx_lead_load,
    .lead_set_booking = tx_lead_set_booking,
    .booking_insert = tx_booking_insert,
    .event_insert = tx_event_insert,
    .doc_meta = tx_doc_meta,
    .doc_put = tx_doc_put,
    .catalog_any = tx_catalog_any,
    .catalog_get = tx_catalog_get,
};

/* ---- group commit: the transaction primitives store_writer.c runs batches with ---- */

static enum lh_err wb_begin(void *be, int may_hold)
{
	struct pg_store *s = be;
	assert(s->npipe == 0);
	s->may_hold = may_hold;
	s->release_pending = s->savepoint_pending = 0;
	s->subs_dirty = 0;
	s->fresh_news.n = s->rescan_news.n = 0;
	s->fresh_news.all = s->rescan_news.all = 0;
	/* A lost connection is reset here, at the next batch, within the backoff: while the
	 * database is down, batches fail at once (LH_EUNAVAIL) without trying to connect. */
	enum lh_err e = conn_ready(s, &s->wc);
	if (e != LH_OK)
		return e;
	/* Held, sent with the batch's first statement (see "the writer's pipeline"): a failure
	 * shows there, and in_tx then fails the rest of the batch. */
	return pipe_send(s, NULL, "BEGIN", NULL, PIPE_PLAIN, NULL, "begin") &&
	               pipe_send(s, NULL, ORDER_LOCK, NULL, PIPE_PLAIN, NULL, "begin")
	           ? LH_OK
	           : pipe_sync(s, 0, NULL, "begin");
}

static enum lh_err wb_savepoint(void *be)
{
	struct pg_store *s = be;
	/* Sent with the job's first statement, after the previous job's RELEASE: see "the
	 * writer's pipeline". */
	s->savepoint_pending = 1;
	s->savepoint_open = 0;
	s->job_sent_nothing = 0;
	return LH_OK;
}

static enum lh_err wb_rollback_to(void *be)
{
	struct pg_store *s = be;
	if (s->savepoint_pending) { /* the job sent nothing: nothing to undo */
		s->savepoint_pending = 0;
		s->job_sent_nothing = 1;
		return LH_OK;
	}
	if (!s->savepoint_open) {
		/* Whether this job's SAVEPOINT was opened is unknown (the pipeline failed before
		 * it was confirmed): ROLLBACK TO could reach the previous job's and undo a change
		 * already counted as done. The whole batch fails instead. */
		exec_sql(s, &s->wc, "ROLLBACK", "rollback");
		return LH_ESTORE;
	}
	return exec_sql(s, &s->wc, "ROLLBACK TO SAVEPOINT job", "rollback_to");
}

static enum lh_err wb_release(void *be)
{
	struct pg_store *s = be;
	if (s->savepoint_pending || s->job_sent_nothing) {
		/* The job sent nothing: its savepoint was never opened, and the previous job's
		 * RELEASE (if one is due) is still due. */
		s->savepoint_pending = s->job_sent_nothing = 0;
	} else {
		s->release_pending = 1; /* sent before the next SAVEPOINT; COMMIT releases it */
	}
	return LH_OK;
}

static enum lh_err wb_flush(void *be)
{
	struct pg_store *s = be;
	return s->npipe ? pipe_sync(s, 1, NULL, "flush") : LH_OK;
}

static int wb_in_tx(void *be)
{
	struct pg_store *s = be;
	/* Not after a lost connection, nor in a transaction an error aborted (a failed
	 * ROLLBACK TO): then the jobs before are gone too, and the batch fails. */
	if (s->npipe) /* "busy" while statements are held: their failure shows at wb_flush */
		return PQstatus(s->wc.pg) == CONNECTION_OK;
	return PQtransactionStatus(s->wc.pg) == PQTRANS_INTRANS;
}

static enum lh_err wb_end(void *be, enum lh_err e)
{
	struct pg_store *s = be;
	s->may_hold = 0;
	if (e == LH_OK && (e = news_send(s, &s->wc, &s->fresh_news, 'n')) == LH_OK)
		e = news_send(s, &s->wc, &s->rescan_news, 'r');
	e = tx_close(s, &s->wc, e);
	if (s->subs_dirty)
		subs_bump(s);
	s->subs_dirty = 0;
	return e;
}

static const struct writer_backend pg_writer_ops = {
    .begin = wb_begin,
    .savepoint = wb_savepoint,
    .rollback_to = wb_rollback_to,
    .release = wb_release,
    .flush = wb_flush,
    .in_tx = wb_in_tx,
    .end = wb_end,
};

static enum lh_err pgs_submit(struct store *base, store_tx_fn fn, void *arg)
{
	return writer_submit(S(base)->writer, fn, arg);
}

static void pgs_submit_async(struct store *base, store_tx_fn fn, void *arg, unsigned flags,
                             store_done_fn done, void *done_arg)
{
	writer_submit_async(S(base)->writer, fn, arg, flags, done, done_arg);
}

static void pgs_set_commit_hook(struct store *base, store_commit_hook fn, void *ctx)
{
	writer_set_hook(S(base)->writer, fn, ctx);
}

/* ---- the delivery engine's side ---- */

#define DELIVERY_COLS                                                                              \
	"delivery_id, event_id, sub_id, entity_id, event_seq, event_type, status, attempts,"       \
	" next_at, last_error, created_at"

static void delivery_from_row(const PGresult *r, int i, void *out)
{
	struct delivery *d = out;
	memset(d, 0, sizeof *d);
	col_text(r, i, 0, d->delivery_id, sizeof d->delivery_id);
	col_text(r, i, 1, d->event_id, sizeof d->event_id);
	col_text(r, i, 2, d->sub_id, sizeof d->sub_id);
	col_text(r, i, 3, d->entity_id, sizeof d->entity_id);
	d->event_seq = col_i64(r, i, 4);
	d->event_type = (int)col_i64(r, i, 5);
	d->status = (enum delivery_status)col_i64(r, i, 6);
	d->attempts = (int)col_i64(r, i, 7);
	d->next_at_ms = col_i64(r, i, 8);
	col_text(r, i, 9, d->last_error, sizeof d->last_error);
	d->created_at = col_i64(r, i, 10);
}

/* A pending delivery with its payload (column 11, NULL when over the inline size). */
static void pending_from_row(const PGresult *r, int i, void *out)
{
	struct delivery *d = out;
	delivery_from_row(r, i, d);
	size_t len = (size_t)PQgetlength(r, i, 11);
	if (!PQgetisnull(r, i, 11) && (d->payload = malloc(len + 1)))
		memcpy(d->payload, PQgetvalue(r, i, 11), len + 1);
}

static enum lh_err pgs_delivery_pending(struct store *base, int64_t after_seq, const char *sub_id,
                                        size_t limit, struct delivery **out, size_t *n)
{
	struct params p = {0};
	p_i64(&p, after_seq);
	p_text(&p, sub_id);
	p_i64(&p, (int64_t)limit);
	p_i64(&p, DELIVERY_PAYLOAD_INLINE);
	return pool_list(S(base),
	                 "SELECT " DELIVERY_COLS ", (SELECT CASE WHEN octet_length(payload) <= $4"
	                 " THEN payload END FROM events e WHERE e.event_id = d.event_id)"
	                 " FROM deliveries d WHERE status = 0 AND sub_id = $2 AND event_seq > $1"
	                 " ORDER BY event_seq LIMIT $3",
	                 &p, sizeof **out, pending_from_row, (void **)out, n, "pending");
}

static void sub_ref_from_row(const PGresult *r, int i, void *out)
{
	struct sub_ref *ref = out;
	memset(ref, 0, sizeof *ref);
	col_text(r, i, 0, ref->sub_id, sizeof ref->sub_id);
}

static enum lh_err pgs_delivery_pending_subs(struct store *base, struct sub_ref **out, size_t *n)
{
	struct params p = {0};
	/* One index seek per subscription (each min() jumps to the next sub_id in the partial
	 * index), not a scan of every pending delivery. */
	return pool_list(S(base),
	                 "WITH RECURSIVE subs(id) AS ("
	                 " SELECT (SELECT min(sub_id) FROM deliveries WHERE status = 0)"
	                 " UNION ALL SELECT (SELECT min(sub_id) FROM deliveries"
	                 "  WHERE status = 0 AND sub_id > subs.id) FROM subs"
	                 " WHERE subs.id IS NOT NULL)"
	                 " SELECT id FROM subs WHERE id IS NOT NULL",
	                 &p, sizeof **out, sub_ref_from_row, (void **)out, n, "pending_subs");
}

static void payload_from_row(const PGresult *r, int i, void *out)
{
	*(char **)out = strdup(PQgetvalue(r, i, 0));
}

static enum lh_err pgs_event_payload(struct store *base, const char *event_id, char **out)
{
	struct params p = {0};
	char *copy = NULL;
	p_text(&p, event_id);
	enum lh_err e = pool_one(S(base), "SELECT payload FROM events WHERE event_id = $1", &p,
	                         payload_from_row, &copy, "payload");
	if (e == LH_OK && !copy)
		e = LH_ENOMEM;
	if (e == LH_OK)
		*out = copy;
	return e;
}

static void stats_from_row(const PGresult *r, int i, void *out)
{
	struct store_stats *st = out;
	st->pending = strtoll(PQgetvalue(r, i, 0), NULL, 10);
	for (int k = 0; k < SUB_DELETED; k++)
		st->subs[k] = strtoll(PQgetvalue(r, i, 1 + k), NULL, 10);
	st->bytes = strtoll(PQgetvalue(r, i, 4), NULL, 10);
}

/* One query: the pending count walks the partial index of pending deliveries (as small as
 * the backlog), subscriptions are few, and the size is the whole database's: the one
 * labhook was given holds its tables alone. */
static enum lh_err pgs_stats(struct store *base, struct store_stats *out)
{
	struct params p = {0};
	struct store_stats r;
	enum lh_err e = pool_one(S(base),
	                         "SELECT (SELECT count(*) FROM deliveries WHERE status = 0),"
	                         " (SELECT count(*) FROM subscriptions WHERE status = 0),"
	                         " (SELECT count(*) FROM subscriptions WHERE status = 1),"
	                         " (SELECT count(*) FROM subscriptions WHERE status = 2),"
	                         " pg_database_size(current_database())",
	                         &p, stats_from_row, &r, "stats");
	if (e == LH_OK)
		*out = r;
	return e;
}

struct record_job {
	const struct delivery_result *r;
	size_t n;
};

/* Records a batch of outcomes with one statement: every attempt, and each delivery's
 * latest state, for the outcomes that pass the fence (only the holder of the
 * subscription's lease, under the epoch the attempt was made with, records it: a node that
 * lost the lease, having stalled while another took over, leaves the delivery as the new
 * holder records it). A delivery cancelled meanwhile (unsubscribed) stays cancelled, and
 * one that retention has removed since takes no attempt.
 * Returns the ids of the deliveries it updated. */
static const char *const RECORD_SQL =
    "WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],"
    "  $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],"
    "  $11::text[], $12::bigint[]) AS r(delivery_id, n, started_at, duration_ms,"
    "  status_code, error, response, status, next_at, now, sub_id, epoch)),"
    " f AS (SELECT r.* FROM r JOIN leases l ON l.sub_id = r.sub_id AND l.node_id = $13"
    "  AND l.epoch = r.epoch"
    "  JOIN deliveries dl ON dl.delivery_id = r.delivery_id FOR SHARE OF l),"
    " a AS (INSERT INTO attempts(delivery_id, n, started_at, duration_ms, status_code, error,"
    "  response) SELECT delivery_id, n, started_at, duration_ms, status_code, error, response"
    "  FROM f ON CONFLICT (delivery_id, n) DO UPDATE SET started_at = excluded.started_at,"
    "  duration_ms = excluded.duration_ms, status_code = excluded.status_code,"
    "  error = excluded.error, response = excluded.response),"
    " last AS (SELECT DISTINCT ON (delivery_id) * FROM f ORDER BY delivery_id, n DESC)"
    " UPDATE deliveries d SET status = last.status, attempts = last.n, next_at = last.next_at,"
    " last_error = last.error, updated_at = last.now FROM last"
    " WHERE d.delivery_id = last.delivery_id AND d.status <> 3 RETURNING d.delivery_id";

/* A subscription's change after an attempt (success after failures, a failure, disable). */
static enum lh_err sub_outcome(struct pg_store *s, const struct delivery_result *r)
{
	struct params p = {0};
	int64_t changed = 0;
	p_text(&p, r->sub_id);
	if (r->sub != SUBO_SUCCESS)
		p_i64(&p, r->now);
	const char *sql =
	    r->sub == SUBO_SUCCESS ? "UPDATE subscriptions SET failing_since = 0 WHERE sub_id = $1"
	                             " AND failing_since <> 0"
	    : r->sub == SUBO_FAILURE ? "UPDATE subscriptions SET failing_since = $2"
	                               " WHERE sub_id = $1 AND failing_since = 0"
	                             : "UPDATE subscriptions SET status = 2, updated_at = $2"
	                               " WHERE sub_id = $1 AND status IN (0, 1)";
	enum lh_err e = run_cmd(s, &s->wc, sql, &p, &changed, "sub_outcome");
	if (e == LH_OK && r->sub == SUBO_DISABLE && changed > 0) {
		/* A disabled subscription gives its events up to new registrations. */
		struct subscription u;
		memset(&u, 0, sizeof u);
		snprintf(u.id, sizeof u.id, "%s", r->sub_id);
		u.status = SUB_DISABLED;
		e = sub_write_events(s, &s->wc, &u, 1);
		if (e == LH_OK)
			e = exec_sql(s, &s->wc, "NOTIFY labhook_subs", "notify");
		s->subs_dirty = 1;
	}
	return e;
}

static int str_in(const char *const *set, size_t n, const char *v)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(set[i], v) == 0)
			return 1;
	return 0;
}

static enum lh_err job_record(struct store_tx *tx, void *arg)
{
	struct pg_store *s = TX(tx);
	struct record_job *j = arg;
	struct pg_array col[12];
	struct params p = {0};
	PGresult *res = NULL;
	memset(col, 0, sizeof col);
	for (size_t i = 0; i < j->n; i++) {
		const struct delivery_result *r = &j->r[i];
		arr_add(&col[0], r->a.delivery_id);
		arr_add_i64(&col[1], r->a.n);
		arr_add_i64(&col[2], r->a.started_at_ms);
		arr_add_i64(&col[3], r->a.duration_ms);
		arr_add_i64(&col[4], r->a.status_code);
		arr_add(&col[5], r->a.error);
		arr_add(&col[6], r->a.response);
		arr_add_i64(&col[7], r->status);
		arr_add_i64(&col[8], r->next_at_ms);
		arr_add_i64(&col[9], r->now);
		arr_add(&col[10], r->sub_id);
		arr_add_i64(&col[11], r->epoch);
	}
	enum lh_err e = LH_OK;
	for (size_t k = 0; k < COUNTOF(col); k++)
		if (p_array(&p, &col[k]) != LH_OK)
			e = LH_ENOMEM;
	p_text(&p, s->node_id);
	if (e == LH_OK)
		e = run(s, &s->wc, RECORD_SQL, &p, &res, "record");
	params_free(&p);
	if (e != LH_OK)
		return e;
	/* The subscriptions' changes, in order, for the outcomes recorded; a change the same
	 * as the subscription's previous one in this batch changes nothing and is left out. */
	size_t nres = (size_t)PQntuples(res), nseen = 0;
	const char **done = malloc((nres + 1) * sizeof *done);
	const char **seen = malloc((j->n + 1) * sizeof *seen);
	enum sub_outcome *last = malloc((j->n + 1) * sizeof *last);
	if (!done || !seen || !last)
		e = LH_ENOMEM;
	for (size_t i = 0; i < nres && e == LH_OK; i++)
		done[i] = PQgetvalue(res, (int)i, 0);
	size_t refused = 0;
	for (size_t i = 0; i < j->n && e == LH_OK; i++) {
		const struct delivery_result *r = &j->r[i];
		if (!str_in(done, nres, r->a.delivery_id)) {
			LOG(LOG_DEBUG, "store",
			    "delivery=%s sub=%s epoch=%lld outcome not recorded: cancelled, or the lease passed on",
			    r->a.delivery_id, r->sub_id, (long long)r->epoch);
			refused++;
			continue;
		}
		if (r->sub == SUBO_NONE)
			continue;
		size_t k = 0;
		while (k < nseen && strcmp(seen[k], r->sub_id) != 0)
			k++;
		if (k < nseen && last[k] == r->sub)
			continue;
		if (k == nseen)
			seen[nseen++] = r->sub_id;
		last[k] = r->sub;
		e = sub_outcome(s, r);
	}
	/* Each of these deliveries is still pending for the lease's holder, which sends it again
	 * (at least once): one line per batch says how many, so duplicates can be accounted for. */
	if (refused && e == LH_OK)
		LOG(LOG_INFO, "store",
		    "refused=%zu of=%zu outcomes not recorded: cancelled, or the lease passed on",
		    refused, j->n);
	free(done);
	free(seen);
	free(last);
	PQclear(res);
	return e;
}

static enum lh_err pgs_delivery_record(struct store *base, const struct delivery_result *r,
                                       size_t n)
{
	struct record_job j = {r, n};
	return pgs_submit(base, job_record, &j);
}

static enum lh_err pgs_delivery_list(struct store *base, const char *client_id, const char *sub_id,
                                     int status, int64_t since, const char *before, size_t limit,
                                     struct delivery **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, sub_id);
	p_text(&p, client_id);
	p_i64(&p, status);
	p_i64(&p, since);
	p_text(&p, before);
	p_i64(&p, (int64_t)limit);
	return pool_list(S(base),
	                 "SELECT " DELIVERY_COLS " FROM deliveries WHERE sub_id = $1"
	                 " AND sub_id IN (SELECT sub_id FROM subscriptions WHERE client_id = $2)"
	                 " AND ($3::bigint < 0 OR status = $3::bigint) AND created_at >= $4"
	                 " AND ($5::text = '' OR delivery_id < $5::text)"
	                 " ORDER BY delivery_id DESC LIMIT $6",
	                 &p, sizeof **out, delivery_from_row, (void **)out, n, "delivery_list");
}

static void attempt_from_row(const PGresult *r, int i, void *out)
{
	struct attempt *a = out;
	memset(a, 0, sizeof *a);
	col_text(r, i, 0, a->delivery_id, sizeof a->delivery_id);
	a->n = (int)col_i64(r, i, 1);
	a->started_at_ms = col_i64(r, i, 2);
	a->duration_ms = (int)col_i64(r, i, 3);
	a->status_code = (int)col_i64(r, i, 4);
	col_text(r, i, 5, a->error, sizeof a->error);
	col_text(r, i, 6, a->response, sizeof a->response);
}

static enum lh_err pgs_attempt_list(struct store *base, const char *delivery_id,
                                    struct attempt **out, size_t *n)
{
	struct params p = {0};
	p_text(&p, delivery_id);
	return pool_list(S(base),
	                 "SELECT delivery_id, n, started_at, duration_ms, status_code, error,"
	                 " response FROM attempts WHERE delivery_id = $1 ORDER BY n",
	                 &p, sizeof **out, attempt_from_row, (void **)out, n, "attempt_list");
}

struct requeue_job {
	const char *client_id, *delivery_id, *sub_id;
	int64_t since, now_ms;
	struct delivery *list; /* what was set pending again */
	size_t n;
};

/* Hands what was set pending again to the engine once durable, as SQLite does. */
static enum lh_err requeue_push(struct pg_store *s, struct requeue_job *j)
{
	enum lh_err e = LH_OK;
	for (size_t i = 0; i < j->n && e == LH_OK; i++) {
		j->list[i].requeued = 1;
		e = writer_fresh_push(s->writer, &j->list[i]);
		news_add(&s->rescan_news, j->list[i].sub_id);
	}
	return e;
}

static enum lh_err job_requeue(struct store_tx *tx, void *arg)
{
	struct pg_store *s = TX(tx);
	struct requeue_job *j = arg;
	struct params p = {0};
	p_text(&p, j->delivery_id);
	p_text(&p, j->client_id);
	p_i64(&p, j->now_ms);
	p_i64(&p, j->now_ms / 1000);
	enum lh_err e =
	    query_list(s, &s->wc,
	               "UPDATE deliveries SET status = 0, next_at = $3, updated_at = $4"
	               " WHERE delivery_id = $1 AND status <> 3 AND sub_id IN"
	               " (SELECT sub_id FROM subscriptions WHERE client_id = $2"
	               " AND status <> 3) RETURNING " DELIVERY_COLS,
	               &p, sizeof *j->list, delivery_from_row, (void **)&j->list, &j->n, "requeue");
	if (e != LH_OK)
		return e;
	return j->n == 0 ? LH_ENOTFOUND : requeue_push(s, j);
}

static enum lh_err pgs_delivery_requeue(struct store *base, const char *client_id,
                                        const char *delivery_id, int64_t now_ms,
                                        struct delivery *out)
{
	struct requeue_job j = {
	    .client_id = client_id, .delivery_id = delivery_id, .now_ms = now_ms};
	enum lh_err e = pgs_submit(base, job_requeue, &j);
	if (e == LH_OK)
		*out = j.list[0];
	free(j.list);
	return e;
}

static enum lh_err job_recover(struct store_tx *tx, void *arg)
{
	struct pg_store *s = TX(tx);
	struct requeue_job *j = arg;
	struct params p = {0};
	p_text(&p, j->sub_id);
	p_i64(&p, j->since);
	p_text(&p, j->client_id);
	p_i64(&p, j->now_ms);
	p_i64(&p, j->now_ms / 1000);
	enum lh_err e =
	    query_list(s, &s->wc,
	               "WITH u AS (UPDATE deliveries SET status = 0, next_at = $4,"
	               " updated_at = $5 WHERE sub_id = $1 AND status = 2"
	               " AND created_at >= $2 AND sub_id IN (SELECT sub_id FROM"
	               " subscriptions WHERE client_id = $3 AND status <> 3)"
	               " RETURNING " DELIVERY_COLS ")"
	               " SELECT " DELIVERY_COLS " FROM u ORDER BY event_seq",
	               &p, sizeof *j->list, delivery_from_row, (void **)&j->list, &j->n, "recover");
	return e == LH_OK ? requeue_push(s, j) : e;
}

static enum lh_err pgs_delivery_recover(struct store *base, const char *client_id,
                                        const char *sub_id, int64_t since, int64_t now_ms,
                                        struct delivery **out, size_t *n)
{
	struct requeue_job j = {
	    .client_id = client_id, .sub_id = sub_id, .since = since, .now_ms = now_ms};
	enum lh_err e = pgs_submit(base, job_recover, &j);
	if (e != LH_OK) {
		free(j.list);
		return e;
	}
	*out = j.list;
	*n = j.n;
	return LH_OK;
}

/* ---- retention ---- */

/* One batch of a retention pass (see store.h), as a job of the writer: its deletes take
 * their turn under LOCK_ORDER like every batch, so they cannot meet another node's record
 * of the same delivery half-way; a primary-key range of at most `batch` rows each. */
static enum lh_err job_sweep(struct store_tx *tx, void *arg)
{
	struct pg_store *s = TX(tx);
	struct store_sweep_job *j = arg;
	struct retention_cursor *c = &j->cur;
	struct params p = {0};
	PGresult *r = NULL;
	char hi[ID_CAP] = "";
	int64_t hi_seq = 0, created = 0, changed = 0;
	size_t n = 0;
	enum lh_err e;

	if (!c->events)
		p_text(&p, c->delivery_id);
	else
		p_i64(&p, c->event_seq);
	p_i64(&p, (int64_t)j->batch);
	e = run(s, &s->wc,
	        !c->events ? "SELECT delivery_id, created_at FROM deliveries WHERE delivery_id > $1"
	                     " ORDER BY delivery_id LIMIT $2"
	                   : "SELECT seq, created_at FROM events WHERE seq > $1 ORDER BY seq"
	                     " LIMIT $2",
	        &p, &r, "sweep_page");
	if (e != LH_OK)
		return e;
	n = (size_t)PQntuples(r);
	if (n > 0 && !c->events)
		col_text(r, (int)n - 1, 0, hi, sizeof hi);
	else if (n > 0)
		hi_seq = col_i64(r, (int)n - 1, 0);
	if (n > 0)
		created = col_i64(r, (int)n - 1, 1);
	PQclear(r);
	memset(&p, 0, sizeof p);
	if (n > 0 && !c->events) {
		/* The attempts first: they refer to their delivery. */
		static const char *const del[] = {
		    "DELETE FROM attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries"
		    " WHERE delivery_id > $1 AND delivery_id <= $2 AND status <> 0"
		    " AND updated_at < $3)",
		    "DELETE FROM deliveries WHERE delivery_id > $1 AND delivery_id <= $2"
		    " AND status <> 0 AND updated_at < $3",
		};
		p_text(&p, c->delivery_id);
		p_text(&p, hi);
		p_i64(&p, j->before);
		for (size_t k = 0; k < COUNTOF(del); k++) {
			if ((e = run_cmd(s, &s->wc, del[k], &p, &changed, "sweep_deliveries")) !=
			    LH_OK)
				return e;
			j->removed += (size_t)changed;
		}
	} else if (n > 0) {
		/* deliveries_event makes the check (and the foreign key's own) one index seek. */
		p_i64(&p, c->event_seq);
		p_i64(&p, hi_seq);
		p_i64(&p, j->before);
		if ((e = run_cmd(
		         s, &s->wc,
		         "DELETE FROM events WHERE seq > $1 AND seq <= $2 AND created_at < $3"
		         " AND NOT EXISTS (SELECT 1 FROM deliveries d"
		         " WHERE d.event_id = events.event_id)",
		         &p, &changed, "sweep_events")) != LH_OK)
			return e;
		j->removed += (size_t)changed;
	}
	store_sweep_advance(c, n, j->batch, hi, hi_seq, created, j->before);
	return LH_OK;
}

static enum lh_err pgs_retention_sweep(struct store *base, int64_t before, size_t batch,
                                       struct retention_cursor *cur, size_t *removed)
{
	return store_sweep_submit(base, job_sweep, before, batch, cur, removed);
}

/* ---- leases: which node sends which subscription's deliveries ---- */

static void lease_from_row(const PGresult *r, int i, void *out)
{
	struct lease *l = out;
	memset(l, 0, sizeof *l);
	col_text(r, i, 0, l->sub_id, sizeof l->sub_id);
	l->epoch = col_i64(r, i, 1);
}

/* One transaction: the node's heartbeat, its leases renewed, free and expired ones taken
 * up to its share (in sub_id order, the same on every node, so nodes taking at once wait
 * for each other rather than deadlock; a lease another node took first is left to it by
 * the ON CONFLICT's WHERE), and the
 * leases it holds. Live subscriptions only (active or paused): the others' leases lapse,
 * and neither count nor are listed (a node holding a disabled one is not over its share). */
static enum lh_err pgs_lease_sync(struct store *base, int64_t lease_ms, struct lease **out,
                                  size_t *n, size_t *share, int *all, int64_t *expiry_ms)
{
	struct pg_store *s = S(base);
	struct pg_conn *c;
	struct params p = {0};
	PGresult *r = NULL;
	char host[256] = "";
	enum lh_err e = pool_begin(s, "BEGIN", &c);
	if (e != LH_OK)
		return e;
	gethostname(host, sizeof host - 1);
	p_text(&p, s->node_id);
	p_i64(&p, lease_ms);
	p_text(&p, host);
	p_i64(&p, (int64_t)getpid());
	p_i64(&p, s->started_at);
	e = run_cmd(s, c,
	            "INSERT INTO nodes(node_id, host, pid, started_at, seen_at)"
	            " VALUES($1, $3, $4, $5, now()) ON CONFLICT (node_id) DO UPDATE"
	            " SET seen_at = now(), host = excluded.host, pid = excluded.pid,"
	            " started_at = excluded.started_at WHERE $2::bigint >= 0",
	            &p, NULL, "node_seen");
	p.n = 2;
	if (e == LH_OK)
		e = run_cmd(s, c,
		            "UPDATE leases l SET expires_at = now() + $2 * interval '1 millisecond'"
		            " FROM subscriptions su WHERE l.node_id = $1 AND su.sub_id = l.sub_id"
		            " AND su.status IN (0, 1) AND l.expires_at > now()",
		            &p, NULL, "lease_renew");
	if (e == LH_OK)
		e = run(
		    s, c,
		    "SELECT (SELECT count(*) FROM subscriptions WHERE status IN (0, 1)),"
		    " (SELECT count(*) FROM nodes WHERE seen_at > now() - $2 * interval '1 millisecond'"
		    "  OR node_id = $1),"
		    " (SELECT count(*) FROM leases l JOIN subscriptions su ON su.sub_id = l.sub_id"
		    "  WHERE l.node_id = $1 AND l.expires_at > now() AND su.status IN (0, 1)),"
		    " (SELECT coalesce(ceil(extract(epoch FROM min(expires_at) - now()) * 1000), -1)"
		    "  FROM leases WHERE node_id <> $1 AND expires_at > now())::bigint",
		    &p, &r, "lease_share");
	if (e == LH_OK) {
		int64_t subs = col_i64(r, 0, 0), nodes = col_i64(r, 0, 1), held = col_i64(r, 0, 2);
		*expiry_ms = col_i64(r, 0, 3);
		PQclear(r);
		*share = (size_t)((subs + (nodes > 0 ? nodes : 1) - 1) / (nodes > 0 ? nodes : 1));
		if ((int64_t)*share > held) {
			p_i64(&p, (int64_t)*share - held);
			e = run_cmd(
			    s, c,
			    "INSERT INTO leases(sub_id, node_id, epoch, expires_at)"
			    " SELECT su.sub_id, $1, 1, now() + $2 * interval '1 millisecond'"
			    " FROM subscriptions su LEFT JOIN leases l ON l.sub_id = su.sub_id"
			    " WHERE su.status IN (0, 1) AND (l.sub_id IS NULL"
			    "  OR l.expires_at <= now())"
			    " ORDER BY l.node_id IS DISTINCT FROM $1, su.sub_id LIMIT $3"
			    " ON CONFLICT (sub_id) DO UPDATE SET node_id = excluded.node_id,"
			    " epoch = leases.epoch + (leases.node_id <> excluded.node_id)::int,"
			    " expires_at = excluded.expires_at"
			    " WHERE leases.expires_at <= now()",
			    &p, NULL, "lease_take");
			p.n = 2;
		}
	}
	if (e == LH_OK)
		e = query_list(
		    s, c,
		    "SELECT l.sub_id, l.epoch FROM leases l JOIN subscriptions su"
		    " ON su.sub_id = l.sub_id WHERE l.node_id = $1"
		    " AND l.expires_at > now() AND su.status IN (0, 1) AND $2::bigint >= 0"
		    " ORDER BY l.sub_id COLLATE \"C\"",
		    &p, sizeof **out, lease_from_row, (void **)out, n, "lease_list");
	e = pool_end(s, c, e);
	if (e != LH_OK) {
		free(*out);
		*out = NULL;
		return e;
	}
	*all = 0;
	return LH_OK;
}

/* Lets the leases lapse now; their epochs stay, so the next holder's are higher. */
static enum lh_err pgs_lease_release(struct store *base, const struct lease *l, size_t n)
{
	struct pg_store *s = S(base);
	struct params p = {0};
	struct pg_array subs = {0};
	for (size_t i = 0; i < n; i++)
		arr_add(&subs, l[i].sub_id);
	p_text(&p, s->node_id);
	if (p_array(&p, &subs) != LH_OK)
		return LH_ENOMEM;
	enum lh_err e = pool_cmd(s,
	                         "UPDATE leases SET expires_at = now() - interval '1 second'"
	                         " WHERE node_id = $1 AND sub_id = ANY($2::text[])",
	                         &p, NULL, "lease_release");
	params_free(&p);
	return e;
}

static enum lh_err pgs_bill_get(struct store *base, const char *client_id, const char *bill_id,
                                struct bill *out, struct report **reports, size_t *n)
{
	struct pg_store *s = S(base);
	struct pg_conn *c;
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	e = bill_read(s, c, client_id, bill_id, out, reports, n);
	pool_put(s, c);
	return e;
}

/* ---- moving a store: export and import (see store.h) ---- */

/* Runs sql (no parameters, not prepared) for its rows: on LH_OK free *out with PQclear. */
static enum lh_err exec_rows(struct pg_store *s, struct pg_conn *c, const char *sql, PGresult **out,
                             const char *what)
{
	PGresult *r = PQexec(c->pg, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		enum lh_err e = fail(s, c, r, what);
		PQclear(r);
		return e;
	}
	*out = r;
	return LH_OK;
}

/* The rows of every copied table, into counts, inside c's transaction. */
static enum lh_err count_tables(struct pg_store *s, struct pg_conn *c,
                                int64_t counts[STORE_COPY_NTABLES])
{
	enum lh_err e = LH_OK;
	for (size_t t = 0; e == LH_OK && t < STORE_COPY_NTABLES; t++) {
		char sql[128];
		PGresult *r = NULL;
		snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", store_copy_tables[t].name);
		if ((e = exec_rows(s, c, sql, &r, "copy_count")) == LH_OK)
			counts[t] = col_i64(r, 0, 0);
		PQclear(r);
	}
	return e;
}

/* A bytea in text output (\x and hex digits) as bytes, into out (len/2 bytes at least). */
static size_t unhex(const char *t, size_t len, char *out)
{
	size_t n = 0;
	for (size_t i = 2; t[0] == '\\' && t[1] == 'x' && i + 1 < len; i += 2) {
		int hi = hexval(t[i]), lo = hexval(t[i + 1]);
		if (hi < 0 || lo < 0)
			break;
		out[n++] = (char)(hi << 4 | lo);
	}
	return n;
}

/* Passes every row of table t to fn, through a cursor (a table is never held in memory
 * whole), inside c's transaction. */
static enum lh_err export_table(struct pg_store *s, struct pg_conn *c, size_t t, store_row_fn fn,
                                void *ctx, int64_t *count)
{
	const struct store_table *tb = &store_copy_tables[t];
	char cols[STORE_COPY_NAMES_CAP], keys[STORE_COPY_NAMES_CAP], sql[3 * STORE_COPY_NAMES_CAP];
	struct store_val v[STORE_COPY_MAXCOLS];
	char *bytes[STORE_COPY_MAXCOLS] = {NULL};
	PGresult *r = NULL;
	enum lh_err e;

	snprintf(sql, sizeof sql, "SELECT * FROM %s LIMIT 0", tb->name);
	if ((e = exec_rows(s, c, sql, &r, "copy_columns")) != LH_OK)
		return e;
	e = store_copy_columns(t, (size_t)PQnfields(r));
	PQclear(r);
	if (e != LH_OK)
		return e;
	store_copy_names(tb, tb->ncols, cols, sizeof cols);
	store_copy_names(tb, tb->nkey, keys, sizeof keys);
	snprintf(sql, sizeof sql,
	         "DECLARE lh_export NO SCROLL CURSOR FOR SELECT %s FROM %s"
	         " ORDER BY %s",
	         cols, tb->name, keys);
	if ((e = exec_sql(s, c, sql, "copy_export")) != LH_OK)
		return e;
	while (e == LH_OK &&
	       (e = exec_rows(s, c, "FETCH 1000 FROM lh_export", &r, "copy_fetch")) == LH_OK) {
		int n = PQntuples(r);
		for (int row = 0; e == LH_OK && row < n; row++) {
			for (size_t i = 0; e == LH_OK && i < tb->ncols; i++) {
				const char *p = PQgetvalue(r, row, (int)i);
				size_t len = (size_t)PQgetlength(r, row, (int)i);
				v[i] = (struct store_val){STORE_VAL_TEXT, p, len};
				if (PQgetisnull(r, row, (int)i)) {
					v[i].kind = STORE_VAL_NULL;
				} else if (tb->cols[i].kind == STORE_COL_BYTES) {
					free(bytes[i]);
					if (!(bytes[i] = malloc(len / 2 + 1)))
						e = LH_ENOMEM;
					else
						v[i] = (struct store_val){STORE_VAL_BYTES, bytes[i],
						                          unhex(p, len, bytes[i])};
				}
			}
			if (e == LH_OK && (e = fn(ctx, t, v)) == LH_OK)
				(*count)++;
		}
		PQclear(r);
		if (n == 0)
			break;
	}
	for (size_t i = 0; i < STORE_COPY_MAXCOLS; i++)
		free(bytes[i]);
	if (e == LH_OK)
		e = exec_sql(s, c, "CLOSE lh_export", "copy_close");
	return e;
}

/* ---- report documents ----
 * Chunks go in and out as bytea's text form (\x and hex): twice the bytes on the wire, but
 * the same text parameters and results as every other statement here. */

#define DOC_COLS "content_type, size, sha256, version, updated_at"

/* The five DOC_COLS from column first on, into d (its ids are the caller's). */
static void doc_from_row(const PGresult *r, int i, int first, struct report_doc *d)
{
	col_text(r, i, first, d->content_type, sizeof d->content_type);
	d->size = col_i64(r, i, first + 1);
	col_hash(r, i, first + 2, d->sha256);
	d->version = col_i64(r, i, first + 3);
	d->updated_at = col_i64(r, i, first + 4);
}

static void doc_meta_row(const PGresult *r, int i, void *out)
{
	doc_from_row(r, i, 0, out);
}

static enum lh_err tx_doc_meta(struct store_tx *tx, const char *bill_id, const char *report_id,
                               struct report_doc *out)
{
	struct pg_store *s = TX(tx);
	struct params p = {0};
	struct report_doc d;
	memset(&d, 0, sizeof d);
	p_text(&p, bill_id);
	p_text(&p, report_id);
	enum lh_err e = query_one(s, &s->wc,
	                          "SELECT " DOC_COLS " FROM report_documents"
	                          " WHERE bill_id = $1 AND report_id = $2",
	                          &p, doc_meta_row, &d, "doc_meta");
	if (e == LH_OK) {
		snprintf(d.bill_id, sizeof d.bill_id, "%s", bill_id);
		snprintf(d.report_id, sizeof d.report_id, "%s", report_id);
		*out = d;
	}
	return e;
}

static enum lh_err tx_doc_put(struct store_tx *tx, const struct report_doc *d, const void *data,
                              size_t len)
{
	static const char hex[] = "0123456789abcdef";
	struct pg_store *s = TX(tx);
	struct params p = {0};
	enum lh_err e;
	p_text(&p, d->bill_id);
	p_text(&p, d->report_id);
	if ((e = run_cmd(s, &s->wc,
	                 "DELETE FROM report_chunks WHERE bill_id = $1 AND report_id = $2", &p,
	                 NULL, "doc_clear")) != LH_OK)
		return e;
	p_text(&p, d->content_type);
	p_i64(&p, (int64_t)len);
	p_hash(&p, d->sha256);
	p_i64(&p, d->version);
	p_i64(&p, d->updated_at);
	if ((e = run_cmd(s, &s->wc,
	                 "INSERT INTO report_documents(bill_id, report_id, " DOC_COLS ")"
	                 " VALUES($1, $2, $3, $4, $5, $6, $7) ON CONFLICT(bill_id, report_id)"
	                 " DO UPDATE SET content_type = excluded.content_type,"
	                 " size = excluded.size, sha256 = excluded.sha256,"
	                 " version = excluded.version, updated_at = excluded.updated_at",
	                 &p, NULL, "doc_put")) != LH_OK)
		return e;
	char *text = malloc(2 * REPORT_CHUNK + 3);
	if (!text)
		return LH_ENOMEM;
	for (size_t off = 0, n = 0; e == LH_OK && off < len; off += REPORT_CHUNK, n++) {
		size_t k = len - off < REPORT_CHUNK ? len - off : REPORT_CHUNK;
		const unsigned char *b = (const unsigned char *)data + off;
		text[0] = '\\';
		text[1] = 'x';
		for (size_t i = 0; i < k; i++) {
			text[2 + 2 * i] = hex[b[i] >> 4];
			text[3 + 2 * i] = hex[b[i] & 15];
		}
		text[2 + 2 * k] = '\0';
		struct params q = {0};
		p_text(&q, d->bill_id);
		p_text(&q, d->report_id);
		p_i64(&q, (int64_t)n);
		p_text(&q, text);
		e = run_cmd(s, &s->wc,
		            "INSERT INTO report_chunks(bill_id, report_id, n, data)"
		            " VALUES($1, $2, $3, $4)",
		            &q, NULL, "doc_chunk_put");
	}
	free(text);
	return e;
}

static void doc_info_row(const PGresult *r, int i, void *out)
{
	struct report_doc_info *info = out;
	col_text(r, i, 0, info->client_id, sizeof info->client_id);
	info->bill_status = (enum bill_status)col_i64(r, i, 1);
	info->has_doc = (int)col_i64(r, i, 2);
	if (info->has_doc)
		doc_from_row(r, i, 3, &info->doc);
}

static enum lh_err pgs_report_doc_get(struct store *base, const char *client_id,
                                      const char *bill_id, const char *report_id,
                                      struct report_doc_info *out)
{
	struct params p = {0};
	struct report_doc_info info;
	memset(&info, 0, sizeof info);
	p_text(&p, bill_id);
	p_text(&p, report_id);
	enum lh_err e = pool_one(
	    S(base),
	    "SELECT b.client_id, b.status, CASE WHEN d.report_id IS NULL THEN 0 ELSE 1 END,"
	    " d.content_type, d.size, d.sha256, d.version, d.updated_at FROM reports r"
	    " JOIN bills b ON b.bill_id = r.bill_id LEFT JOIN report_documents d"
	    " ON d.bill_id = r.bill_id AND d.report_id = r.report_id"
	    " WHERE r.report_id = $2 AND r.bill_id = $1",
	    &p, doc_info_row, &info, "report_doc_get");
	if (e == LH_OK && client_id && client_id[0] && strcmp(info.client_id, client_id) != 0)
		e = LH_ENOTFOUND;
	if (e == LH_OK) {
		snprintf(info.doc.bill_id, sizeof info.doc.bill_id, "%s", bill_id);
		snprintf(info.doc.report_id, sizeof info.doc.report_id, "%s", report_id);
		*out = info;
	}
	return e;
}

static enum lh_err pgs_report_doc_chunk(struct store *base, const char *bill_id,
                                        const char *report_id, int64_t version, int64_t n,
                                        void *buf, size_t cap, size_t *len)
{
	struct pg_store *s = S(base);
	struct params p = {0};
	struct pg_conn *c;
	PGresult *r = NULL;
	p_text(&p, bill_id);
	p_text(&p, report_id);
	p_i64(&p, n);
	p_i64(&p, version);
	enum lh_err e = pool_get(s, &c);
	if (e != LH_OK)
		return e;
	/* One statement: the chunk and the version it belongs to come from one snapshot. */
	e = run(s, c,
	        "SELECT c.data FROM report_chunks c JOIN report_documents d"
	        " ON d.bill_id = c.bill_id AND d.report_id = c.report_id"
	        " WHERE c.bill_id = $1 AND c.report_id = $2 AND c.n = $3 AND d.version = $4",
	        &p, &r, "report_doc_chunk");
	pool_put(s, c);
	if (e == LH_OK && PQntuples(r) == 0)
		e = LH_ENOTFOUND;
	if (e == LH_OK) {
		size_t tl = (size_t)PQgetlength(r, 0, 0);
		if (tl < 2 || (tl - 2) / 2 > cap)
			e = LH_ESTORE;
		else
			*len = unhex(PQgetvalue(r, 0, 0), tl, buf);
	}
	PQclear(r);
	return e;
}

static enum lh_err pgs_export_rows(struct store *base, store_row_fn fn, void *ctx,
                                   int64_t rows[STORE_COPY_NTABLES])
{
	struct pg_store *s = S(base);
	int64_t counts[STORE_COPY_NTABLES] = {0};
	struct pg_conn *c;
	/* One snapshot for every table. */
	enum lh_err e = pool_begin(s, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", &c);
	if (e != LH_OK)
		return e;
	for (size_t t = 0; e == LH_OK && t < STORE_COPY_NTABLES; t++)
		e = export_table(s, c, t, fn, ctx, &counts[t]);
	if ((e = pool_end(s, c, e)) == LH_OK && rows)
		memcpy(rows, counts, sizeof counts);
	return e;
}

/* An import in progress: rows go in with COPY ... FROM STDIN, one table at a time. */
struct pg_import {
	struct pg_store *s;
	struct pg_conn *c;
	int copying; /* a COPY into `table` is open */
	size_t table;
	struct pg_array line; /* the row being written, in COPY's text format */
};

/* Text in COPY's text format: backslash, tab, newline and carriage return escaped. */
static void line_text(struct pg_import *im, const char *p, size_t n)
{
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		const char *esc = p[i] == '\\'   ? "\\\\"
		                  : p[i] == '\t' ? "\\t"
		                  : p[i] == '\n' ? "\\n"
		                  : p[i] == '\r' ? "\\r"
		                                 : NULL;
		if (!esc)
			continue;
		arr_put(&im->line, p + run, i - run);
		arr_put(&im->line, esc, 2);
		run = i + 1;
	}
	arr_put(&im->line, p + run, n - run);
}

/* Ends the open COPY: with abort set (the export failed) it fails on purpose. */
static enum lh_err copy_end(struct pg_import *im, int abort)
{
	enum lh_err e = LH_OK;
	PGresult *r;
	if (!im->copying)
		return LH_OK;
	im->copying = 0;
	if (PQputCopyEnd(im->c->pg, abort ? "the export failed" : NULL) != 1)
		e = fail(im->s, im->c, NULL, "copy_end");
	while ((r = PQgetResult(im->c->pg))) {
		if (e == LH_OK && !abort && PQresultStatus(r) != PGRES_COMMAND_OK)
			e = fail(im->s, im->c, r, "copy_in");
		PQclear(r);
	}
	if (e == LH_ECONFLICT) {
		LOG(LOG_ERROR, "store", "table=%s a copied row breaks a key or a reference",
		    store_copy_tables[im->table].name);
		e = LH_ESTORE; /* not the target's fault: it was empty */
	}
	return e;
}

/* Writes one exported row (store_row_fn) into the COPY of its table, opening it first. */
static enum lh_err import_row(void *ctx, size_t t, const struct store_val *vals)
{
	static const char hex[] = "0123456789abcdef";
	struct pg_import *im = ctx;
	const struct store_table *tb = &store_copy_tables[t];
	enum lh_err e;
	if (!im->copying || im->table != t) {
		char cols[STORE_COPY_NAMES_CAP], sql[3 * STORE_COPY_NAMES_CAP];
		if ((e = copy_end(im, 0)) != LH_OK)
			return e;
		store_copy_names(tb, tb->ncols, cols, sizeof cols);
		snprintf(sql, sizeof sql, "COPY %s(%s) FROM STDIN", tb->name, cols);
		PGresult *r = PQexec(im->c->pg, sql);
		e = PQresultStatus(r) == PGRES_COPY_IN ? LH_OK
		                                       : fail(im->s, im->c, r, "copy_start");
		PQclear(r);
		if (e != LH_OK)
			return e;
		im->copying = 1;
		im->table = t;
	}
	im->line.len = 0;
	for (size_t i = 0; i < tb->ncols; i++) {
		struct store_val v = vals[i];
		if ((e = store_copy_value(t, i, &v)) != LH_OK)
			return e;
		if (i)
			arr_put(&im->line, "\t", 1);
		if (v.kind == STORE_VAL_NULL) {
			arr_put(&im->line, "\\N", 2);
		} else if (v.kind == STORE_VAL_BYTES) { /* bytea's \x form, its \ escaped */
			arr_put(&im->line, "\\\\x", 3);
			for (size_t k = 0; k < v.len; k++) {
				unsigned char b = (unsigned char)v.p[k];
				arr_put(&im->line, (char[]){hex[b >> 4], hex[b & 15]}, 2);
			}
		} else {
			line_text(im, v.p, v.len);
		}
	}
	arr_put(&im->line, "\n", 1);
	if (im->line.oom)
		return LH_ENOMEM;
	if (PQputCopyData(im->c->pg, im->line.buf, (int)im->line.len) != 1)
		return fail(im->s, im->c, NULL, "copy_row");
	return LH_OK;
}

static enum lh_err pgs_import_from(struct store *base, struct store *from,
                                   int64_t rows[STORE_COPY_NTABLES])
{
	struct pg_store *s = S(base);
	struct pg_import im = {.s = s};
	int64_t exported[STORE_COPY_NTABLES] = {0}, have[STORE_COPY_NTABLES] = {0};
	char sql[512];
	size_t o;
	enum lh_err e;

	if (from == base)
		return LH_EINVAL;
	/* In the order every writer keeps (LOCK_ORDER first), telling the other nodes at the
	 * commit that subscriptions changed. */
	if ((e = pool_begin(s, BEGIN_SUBS, &im.c)) != LH_OK)
		return e;
	/* Nobody else writes the tables until the commit, so "empty" stays true. */
	o = (size_t)snprintf(sql, sizeof sql, "LOCK TABLE");
	for (size_t t = 0; t < STORE_COPY_NTABLES && o < sizeof sql; t++)
		o += (size_t)snprintf(sql + o, sizeof sql - o, "%s %s", t ? "," : "",
		                      store_copy_tables[t].name);
	snprintf(sql + o, sizeof sql - o, " IN EXCLUSIVE MODE");
	if ((e = exec_sql(s, im.c, sql, "copy_lock")) != LH_OK ||
	    (e = count_tables(s, im.c, have)) != LH_OK)
		goto out;
	for (size_t t = 1; t < STORE_COPY_NTABLES; t++) /* meta (0) is replaced */
		if (have[t]) {
			e = store_copy_refuse(t, have[t]);
			goto out;
		}
	if ((e = exec_sql(s, im.c, "DELETE FROM meta", "copy_meta")) != LH_OK)
		goto out;
	e = from->ops->export_rows(from, import_row, &im, exported);
	enum lh_err ce = copy_end(&im, e != LH_OK);
	if (e == LH_OK)
		e = ce;
	if (e != LH_OK)
		goto out;
	/* The next event's seq follows the last one copied (the order every node reads in);
	 * the other nodes read every backlog again. */
	struct batch_news all = {.all = 1};
	if ((e = exec_sql(s, im.c,
	                  "SELECT setval(pg_get_serial_sequence('events', 'seq'),"
	                  " COALESCE(max(seq), 0) + 1, false) FROM events",
	                  "copy_seq")) != LH_OK ||
	    (e = news_send(s, im.c, &all, 'r')) != LH_OK ||
	    (e = count_tables(s, im.c, have)) != LH_OK)
		goto out;
	e = store_copy_check(exported, have);
out:
	e = pool_end(s, im.c, e);
	free(im.line.buf);
	if (e != LH_OK)
		return e;
	subs_bump(s);
	if (s->writer)
		writer_notify(s->writer, &(struct store_news){.lost = 1});
	if (rows)
		memcpy(rows, exported, sizeof exported);
	return LH_OK;
}

/* ---- the listener: other nodes' subscription changes ---- */

static int stopping(struct pg_store *s)
{
	return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE);
}

/* Waits up to ms for fd to be readable, or for close to wake us; 1 if fd is readable. */
static int wait_readable(struct pg_store *s, int fd, int ms)
{
	struct pollfd p[2] = {{s->wake[0], POLLIN, 0}, {fd, POLLIN, 0}};
	int k = poll(p, fd >= 0 ? 2 : 1, ms);
	return k > 0 && !stopping(s) && fd >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP));
}

/* Passes another node's "<node> <kind> <subs>" (see news_send) to the commit hook; our
 * own commits reached it already. */
static void news_heard(struct pg_store *s, const char *payload)
{
	struct sub_news news[NEWS_MAX];
	struct store_news nw = {.subs = news};
	size_t nl = strlen(s->node_id);
	if (strncmp(payload, s->node_id, nl) == 0 && payload[nl] == ' ')
		return;
	const char *p = strchr(payload, ' ');
	if (!p || (p[1] != 'n' && p[1] != 'r') || p[2] != ' ') {
		nw.lost = 1; /* not ours to read: read every backlog again */
	} else if (p[3] == '*') {
		nw.lost = 1;
	} else {
		int rescan = p[1] == 'r';
		for (p += 3; *p && nw.nsubs < NEWS_MAX;) {
			size_t len = strcspn(p, ",");
			if (len && len < ID_CAP) {
				memcpy(news[nw.nsubs].sub_id, p, len);
				news[nw.nsubs].sub_id[len] = '\0';
				news[nw.nsubs++].rescan = rescan;
			}
			p += len + (p[len] == ',');
		}
	}
	writer_notify(s->writer, &nw);
}

/* Listens on pg until it is lost or the store closes: subscription changes bump
 * subs_version, other nodes' deliveries go to the commit hook. */
static void listen_on(struct pg_store *s, PGconn *pg)
{
	while (!stopping(s) && PQstatus(pg) == CONNECTION_OK) {
		if (!wait_readable(s, PQsocket(pg), LISTEN_POLL_MS))
			continue;
		if (!PQconsumeInput(pg))
			return; /* lost: the caller reconnects */
		int subs = 0;
		for (PGnotify *n; (n = PQnotifies(pg)); PQfreemem(n)) {
			if (strcmp(n->relname, "labhook_deliveries") == 0)
				news_heard(s, n->extra);
			else
				subs = 1;
		}
		if (subs)
			subs_bump(s);
	}
}

static void *listener_main(void *arg)
{
	struct pg_store *s = arg;
	int backoff = BACKOFF_MIN_MS;
	pthread_setname_np(pthread_self(), "lh-pg-listen");
	while (!stopping(s)) {
		PGconn *pg = pg_connect(s);
		PGresult *r = NULL;
		if (PQstatus(pg) == CONNECTION_OK)
			r = PQexec(pg, "LISTEN labhook_subs; LISTEN labhook_deliveries");
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			PQclear(r);
			health_failed(s, pg, 0);
			PQfinish(pg);
			wait_readable(s, -1, backoff);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
			continue;
		}
		PQclear(r);
		backoff = BACKOFF_MIN_MS;
		health_ok(s);
		/* What other nodes changed while nobody listened was not heard: re-read all. */
		__atomic_add_fetch(&s->subs_version, 1, __ATOMIC_RELEASE);
		if (s->writer)
			writer_notify(s->writer,
			              &(struct store_news){.subs_changed = 1, .lost = 1});
		listen_on(s, pg);
		PQfinish(pg);
	}
	return NULL;
}

/* ---- opening and closing ---- */

static void pgs_close(struct store *base)
{
	struct pg_store *s = S(base);
	if (!s)
		return;
	if (s->listening) {
		__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
		if (write(s->wake[1], "x", 1) < 0)
			LOG(LOG_WARN, "store",
			    "the listener could not be woken; it stops within 1 s");
		pthread_join(s->listener, NULL);
	}
	for (int i = 0; i < 2; i++)
		if (s->wake[i] >= 0)
			close(s->wake[i]);
	writer_stop(s->writer); /* jobs already queued still run: their submitters wait */
	s->writer = NULL;
	if (s->listening) { /* opened: it may have a node row */
		/* Leaving: the other nodes' shares grow at once, not a lease-time later. */
		struct params p = {0};
		p_text(&p, s->node_id);
		pool_cmd(s, "DELETE FROM nodes WHERE node_id = $1", &p, NULL, "node_leave");
	}
	conn_close(&s->wc);
	for (size_t i = 0; i < POOL_SIZE; i++)
		conn_close(&s->pool[i]);
	pthread_mutex_destroy(&s->pool_mu);
	pthread_cond_destroy(&s->pool_cv);
	pthread_mutex_destroy(&s->health_mu);
	if (s->cache)
		pthread_mutex_destroy(&s->cache->mu);
	free(s->cache);
	free(s->uri);
	free(s);
}

/* Applies the migrations this database lacks, each in its own transaction, under a
 * session advisory lock so that nodes starting together do not race. */
static enum lh_err migrate(struct pg_store *s, struct pg_conn *c)
{
	struct params p = {0};
	PGresult *r = NULL;
	enum lh_err e =
	    exec_sql(s, c,
	             "SELECT pg_advisory_lock(" LOCK_MIGRATE ");"
	             " CREATE TABLE IF NOT EXISTS labhook_schema(version BIGINT NOT NULL);"
	             " INSERT INTO labhook_schema SELECT 0"
	             " WHERE NOT EXISTS (SELECT 1 FROM labhook_schema)",
	             "migrate_lock");
	if (e == LH_OK)
		e = run(s, c, "SELECT version FROM labhook_schema", &p, &r, "schema_version");
	int64_t version = e == LH_OK && PQntuples(r) == 1 ? col_i64(r, 0, 0) : 0;
	PQclear(r);
	if (e == LH_OK && version > (int64_t)N_MIGRATIONS) {
		LOG(LOG_ERROR, "store",
		    "schema=%" PRId64 " known=%zu the database is newer than this binary", version,
		    N_MIGRATIONS);
		e = LH_ESTORE;
	}
	for (size_t v = (size_t)version; e == LH_OK && v < N_MIGRATIONS; v++) {
		if ((e = exec_sql(s, c, "BEGIN", "begin")) == LH_OK &&
		    (e = exec_sql(s, c, migrations[v], "migrate")) == LH_OK) {
			p.n = 0;
			p_i64(&p, (int64_t)v + 1);
			e = run_cmd(s, c, "UPDATE labhook_schema SET version = $1", &p, NULL,
			            "schema_version");
		}
		if ((e = tx_close(s, c, e)) == LH_OK)
			LOG(LOG_INFO, "store", "backend=postgresql schema=%zu migrated", v + 1);
	}
	/* Also released when the session ends, should this fail. */
	exec_sql(s, c, "SELECT pg_advisory_unlock(" LOCK_MIGRATE ")", "migrate_unlock");
	return e;
}

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .close = pgs_close,
    .meta_get_or_put = pgs_meta_get_or_put,
    .meta_set = pgs_meta_set,
    .account_insert = pgs_account_insert,
    .account_get = pgs_account_get,
    .account_list = pgs_account_list,
    .account_set_secret = pgs_account_set_secret,
    .account_set_mode = pgs_account_set_mode,
    .lab_insert = pgs_lab_insert,
    .lab_get = pgs_lab_get,
    .lab_list = pgs_lab_list,
    .lab_find = pgs_lab_find,
    .party_insert = pgs_party_insert,
    .party_get = pgs_party_get,
    .party_list = pgs_party_list,
    .refresh_insert = pgs_refresh_insert,
    .refresh_rotate = pgs_refresh_rotate,
    .sub_insert = pgs_sub_insert,
    .sub_update = pgs_sub_update,
    .sub_get = pgs_sub_get,
    .sub_list_holding = pgs_sub_list_holding,
    .sub_list = pgs_sub_list,
    .submit = pgs_submit,
    .submit_async = pgs_submit_async,
    .set_commit_hook = pgs_set_commit_hook,
    .lease_sync = pgs_lease_sync,
    .lease_release = pgs_lease_release,
    .delivery_pending = pgs_delivery_pending,
    .delivery_pending_subs = pgs_delivery_pending_subs,
    .event_payload = pgs_event_payload,
    .delivery_record = pgs_delivery_record,
    .sub_get_any = pgs_sub_get_any,
    .subs_version = pgs_subs_version,
    .delivery_list = pgs_delivery_list,
    .attempt_list = pgs_attempt_list,
    .delivery_requeue = pgs_delivery_requeue,
    .delivery_recover = pgs_delivery_recover,
    .bill_get = pgs_bill_get,
    .retention_sweep = pgs_retention_sweep,
    .report_doc_get = pgs_report_doc_get,
    .report_doc_chunk = pgs_report_doc_chunk,
    .catalog_put = pgs_catalog_put,
    .catalog_delete = pgs_catalog_delete,
    .catalog_list = pgs_catalog_list,
    .catalog_members = pgs_catalog_members,
    .catalog_rate_set = pgs_catalog_rate_set,
    .stats = pgs_stats,
    .export_rows = pgs_export_rows,
    .import_from = pgs_import_from,
};

enum lh_err store_pg_open(const char *uri, struct store **out)
{
	char node_id[ID_CAP];
	enum lh_err e = util_new_id("node_", node_id);
	return e == LH_OK ? store_pg_open_as(uri, node_id, out) : e;
}

enum lh_err store_pg_open_as(const char *uri, const char *node_id, struct store **out)
{
	struct pg_store *s = calloc(1, sizeof *s);
	enum lh_err e;
	if (!s)
		return LH_ENOMEM;
	s->base.ops = &pg_ops;
	s->tx.ops = &pg_tx_ops;
	s->wake[0] = s->wake[1] = -1;
	s->backoff_ms = BACKOFF_MIN_MS;
	pthread_mutex_init(&s->pool_mu, NULL);
	pthread_cond_init(&s->pool_cv, NULL);
	pthread_mutex_init(&s->health_mu, NULL);
	if (!(s->cache = calloc(1, sizeof *s->cache))) {
		pthread_mutex_destroy(&s->health_mu);
		pthread_mutex_destroy(&s->pool_mu);
		pthread_cond_destroy(&s->pool_cv);
		free(s);
		return LH_ENOMEM;
	}
	pthread_mutex_init(&s->cache->mu, NULL);
	if (!(s->uri = strdup(uri))) {
		e = LH_ENOMEM;
		goto out;
	}
	snprintf(s->node_id, sizeof s->node_id, "%s", node_id);
	s->started_at = util_now();
	if ((e = conn_ready(s, &s->wc)) != LH_OK) {
		if (e == LH_EUNAVAIL) {
			char shown[CFG_PATH_CAP + 64], reason[512];
			config_store_text(uri, shown, sizeof shown);
			msg_line(s->wc.pg ? PQerrorMessage(s->wc.pg) : "out of memory", reason,
			         sizeof reason);
			LOG(LOG_ERROR, "store",
			    "backend=postgresql store=%s err=\"%s\" cannot connect to the database:"
			    " check the store setting (--store, LABHOOK_STORE or store in the"
			    " config file) and that PostgreSQL runs there",
			    shown, reason);
		}
		goto out;
	}
	if ((e = migrate(s, &s->wc)) != LH_OK)
		goto out;
	/* An earlier process of this node is gone: its leases lapse now, under new epochs (its
	 * outcomes died with it), and the next lease_sync takes them back. */
	struct params np = {0};
	p_text(&np, s->node_id);
	if ((e = run_cmd(s, &s->wc,
	                 "UPDATE leases SET expires_at = least(expires_at,"
	                 " now() - interval '1 millisecond'), epoch = epoch + 1 WHERE node_id = $1",
	                 &np, NULL, "node_restart")) != LH_OK)
		goto out;
	if ((e = writer_start(&pg_writer_ops, s, &s->tx, &s->writer)) != LH_OK)
		goto out;
	if (pipe(s->wake) != 0 || pthread_create(&s->listener, NULL, listener_main, s) != 0) {
		e = LH_EIO;
		goto out;
	}
	s->listening = 1;
	*out = &s->base;
	return LH_OK;
out:
	pgs_close(&s->base);
	return e;
}

enum lh_err store_pg_reset_for_tests(const char *uri)
{
	struct pg_store tmp;
	struct pg_conn c = {0};
	memset(&tmp, 0, sizeof tmp);
	tmp.uri = (char *)uri;
	pthread_mutex_init(&tmp.health_mu, NULL);
	enum lh_err e = conn_ready(&tmp, &c);
	if (e == LH_OK)
		e = exec_sql(&tmp, &c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", "reset");
	conn_close(&c);
	pthread_mutex_destroy(&tmp.health_mu);
	return e;
}
