/* store_sqlite.c: the embedded SQLite backend of store.h.
 *
 * WAL mode with synchronous=FULL, so a COMMIT has reached the disk before any function
 * returns LH_OK. Two connections: the writer's (under `mu`; every change, and the group
 * commit thread lh-writer that runs jobs in batches) and a read-only one (under `rmu`) so
 * reads never wait behind a commit. Prepared statements are cached per connection and SQL
 * text. The in-memory routing index mirrors subscription_events under `mu`. Schema changes
 * are forward-only migrations numbered by PRAGMA user_version. Both connections open their
 * files through the store's own VFS ("the VFS" below), which gathers a commit's appends to
 * the log into one write: it needs synchronous=FULL (checked at open), SQLite's powersafe
 * overwrite, and one thread per write transaction.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "log.h"
#include "store_sqlite.h"
#include "store_shared.h"
#include "store_writer.h"

#define STMT_CACHE    96
#define ROUTE_KEY_CAP (2 * ID_CAP + 8)
#define LOOKUP_SLOTS  1024 /* entries of each lookup cache (a power of two) */

/* One entry of the in-memory routing index: "lab\x1fparty\x1fevent" -> subscription. */
struct route {
	char key[ROUTE_KEY_CAP];
	char sub_id[ID_CAP];
};

struct stmt_slot {
	const char *sql;
	sqlite3_stmt *st;
};

/* Accounts and labs are read by every client request (token check, then the lab named in
 * the body) and change rarely: they are served from memory. This process is the only
 * writer of its database, so the cache is exact: a change clears its entry. Labs never
 * change once created. Direct-mapped by a hash of the id: a collision replaces. */
struct lookup_cache {
	pthread_mutex_t mu;
	uint64_t gen; /* bumped by every account change; a read started before it is not kept */
	struct account acct[LOOKUP_SLOTS];
	struct lab lab[LOOKUP_SLOTS];
};

struct sqlite_store {
	struct store base;
	struct store_tx tx;
	sqlite3 *db;
	pthread_mutex_t mu; /* the connection, the statement cache and the routing index */
	struct stmt_slot cache[STMT_CACHE];
	size_t ncache;
	/* A second connection for reads, so requests and the dispatcher read while the writer
	 * holds mu through a commit (WAL lets readers and the writer overlap). */
	sqlite3 *rdb;
	pthread_mutex_t rmu;
	struct stmt_slot rcache[STMT_CACHE];
	size_t nrcache;
	/* Sorted by key; exact copy of subscription_events, changed only under mu. */
	struct route *routes;
	size_t nroutes, cap_routes;
	/* Group commit (store_writer.c): its batches run on the writer connection under mu. */
	struct store_writer *writer;
	int routes_dirty;      /* the index changed inside the open transaction */
	int routes_stale;      /* ...and a savepoint that changed it was rolled back */
	uint64_t subs_version; /* written under mu, read lock-free (__atomic) */
	int subs_dirty;        /* a subscription changed in the open transaction (under mu) */
	struct lookup_cache *lc;
};

static enum lh_err routes_rebuild(struct sqlite_store *s);

static const char *const migrations[] = {
    /* 1: accounts, labs, parties, refresh tokens, subscriptions. */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE accounts(client_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " mode INTEGER NOT NULL, secret_hash BLOB NOT NULL, secret_version INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE labs(lab_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), name TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX labs_client ON labs(client_id, lab_id);"
    "CREATE TABLE parties(party_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), kind INTEGER NOT NULL,"
    " name TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE INDEX parties_client ON parties(client_id, party_id);"
    "CREATE TABLE refresh_tokens(hash BLOB PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id), family TEXT NOT NULL,"
    " state INTEGER NOT NULL, expires_at INTEGER NOT NULL);"
    "CREATE INDEX refresh_family ON refresh_tokens(family);"
    "CREATE INDEX refresh_client ON refresh_tokens(client_id);"
    "CREATE TABLE subscriptions(sub_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), party_id TEXT NOT NULL,"
    " party_kind INTEGER NOT NULL, events INTEGER NOT NULL, endpoint TEXT NOT NULL,"
    " auth_token TEXT NOT NULL, status INTEGER NOT NULL, secret TEXT NOT NULL,"
    " prev_secret TEXT NOT NULL, prev_secret_until INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX subs_client ON subscriptions(client_id, sub_id);"
    /* One row per (live subscription, event): the unique index is the 409 rule. */
    "CREATE TABLE subscription_events(sub_id TEXT NOT NULL REFERENCES subscriptions(sub_id),"
    " lab_id TEXT NOT NULL, party_id TEXT NOT NULL, event INTEGER NOT NULL,"
    " PRIMARY KEY(sub_id, event));"
    "CREATE UNIQUE INDEX sub_events_holder ON subscription_events(lab_id, party_id, event);",
    /* 2: bills and reports, leads and bookings, events and their deliveries (the outbox). */
    "CREATE TABLE bills(bill_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " pre_booking_id TEXT NOT NULL, bar_code TEXT, lead_source TEXT NOT NULL,"
    " status INTEGER NOT NULL, corporate_user TEXT NOT NULL, referred_org TEXT NOT NULL,"
    " referred_hospital_org TEXT NOT NULL, patient TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX bills_bar_code ON bills(lab_id, bar_code) WHERE bar_code IS NOT NULL;"
    "CREATE TABLE reports(report_id TEXT PRIMARY KEY,"
    " bill_id TEXT NOT NULL REFERENCES bills(bill_id), seq INTEGER NOT NULL,"
    " name TEXT NOT NULL, package TEXT NOT NULL, status INTEGER NOT NULL,"
    " completed_at INTEGER NOT NULL);"
    "CREATE INDEX reports_bill ON reports(bill_id, seq);"
    "CREATE TABLE leads(lead_id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " phase INTEGER NOT NULL, contact TEXT NOT NULL, email TEXT NOT NULL, day TEXT NOT NULL,"
    " booking_id TEXT NOT NULL, corporate_user TEXT NOT NULL, referred_org TEXT NOT NULL,"
    " referred_hospital_org TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE INDEX leads_contact ON leads(lab_id, day, contact);"
    "CREATE INDEX leads_email ON leads(lab_id, day, email);"
    "CREATE TABLE bookings(booking_id TEXT PRIMARY KEY, lead_id TEXT NOT NULL,"
    " client_id TEXT NOT NULL REFERENCES accounts(client_id),"
    " lab_id TEXT NOT NULL REFERENCES labs(lab_id), integrator_id TEXT NOT NULL,"
    " booking_type TEXT NOT NULL, scheduled_at TEXT NOT NULL, corporate_user TEXT NOT NULL,"
    " referred_org TEXT NOT NULL, referred_hospital_org TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    /* seq is commit order (one writer): the order of events per entity. */
    "CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT NOT NULL UNIQUE, client_id TEXT NOT NULL,"
    " lab_id TEXT NOT NULL, type INTEGER NOT NULL, entity_id TEXT NOT NULL,"
    " payload TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE INDEX events_entity ON events(entity_id, seq);"
    /* The outbox. status: 0 pending, 1 delivered, 2 failed, 3 cancelled; next_at in ms. */
    "CREATE TABLE deliveries(delivery_id TEXT PRIMARY KEY,"
    " event_id TEXT NOT NULL REFERENCES events(event_id), event_seq INTEGER NOT NULL,"
    " event_type INTEGER NOT NULL, sub_id TEXT NOT NULL, entity_id TEXT NOT NULL,"
    " status INTEGER NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX deliveries_pending ON deliveries(status, event_seq);"
    "CREATE TABLE attempts(delivery_id TEXT NOT NULL REFERENCES deliveries(delivery_id),"
    " n INTEGER NOT NULL, started_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL,"
    " status_code INTEGER NOT NULL, error TEXT NOT NULL, response TEXT NOT NULL,"
    " PRIMARY KEY(delivery_id, n));"
    /* Set at the first failure after a success; cleared by a success. */
    "ALTER TABLE subscriptions ADD COLUMN failing_since INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX deliveries_sub ON deliveries(sub_id, delivery_id);",
    /* 3: no statement reads events by entity (ordering comes from deliveries.event_seq),
     * and every event paid for this index in the writer. */
    "DROP INDEX IF EXISTS events_entity;",
    /* 4: the engine reads pending deliveries per subscription (each its own backlog, in
     * event order), and lists the subscriptions that have any: (sub_id, event_seq) of the
     * pending rows serves both, in place of the one global (status, event_seq) order. Being
     * partial, it holds only what is pending: a delivered row leaves it, so it stays small
     * however long the history. */
    ("DROP INDEX IF EXISTS deliveries_pending;"
     "CREATE INDEX deliveries_pending ON deliveries(sub_id, event_seq) WHERE status = 0;"),
    /* 5: retention removes events no delivery refers to any more: the check, and the
     * foreign key's own check on each event removed, are an index seek each instead of a
     * scan of every delivery. */
    "CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);",
    /* 6: report documents, in chunks of REPORT_CHUNK bytes (written and read a chunk at a
     * time; a document is never one value in memory). version is bumped by a replacement,
     * and a reader asks for a chunk of the version it started with. */
    ("CREATE TABLE report_documents(bill_id TEXT NOT NULL,"
     " report_id TEXT NOT NULL REFERENCES reports(report_id), content_type TEXT NOT NULL,"
     " size INTEGER NOT NULL, sha256 BLOB NOT NULL, version INTEGER NOT NULL,"
     " updated_at INTEGER NOT NULL, PRIMARY KEY(bill_id, report_id));"
     "CREATE TABLE report_chunks(bill_id TEXT NOT NULL, report_id TEXT NOT NULL,"
     " n INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(bill_id, report_id, n));"),
    /* 7: each lab's catalog: tests and packages (kind 0, 1) with prices in minor units, the
     * tests of each package in order, and rates per party. */
    "CREATE TABLE catalog_items(lab_id TEXT NOT NULL REFERENCES labs(lab_id),"
    " kind INTEGER NOT NULL, item_id TEXT NOT NULL, name TEXT NOT NULL,"
    " price INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " PRIMARY KEY(lab_id, kind, item_id));"
    "CREATE TABLE catalog_members(lab_id TEXT NOT NULL, package_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, test_id TEXT NOT NULL, PRIMARY KEY(lab_id, package_id, seq));"
    "CREATE INDEX catalog_members_test ON catalog_members(lab_id, test_id);"
    "CREATE TABLE catalog_rates(lab_id TEXT NOT NULL, kind INTEGER NOT NULL,"
    " item_id TEXT NOT NULL, party_id TEXT NOT NULL REFERENCES parties(party_id),"
    " price INTEGER NOT NULL, PRIMARY KEY(lab_id, kind, item_id, party_id));",
    /* 8: a delivered delivery keeps the attempt that delivered it on its own row (att_n
     * and the rest, NULL otherwise) instead of in a row of attempts: recording a delivered
     * webhook is one statement, not two, and the commit writes no attempts pages for it
     * (the writer's time per webhook 4.7 -> 3.2 us). An attempt row of the same number is
     * not shown (attempts_all). Any other record of the delivery moves it into attempts
     * first, or drops it for the row of its own number it writes (job_record), and so
     * does setting the delivery pending again (kept_to_row): att_n is only ever the last
     * attempt of a delivered delivery.
     * What the store copy reads: attempts_all (the rows and the kept ones, as rows) and
     * deliveries_copy (the columns store_copy_tables names). */
    ("ALTER TABLE deliveries ADD COLUMN att_n INTEGER;"
     "ALTER TABLE deliveries ADD COLUMN att_started_at INTEGER;"
     "ALTER TABLE deliveries ADD COLUMN att_duration_ms INTEGER;"
     "ALTER TABLE deliveries ADD COLUMN att_status_code INTEGER;"
     "ALTER TABLE deliveries ADD COLUMN att_response TEXT;"
     "CREATE VIEW attempts_all AS"
     " SELECT delivery_id, n, started_at, duration_ms, status_code, error, response"
     " FROM attempts a WHERE n IS NOT"
     " (SELECT att_n FROM deliveries d WHERE d.delivery_id = a.delivery_id)"
     " UNION ALL SELECT delivery_id, att_n, att_started_at, att_duration_ms,"
     " att_status_code, '', att_response FROM deliveries WHERE att_n IS NOT NULL;"
     "CREATE VIEW deliveries_copy AS"
     " SELECT delivery_id, event_id, event_seq, event_type, sub_id, entity_id, status,"
     " attempts, next_at, last_error, created_at, updated_at FROM deliveries;"),
};
#define N_MIGRATIONS (COUNTOF(migrations))

static struct sqlite_store *S(struct store *s)
{
	return (struct sqlite_store *)s;
}

/* Returns a reset, cached statement for sql (a string literal: cached by address) on the
 * writer's connection (caller holds mu) or the reader's (caller holds rmu). */
static sqlite3_stmt *stmt_for(struct sqlite_store *s, int reader, const char *sql)
{
	sqlite3 *db = reader ? s->rdb : s->db;
	size_t *n = reader ? &s->nrcache : &s->ncache;
	struct stmt_slot *cache = reader ? s->rcache : s->cache;
	for (size_t i = 0; i < *n; i++) {
		if (cache[i].sql == sql) {
			sqlite3_reset(cache[i].st);
			sqlite3_clear_bindings(cache[i].st);
			return cache[i].st;
		}
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "err=\"%s\" prepare failed", sqlite3_errmsg(db));
		return NULL;
	}
	if (*n < STMT_CACHE) {
		cache[*n].sql = sql;
		cache[*n].st = st;
		(*n)++;
	}
	/* Past the cache size the statement would leak; STMT_CACHE exceeds our statements. */
	return st;
}

#define stmt(s, sql)  stmt_for((s), 0, (sql))
#define rstmt(s, sql) stmt_for((s), 1, (sql))

/* A failed SQLite call as a project error. A full disk and I/O errors are the state of the
 * machine, not of the request: 503 (nothing applied, retry later), and every connection
 * works again once they clear, because a failed transaction is always rolled back. */
static enum lh_err err_of(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_NOMEM:
		return LH_ENOMEM;
	case SQLITE_FULL:
		return LH_EFULL;
	case SQLITE_IOERR:
		return rc == SQLITE_IOERR_NOMEM ? LH_ENOMEM : LH_EDISK;
	default:
		return LH_ESTORE;
	}
}

static enum lh_err fail(struct sqlite_store *s, int rc, const char *what)
{
	if (rc == SQLITE_CONSTRAINT || (rc & 0xff) == SQLITE_CONSTRAINT)
		return LH_ECONFLICT;
	LOG(LOG_ERROR, "store", "op=%s rc=%d err=\"%s\" sqlite call failed", what, rc,
	    sqlite3_errstr(rc));
	(void)s;
	return err_of(rc);
}

static enum lh_err exec(struct sqlite_store *s, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "rc=%d err=\"%s\" exec failed", rc, msg ? msg : "?");
		sqlite3_free(msg);
		return err_of(rc);
	}
	return LH_OK;
}

/* The writer's synchronous setting, read back: FULL (2) or EXTRA (3), which durable
 * commits and the VFS's gathering of log writes both rest on (see "the VFS"). */
static enum lh_err check_synchronous(struct sqlite_store *s, const char *path)
{
	sqlite3_stmt *st = NULL;
	int level = -1;
	if (sqlite3_prepare_v2(s->db, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		level = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (level >= 2)
		return LH_OK;
	LOG(LOG_ERROR, "store",
	    "path=%s synchronous=%d commits would not be durable before they"
	    " are acknowledged: refusing the database",
	    path, level);
	return LH_ESTORE;
}

static enum lh_err begin(struct sqlite_store *s)
{
	pthread_mutex_lock(&s->mu);
	enum lh_err e = exec(s, "BEGIN IMMEDIATE");
	if (e != LH_OK)
		pthread_mutex_unlock(&s->mu);
	return e;
}

/* Commits when e is LH_OK, else rolls back; always releases the lock. Returns the outcome. */
/* Bumps subs_version once a transaction that changed a subscription has ended (caller holds
 * mu): only then does a cache that sees the new version read the new rows, not the old. */
static void subs_bump(struct sqlite_store *s)
{
	if (!s->subs_dirty)
		return;
	__atomic_add_fetch(&s->subs_version, 1, __ATOMIC_RELEASE);
	s->subs_dirty = 0;
	if (s->writer)
		writer_notify(s->writer, &(struct store_news){.subs_changed = 1});
}

static enum lh_err finish(struct sqlite_store *s, enum lh_err e)
{
	if (e == LH_OK)
		e = exec(s, "COMMIT");
	/* A failed COMMIT has usually been rolled back by SQLite already; the connection
	 * must never be left inside a transaction, or every later one would fail. */
	if (e != LH_OK && !sqlite3_get_autocommit(s->db))
		exec(s, "ROLLBACK");
	assert(sqlite3_get_autocommit(s->db));
	subs_bump(s);
	if ((e != LH_OK || s->routes_stale) && s->routes_dirty)
		routes_rebuild(s); /* the rolled-back change must leave the index too */
	s->routes_dirty = s->routes_stale = 0;
	pthread_mutex_unlock(&s->mu);
	return e;
}

/* Runs a statement that returns no rows. */
static enum lh_err step_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what)
{
	if (!st)
		return LH_ESTORE;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? LH_OK : fail(s, rc, what);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	size_t n = t ? (size_t)sqlite3_column_bytes(st, i) : 0;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(out, t, n);
	out[n] = '\0';
}

/* ---- the VFS: WAL appends in one write, and fault injection for the contract tests ----
 *
 * Every store opens its files through "lh", a shim over the default VFS that does two
 * things.
 *
 * It gathers the writes to a write-ahead log into one. SQLite writes each frame of a
 * commit with two pwrite calls (its 24-byte header, then the page), so a commit of a
 * batch of bills made 80 to 90 system calls before its fdatasync: a tenth of the writer's
 * system calls per bill, each dearer than the copy it saves on a machine whose kernel
 * entries are costly. The shim keeps consecutive appends to a log in a buffer and writes
 * them before anything that must see them: a sync (so a commit is on disk exactly as
 * before), a read (SQLite reads frames back, at a checkpoint or after a cache spill), a
 * write elsewhere in the file (a rewritten frame), a truncation, the size, a file control
 * and the close. What it rests on:
 *   - synchronous=FULL (store_sqlite_open refuses to run without it): every commit syncs
 *     its log before SQLite publishes the frames in the WAL index, so no reader, in this
 *     process or another, is pointed at a frame still in the buffer;
 *   - powersafe overwrite (the default VFS's default): without it SQLite syncs in the
 *     middle of a commit's padding frames, and the shim does not gather for such a file;
 *   - a write transaction runs on one thread, from taking the log's write lock to
 *     releasing it (SQLite's connections here are used by one thread at a time): as the
 *     lock is released, whatever is still gathered is a rolled-back transaction's (a commit
 *     has synced), and it is dropped, so it can never be written later over frames another
 *     writer put there meanwhile.
 * A failed write keeps what it could not write and is reported by the call that flushed:
 * SQLite may go on with the transaction after a statement fails (SQLITE_FULL rolls back
 * only the statement), and the commit's sync then writes those frames or fails.
 *
 * While a fault is set (store_sqlite_fault_set: the contract tests only; the service
 * never sets one) it fails every write, and for I/O faults every sync, of the files opened
 * through it. */

#define LH_VFS  "lh"
#define WAL_BUF ((size_t)1 << 20) /* a commit of hundreds of bills is a few hundred KiB */
/* The default VFS writes at most 128 KiB - 1 bytes per call (it masks the length with
 * 0x1ffff: a 1 MiB write would write nothing and report a full disk). */
#define WRITE_MAX      ((size_t)64 << 10)
#define WAL_WRITE_LOCK 0 /* wal.c's number of the log's write lock in xShmLock */

struct lh_file {
	sqlite3_file base;
	sqlite3_file *real; /* the default VFS's file, allocated right after this struct */
	const char *db;     /* the database's name, as SQLite passes it: one per connection */
	int wal;            /* a write-ahead log whose appends are gathered */
	char *buf;          /* gathered appends: len bytes from offset at */
	size_t len;
	sqlite3_int64 at;
};

static int fault_kind; /* enum store_fault, read and written with __atomic */
static sqlite3_vfs lh_vfs;
/* The log this thread has bytes gathered in (see above): at most one, as a thread runs
 * one write transaction at a time. */
static __thread struct lh_file *lh_gathering;

static sqlite3_file *lh_real(sqlite3_file *f)
{
	return ((struct lh_file *)f)->real;
}

static int lh_real_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	switch (__atomic_load_n(&fault_kind, __ATOMIC_ACQUIRE)) {
	case STORE_FAULT_FULL:
		return SQLITE_FULL;
	case STORE_FAULT_IO:
		return SQLITE_IOERR_WRITE;
	default:
		return lh_real(f)->pMethods->xWrite(lh_real(f), buf, n, off);
	}
}

static void lh_drop(struct lh_file *lf)
{
	lf->len = 0;
	if (lh_gathering == lf)
		lh_gathering = NULL;
}

/* Writes what is gathered. On failure what was not written stays gathered (at its own
 * offset), to be written by the next flush or dropped with its transaction. */
static int lh_flush(sqlite3_file *f)
{
	struct lh_file *lf = (struct lh_file *)f;
	assert(lf->len <= WAL_BUF && (!lf->len || lf->buf));
	if (!lf->len) /* every read of every connection comes here */
		return SQLITE_OK;
	size_t done = 0;
	int rc = SQLITE_OK;
	while (done < lf->len) {
		size_t n = lf->len - done < WRITE_MAX ? lf->len - done : WRITE_MAX;
		rc = lh_real_write(f, lf->buf + done, (int)n, lf->at + (sqlite3_int64)done);
		if (rc != SQLITE_OK)
			break;
		done += n;
	}
	if (done == lf->len) {
		lh_drop(lf);
		return SQLITE_OK;
	}
	memmove(lf->buf, lf->buf + done, lf->len - done);
	lf->len -= done;
	lf->at += (sqlite3_int64)done;
	return rc;
}

static int lh_close(sqlite3_file *f)
{
	struct lh_file *lf = (struct lh_file *)f;
	int rc = lh_flush(f);
	lh_drop(lf);
	free(lf->buf);
	lf->buf = NULL;
	int rc2 = lh_real(f)->pMethods->xClose(lh_real(f));
	return rc != SQLITE_OK ? rc : rc2;
}

static int lh_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	int rc = lh_flush(f);
	return rc != SQLITE_OK ? rc : lh_real(f)->pMethods->xRead(lh_real(f), buf, n, off);
}

static int lh_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	struct lh_file *lf = (struct lh_file *)f;
	if (!lf->wal || n <= 0 || (size_t)n >= WRITE_MAX) {
		int rc = lh_flush(f); /* nothing gathered but in a log; kept in order */
		return rc != SQLITE_OK ? rc : lh_real_write(f, buf, n, off);
	}
	if (lf->len && (off != lf->at + (sqlite3_int64)lf->len || lf->len + (size_t)n > WAL_BUF)) {
		int rc = lh_flush(f); /* not an append, or the buffer is full */
		if (rc != SQLITE_OK)
			return rc;
	}
	if (!lf->buf && !(lf->buf = malloc(WAL_BUF)))
		return lh_real_write(f, buf, n, off);
	if (!lf->len)
		lf->at = off;
	memcpy(lf->buf + lf->len, buf, (size_t)n);
	lf->len += (size_t)n;
	assert(!lh_gathering || lh_gathering == lf); /* one write transaction per thread */
	lh_gathering = lf;
	return SQLITE_OK;
}

static int lh_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	int rc = lh_flush(f);
	return rc != SQLITE_OK ? rc : lh_real(f)->pMethods->xTruncate(lh_real(f), size);
}

static int lh_sync(sqlite3_file *f, int flags)
{
	int rc = lh_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	if (__atomic_load_n(&fault_kind, __ATOMIC_ACQUIRE) == STORE_FAULT_IO)
		return SQLITE_IOERR_FSYNC;
	return lh_real(f)->pMethods->xSync(lh_real(f), flags);
}

static int lh_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	int rc = lh_flush(f);
	return rc != SQLITE_OK ? rc : lh_real(f)->pMethods->xFileSize(lh_real(f), size);
}

static int lh_lock(sqlite3_file *f, int level)
{
	return lh_real(f)->pMethods->xLock(lh_real(f), level);
}

static int lh_unlock(sqlite3_file *f, int level)
{
	return lh_real(f)->pMethods->xUnlock(lh_real(f), level);
}

static int lh_check_lock(sqlite3_file *f, int *out)
{
	return lh_real(f)->pMethods->xCheckReservedLock(lh_real(f), out);
}

static int lh_control(sqlite3_file *f, int op, void *arg)
{
	int rc = lh_flush(f); /* a size hint, say, is about the file as written */
	return rc != SQLITE_OK ? rc : lh_real(f)->pMethods->xFileControl(lh_real(f), op, arg);
}

static int lh_sector_size(sqlite3_file *f)
{
	return lh_real(f)->pMethods->xSectorSize(lh_real(f));
}

static int lh_device(sqlite3_file *f)
{
	return lh_real(f)->pMethods->xDeviceCharacteristics(lh_real(f));
}

static int lh_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	return lh_real(f)->pMethods->xShmMap(lh_real(f), pg, pgsz, extend, pp);
}

static int lh_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	/* The log's write lock released: what this connection still has gathered belongs to a
	 * transaction that did not commit (a commit has synced), and must not be written over
	 * the frames of the next writer. */
	if (offset == WAL_WRITE_LOCK && flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE) &&
	    lh_gathering && lh_gathering->db == ((struct lh_file *)f)->db)
		lh_drop(lh_gathering);
	return lh_real(f)->pMethods->xShmLock(lh_real(f), offset, n, flags);
}

static void lh_shm_barrier(sqlite3_file *f)
{
	lh_real(f)->pMethods->xShmBarrier(lh_real(f));
}

static int lh_shm_unmap(sqlite3_file *f, int del)
{
	return lh_real(f)->pMethods->xShmUnmap(lh_real(f), del);
}

/* Version 2, no xFetch: SQLite then reads through xRead, never through a memory map. */
static const sqlite3_io_methods lh_io = {
    .iVersion = 2,
    .xClose = lh_close,
    .xRead = lh_read,
    .xWrite = lh_write,
    .xTruncate = lh_truncate,
    .xSync = lh_sync,
    .xFileSize = lh_file_size,
    .xLock = lh_lock,
    .xUnlock = lh_unlock,
    .xCheckReservedLock = lh_check_lock,
    .xFileControl = lh_control,
    .xSectorSize = lh_sector_size,
    .xDeviceCharacteristics = lh_device,
    .xShmMap = lh_shm_map,
    .xShmLock = lh_shm_lock,
    .xShmBarrier = lh_shm_barrier,
    .xShmUnmap = lh_shm_unmap,
};

static int lh_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	sqlite3_vfs *real = vfs->pAppData;
	struct lh_file *lf = (struct lh_file *)f;
	*lf = (struct lh_file){.real = (sqlite3_file *)&lf[1]};
	int rc = real->xOpen(real, name, lf->real, flags, out);
	/* SQLite calls xClose only when pMethods is set: only when the real file is open. */
	lf->base.pMethods = lf->real->pMethods ? &lh_io : NULL;
	if (rc != SQLITE_OK || !lf->real->pMethods || !name)
		return rc;
	if (flags & SQLITE_OPEN_MAIN_DB)
		lf->db = name;
	if (flags & SQLITE_OPEN_WAL) {
		lf->db = sqlite3_filename_database(name);
		lf->wal = (lh_real(f)->pMethods->xDeviceCharacteristics(lh_real(f)) &
		           SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
	}
	return rc;
}

static int lh_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	sqlite3_vfs *real = vfs->pAppData;
	return real->xDelete(real, name, sync_dir);
}

static int lh_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	sqlite3_vfs *real = vfs->pAppData;
	return real->xAccess(real, name, flags, out);
}

static int lh_full_path(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	sqlite3_vfs *real = vfs->pAppData;
	return real->xFullPathname(real, name, n, out);
}

/* Before SQLite's first use (sqlite3_config refuses later): no memory statistics, which
 * took a process-wide mutex on every allocation SQLite made, on every thread (the writer
 * spent 3% of its time locking it); labhook never reads them. */
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;

static void sqlite_global_config(void)
{
	int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (rc != SQLITE_OK)
		LOG(LOG_WARN, "store", "err=\"%s\" memory statistics stay on", sqlite3_errstr(rc));
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);
	if (!real)
		return; /* sqlite3_open_v2 then fails on the unknown VFS, and says so */
	/* The rest (randomness, time, dlopen, sleep) is the default VFS's, which keeps no
	 * state behind the vfs pointer it is passed. */
	lh_vfs = *real;
	lh_vfs.pNext = NULL;
	lh_vfs.zName = LH_VFS;
	lh_vfs.pAppData = real;
	lh_vfs.szOsFile = (int)sizeof(struct lh_file) + real->szOsFile;
	lh_vfs.xOpen = lh_open;
	lh_vfs.xDelete = lh_delete;
	lh_vfs.xAccess = lh_access;
	lh_vfs.xFullPathname = lh_full_path;
	rc = sqlite3_vfs_register(&lh_vfs, 0);
	if (rc != SQLITE_OK)
		LOG(LOG_ERROR, "store", "err=\"%s\" cannot register the lh VFS",
		    sqlite3_errstr(rc));
}

const char *store_sqlite_vfs(void)
{
	pthread_once(&sqlite_once, sqlite_global_config);
	return LH_VFS;
}

void store_sqlite_fault_set(enum store_fault f)
{
	__atomic_store_n(&fault_kind, (int)f, __ATOMIC_RELEASE);
}

static void sqlite_close(struct store *base)
{
	struct sqlite_store *s = S(base);
	if (!s)
		return;
	writer_stop(s->writer); /* jobs already queued still run: their submitters wait */
	s->writer = NULL;
	free(s->routes);
	for (size_t i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	for (size_t i = 0; i < s->nrcache; i++)
		sqlite3_finalize(s->rcache[i].st);
	if (s->rdb)
		sqlite3_close(s->rdb);
	pthread_mutex_destroy(&s->rmu);
	if (s->db) {
		sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
		sqlite3_close(s->db);
	}
	pthread_mutex_destroy(&s->mu);
	if (s->lc)
		pthread_mutex_destroy(&s->lc->mu);
	free(s->lc);
	free(s);
}

static enum lh_err migrate(struct sqlite_store *s)
{
	sqlite3_stmt *st = NULL;
	int version = 0;
	enum lh_err e;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return fail(s, sqlite3_errcode(s->db), "user_version");
	if (sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version > (int)N_MIGRATIONS) {
		LOG(LOG_ERROR, "store",
		    "schema=%d known=%zu the database is newer than this binary", version,
		    N_MIGRATIONS);
		return LH_ESTORE;
	}
	for (size_t v = (size_t)version; v < N_MIGRATIONS; v++) {
		char pragma[64];
		if ((e = begin(s)) != LH_OK)
			return e;
		snprintf(pragma, sizeof pragma, "PRAGMA user_version=%zu", v + 1);
		e = exec(s, migrations[v]);
		if (e == LH_OK)
			e = exec(s, pragma);
		if ((e = finish(s, e)) != LH_OK)
			return e;
		LOG(LOG_INFO, "store", "schema=%zu migrated", v + 1);
	}
	return LH_OK;
}

static enum lh_err sqlite_meta_get_or_put(struct store *base, const char *key, const char *value,
                                          char *out, size_t cap)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "INSERT OR IGNORE INTO meta(key, value) VALUES(?1, ?2)");
	if (!st) {
		e = LH_ESTORE;
		goto out;
	}
	bind_text(st, 1, key);
	bind_text(st, 2, value);
	if ((e = step_done(s, st, "meta_put")) != LH_OK)
		goto out;
	st = stmt(s, "SELECT value FROM meta WHERE key = ?1");
	if (!st) {
		e = LH_ESTORE;
		goto out;
	}
	bind_text(st, 1, key);
	if (sqlite3_step(st) != SQLITE_ROW) {
		e = fail(s, sqlite3_errcode(s->db), "meta_get");
		goto out;
	}
	col_text(st, 0, out, cap);
	sqlite3_reset(st);
out:
	return finish(s, e);
}

static enum lh_err sqlite_meta_set(struct store *base, const char *key, const char *value)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
	if (st) {
		bind_text(st, 1, key);
		bind_text(st, 2, value);
	}
	return finish(s, step_done(s, st, "meta_set"));
}

/* ---- accounts ---- */

#define ACCOUNT_COLS "client_id, name, mode, secret_hash, secret_version, created_at"

static void account_from_row(sqlite3_stmt *st, struct account *a)
{
	memset(a, 0, sizeof *a);
	col_text(st, 0, a->client_id, sizeof a->client_id);
	col_text(st, 1, a->name, sizeof a->name);
	a->mode = (enum account_mode)sqlite3_column_int(st, 2);
	if (sqlite3_column_bytes(st, 3) == 32)
		memcpy(a->secret_hash, sqlite3_column_blob(st, 3), 32);
	a->secret_version = sqlite3_column_int64(st, 4);
	a->created_at = sqlite3_column_int64(st, 5);
}

static enum lh_err sqlite_account_insert(struct store *base, const struct account *a)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st =
	    stmt(s, "INSERT INTO accounts(" ACCOUNT_COLS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
	if (st) {
		bind_text(st, 1, a->client_id);
		bind_text(st, 2, a->name);
		sqlite3_bind_int(st, 3, (int)a->mode);
		sqlite3_bind_blob(st, 4, a->secret_hash, 32, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, a->secret_version);
		sqlite3_bind_int64(st, 6, a->created_at);
	}
	e = step_done(s, st, "account_insert");
	return finish(s, e);
}

/* Reads one account; caller holds the lock. */
static enum lh_err account_read(struct sqlite_store *s, int reader, const char *client_id,
                                struct account *out)
{
	sqlite3_stmt *st =
	    stmt_for(s, reader, "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id = ?1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, client_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		account_from_row(st, out);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "account");
}

static size_t lookup_slot(const char *id)
{
	return util_fnv1a(UTIL_FNV_BASIS, id) & (LOOKUP_SLOTS - 1);
}

static enum lh_err sqlite_account_get(struct store *base, const char *client_id,
                                      struct account *out)
{
	struct sqlite_store *s = S(base);
	struct lookup_cache *lc = s->lc;
	size_t at = lookup_slot(client_id);
	pthread_mutex_lock(&lc->mu);
	if (lc->acct[at].client_id[0] && strcmp(lc->acct[at].client_id, client_id) == 0) {
		*out = lc->acct[at];
		pthread_mutex_unlock(&lc->mu);
		return LH_OK;
	}
	uint64_t gen = lc->gen;
	pthread_mutex_unlock(&lc->mu);

	pthread_mutex_lock(&s->rmu);
	enum lh_err e = account_read(s, 1, client_id, out);
	pthread_mutex_unlock(&s->rmu);
	if (e == LH_OK) {
		pthread_mutex_lock(&lc->mu);
		if (lc->gen == gen) /* no account changed meanwhile: what we read is current */
			lc->acct[at] = *out;
		pthread_mutex_unlock(&lc->mu);
	}
	return e;
}

/* After an account change (committed or not): its cached copy goes. */
static void account_forget(struct sqlite_store *s, const char *client_id)
{
	struct lookup_cache *lc = s->lc;
	size_t at = lookup_slot(client_id);
	pthread_mutex_lock(&lc->mu);
	lc->gen++;
	if (strcmp(lc->acct[at].client_id, client_id) == 0)
		lc->acct[at].client_id[0] = '\0';
	pthread_mutex_unlock(&lc->mu);
}

/* Collects rows of a bound statement into a growing array; caller holds the lock. */
static enum lh_err collect_with(struct sqlite_store *s, sqlite3_stmt *st, size_t elem,
                                void (*from_row)(sqlite3_stmt *, void *), void (*drop_row)(void *),
                                void **out, size_t *n)
{
	char *arr = NULL;
	size_t cnt = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (util_grow(&arr, &cap, cnt + 1, elem, 8)) {
			rc = SQLITE_NOMEM;
			break;
		}
		from_row(st, arr + cnt * elem);
		cnt++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		for (size_t i = 0; drop_row && i < cnt; i++)
			drop_row(arr + i * elem);
		free(arr);
		return rc == SQLITE_NOMEM ? LH_ENOMEM : fail(s, rc, "list");
	}
	*out = arr;
	*n = cnt;
	return LH_OK;
}

/* Collects rows of plain values (nothing to free per row). */
static enum lh_err collect(struct sqlite_store *s, sqlite3_stmt *st, size_t elem,
                           void (*from_row)(sqlite3_stmt *, void *), void **out, size_t *n)
{
	return collect_with(s, st, elem, from_row, NULL, out, n);
}

/* Reads the one row a bound statement selects into out; LH_ENOTFOUND when there is none.
 * out is written only on LH_OK. */
static enum lh_err one_row(struct sqlite_store *s, sqlite3_stmt *st,
                           void (*from_row)(sqlite3_stmt *, void *), void *out, const char *what)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		from_row(st, out);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, what);
}

/* The one integer a bound statement selects (a count), into out. */
static enum lh_err one_int(struct sqlite_store *s, sqlite3_stmt *st, int64_t *out, const char *what)
{
	if (!st)
		return LH_ESTORE;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? LH_OK : fail(s, rc, what);
}

static void account_row_cb(sqlite3_stmt *st, void *p)
{
	account_from_row(st, p);
}

static enum lh_err sqlite_account_list(struct store *base, const char *after, size_t limit,
                                       struct account **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id > ?1"
	                            " ORDER BY client_id LIMIT ?2");
	if (st) {
		bind_text(st, 1, after);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
		e = collect(s, st, sizeof **out, account_row_cb, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_account_set_secret(struct store *base, const char *client_id,
                                             const unsigned char hash[32], struct account *out)
{
	struct sqlite_store *s = S(base);
	struct account a;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "UPDATE accounts SET secret_hash = ?2,"
	                           " secret_version = secret_version + 1 WHERE client_id = ?1");
	if (st) {
		bind_text(st, 1, client_id);
		sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
	}
	if ((e = step_done(s, st, "account_secret")) != LH_OK)
		goto out;
	if (sqlite3_changes(s->db) == 0) {
		e = LH_ENOTFOUND;
		goto out;
	}
	st = stmt(s, "UPDATE refresh_tokens SET state = 2 WHERE client_id = ?1");
	if (st)
		bind_text(st, 1, client_id);
	if ((e = step_done(s, st, "refresh_revoke")) != LH_OK)
		goto out;
	e = account_read(s, 0, client_id, &a);
out:
	e = finish(s, e);
	account_forget(s, client_id);
	if (e == LH_OK)
		*out = a;
	return e;
}

static enum lh_err sqlite_account_set_mode(struct store *base, const char *client_id,
                                           enum account_mode mode, struct account *out)
{
	struct sqlite_store *s = S(base);
	struct account a;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "UPDATE accounts SET mode = ?2 WHERE client_id = ?1");
	if (st) {
		bind_text(st, 1, client_id);
		sqlite3_bind_int(st, 2, (int)mode);
	}
	if ((e = step_done(s, st, "account_mode")) != LH_OK)
		goto out;
	e = sqlite3_changes(s->db) ? account_read(s, 0, client_id, &a) : LH_ENOTFOUND;
out:
	e = finish(s, e);
	account_forget(s, client_id);
	if (e == LH_OK)
		*out = a;
	return e;
}

/* ---- labs and parties ---- */

static enum lh_err sqlite_lab_insert(struct store *base, const struct lab *l)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "INSERT INTO labs(lab_id, client_id, name, created_at)"
	                           " VALUES(?1, ?2, ?3, ?4)");
	if (st) {
		bind_text(st, 1, l->lab_id);
		bind_text(st, 2, l->client_id);
		bind_text(st, 3, l->name);
		sqlite3_bind_int64(st, 4, l->created_at);
	}
	e = step_done(s, st, "lab_insert");
	return finish(s, e);
}

static void lab_from_row(sqlite3_stmt *st, void *p)
{
	struct lab *l = p;
	memset(l, 0, sizeof *l);
	col_text(st, 0, l->lab_id, sizeof l->lab_id);
	col_text(st, 1, l->client_id, sizeof l->client_id);
	col_text(st, 2, l->name, sizeof l->name);
	l->created_at = sqlite3_column_int64(st, 3);
}

static enum lh_err sqlite_lab_get(struct store *base, const char *client_id, const char *lab_id,
                                  struct lab *out)
{
	struct sqlite_store *s = S(base);
	struct lookup_cache *lc = s->lc;
	enum lh_err e = LH_ESTORE;
	size_t at = lookup_slot(lab_id);
	pthread_mutex_lock(&lc->mu);
	if (lc->lab[at].lab_id[0] && strcmp(lc->lab[at].lab_id, lab_id) == 0) {
		/* Labs never change: a cached lab of another account is still not this one's. */
		e = strcmp(lc->lab[at].client_id, client_id) == 0 ? LH_OK : LH_ENOTFOUND;
		if (e == LH_OK)
			*out = lc->lab[at];
		pthread_mutex_unlock(&lc->mu);
		return e;
	}
	pthread_mutex_unlock(&lc->mu);

	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT lab_id, client_id, name, created_at FROM labs"
	                            " WHERE lab_id = ?1 AND client_id = ?2");
	if (st) {
		bind_text(st, 1, lab_id);
		bind_text(st, 2, client_id);
		e = one_row(s, st, lab_from_row, out, "lab");
	}
	pthread_mutex_unlock(&s->rmu);
	if (e == LH_OK) {
		pthread_mutex_lock(&lc->mu);
		lc->lab[at] = *out;
		pthread_mutex_unlock(&lc->mu);
	}
	return e;
}

static enum lh_err sqlite_lab_list(struct store *base, const char *client_id, struct lab **out,
                                   size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT lab_id, client_id, name, created_at FROM labs"
	                            " WHERE client_id = ?1 ORDER BY lab_id");
	if (st) {
		bind_text(st, 1, client_id);
		e = collect(s, st, sizeof **out, lab_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_lab_find(struct store *base, const char *lab_id, struct lab *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT lab_id, client_id, name, created_at FROM labs"
	                            " WHERE lab_id = ?1");
	if (st) {
		bind_text(st, 1, lab_id);
		e = one_row(s, st, lab_from_row, out, "lab_find");
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_party_insert(struct store *base, const struct party *p)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "INSERT INTO parties(party_id, client_id, kind, name,"
	                           " created_at) VALUES(?1, ?2, ?3, ?4, ?5)");
	if (st) {
		bind_text(st, 1, p->party_id);
		bind_text(st, 2, p->client_id);
		sqlite3_bind_int(st, 3, (int)p->kind);
		bind_text(st, 4, p->name);
		sqlite3_bind_int64(st, 5, p->created_at);
	}
	e = step_done(s, st, "party_insert");
	return finish(s, e);
}

static void party_from_row(sqlite3_stmt *st, void *v)
{
	struct party *p = v;
	memset(p, 0, sizeof *p);
	col_text(st, 0, p->party_id, sizeof p->party_id);
	col_text(st, 1, p->client_id, sizeof p->client_id);
	p->kind = (enum party_kind)sqlite3_column_int(st, 2);
	col_text(st, 3, p->name, sizeof p->name);
	p->created_at = sqlite3_column_int64(st, 4);
}

static enum lh_err sqlite_party_get(struct store *base, const char *client_id, const char *party_id,
                                    struct party *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT party_id, client_id, kind, name, created_at"
	                            " FROM parties WHERE party_id = ?1 AND client_id = ?2");
	if (st) {
		bind_text(st, 1, party_id);
		bind_text(st, 2, client_id);
		e = one_row(s, st, party_from_row, out, "party");
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_party_list(struct store *base, const char *client_id, struct party **out,
                                     size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT party_id, client_id, kind, name, created_at"
	                            " FROM parties WHERE client_id = ?1 ORDER BY party_id");
	if (st) {
		bind_text(st, 1, client_id);
		e = collect(s, st, sizeof **out, party_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

/* ---- refresh tokens: state 0 live, 1 rotated, 2 revoked ---- */

static enum lh_err refresh_put(struct sqlite_store *s, const unsigned char hash[32],
                               const char *client_id, const char *family, int64_t expires_at)
{
	sqlite3_stmt *st = stmt(s, "INSERT INTO refresh_tokens(hash, client_id, family, state,"
	                           " expires_at) VALUES(?1, ?2, ?3, 0, ?4)");
	if (st) {
		sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
		bind_text(st, 2, client_id);
		bind_text(st, 3, family);
		sqlite3_bind_int64(st, 4, expires_at);
	}
	return step_done(s, st, "refresh_insert");
}

static enum lh_err sqlite_refresh_insert(struct store *base, const unsigned char hash[32],
                                         const char *client_id, const char *family,
                                         int64_t expires_at)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	/* Expired tokens are dead weight; sweep them on issue, which is rare enough. */
	sqlite3_stmt *st = stmt(s, "DELETE FROM refresh_tokens WHERE client_id = ?1"
	                           " AND expires_at < ?2");
	if (st) {
		bind_text(st, 1, client_id);
		sqlite3_bind_int64(st, 2, util_now());
	}
	if ((e = step_done(s, st, "refresh_sweep")) == LH_OK)
		e = refresh_put(s, hash, client_id, family, expires_at);
	return finish(s, e);
}

static enum lh_err sqlite_refresh_rotate(struct store *base, const unsigned char hash[32],
                                         const char *client_id, int64_t now,
                                         const unsigned char new_hash[32], int64_t new_expires,
                                         enum refresh_result *result)
{
	struct sqlite_store *s = S(base);
	char family[ID_CAP] = "";
	enum refresh_result r = REFRESH_UNKNOWN;
	int state = -1;
	int64_t expires = 0;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "SELECT family, state, expires_at FROM refresh_tokens"
	                           " WHERE hash = ?1 AND client_id = ?2");
	if (!st) {
		e = LH_ESTORE;
		goto out;
	}
	sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
	bind_text(st, 2, client_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		col_text(st, 0, family, sizeof family);
		state = sqlite3_column_int(st, 1);
		expires = sqlite3_column_int64(st, 2);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		e = fail(s, rc, "refresh_get");
		goto out;
	}
	if (state == 1) {
		/* A rotated token came back: someone holds a copy. Kill the family. */
		r = REFRESH_REUSED;
		st = stmt(s, "UPDATE refresh_tokens SET state = 2 WHERE family = ?1");
		if (st)
			bind_text(st, 1, family);
		e = step_done(s, st, "refresh_revoke");
	} else if (state == 0 && expires < now) {
		r = REFRESH_EXPIRED;
	} else if (state == 0) {
		st = stmt(s, "UPDATE refresh_tokens SET state = 1 WHERE hash = ?1");
		if (st)
			sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
		if ((e = step_done(s, st, "refresh_use")) == LH_OK)
			e = refresh_put(s, new_hash, client_id, family, new_expires);
		r = REFRESH_OK;
	}
out:
	e = finish(s, e);
	if (e == LH_OK)
		*result = r;
	return e;
}

/* ---- the routing index: (lab, party, event) -> live subscription, in memory ---- */

static void route_key(char out[ROUTE_KEY_CAP], const char *lab, const char *party, int event)
{
	snprintf(out, ROUTE_KEY_CAP, "%s\x1f%s\x1f%d", lab, party, event);
}

/* Index of key, or of where it would go (*found = 0). Caller holds mu. */
static size_t route_find(struct sqlite_store *s, const char *key, int *found)
{
	size_t lo = 0, hi = s->nroutes;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->routes[mid].key, key);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

static enum lh_err route_put(struct sqlite_store *s, const char *key, const char *sub_id)
{
	int found;
	size_t i = route_find(s, key, &found);
	if (!found) {
		if (UTIL_GROW(s->routes, s->cap_routes, s->nroutes + 1, 64))
			return LH_ENOMEM;
		memmove(&s->routes[i + 1], &s->routes[i], (s->nroutes - i) * sizeof *s->routes);
		s->nroutes++;
		snprintf(s->routes[i].key, ROUTE_KEY_CAP, "%s", key);
		/* route_find's binary search needs the index sorted and without repeats. */
		assert(i == 0 || strcmp(s->routes[i - 1].key, s->routes[i].key) < 0);
		assert(i + 1 == s->nroutes || strcmp(s->routes[i].key, s->routes[i + 1].key) < 0);
	}
	snprintf(s->routes[i].sub_id, ID_CAP, "%s", sub_id);
	return LH_OK;
}

static void route_del(struct sqlite_store *s, const char *key)
{
	int found;
	size_t i = route_find(s, key, &found);
	if (!found)
		return;
	memmove(&s->routes[i], &s->routes[i + 1], (s->nroutes - i - 1) * sizeof *s->routes);
	s->nroutes--;
}

static enum lh_err routes_rebuild(struct sqlite_store *s)
{
	sqlite3_stmt *st =
	    stmt(s, "SELECT lab_id, party_id, event, sub_id FROM subscription_events");
	enum lh_err e = LH_OK;
	int rc;
	if (!st)
		return LH_ESTORE;
	s->nroutes = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && e == LH_OK) {
		char key[ROUTE_KEY_CAP];
		route_key(key, (const char *)sqlite3_column_text(st, 0),
		          (const char *)sqlite3_column_text(st, 1), sqlite3_column_int(st, 2));
		e = route_put(s, key, (const char *)sqlite3_column_text(st, 3));
	}
	sqlite3_reset(st);
	if (e == LH_OK && rc != SQLITE_DONE)
		e = fail(s, rc, "routes_rebuild");
	if (e != LH_OK)
		LOG(LOG_ERROR, "store", "the routing index could not be rebuilt");
	return e;
}

/* ---- subscriptions ---- */

#define SUB_COLS                                                                                   \
	"sub_id, client_id, lab_id, party_id, party_kind, events, endpoint, auth_token,"           \
	" status, secret, prev_secret, prev_secret_until, created_at, updated_at, failing_since"

static void sub_from_row(sqlite3_stmt *st, void *p)
{
	struct subscription *u = p;
	memset(u, 0, sizeof *u);
	col_text(st, 0, u->id, sizeof u->id);
	col_text(st, 1, u->client_id, sizeof u->client_id);
	col_text(st, 2, u->lab_id, sizeof u->lab_id);
	col_text(st, 3, u->party_id, sizeof u->party_id);
	u->party_kind = (enum party_kind)sqlite3_column_int(st, 4);
	u->events = (unsigned)sqlite3_column_int(st, 5);
	col_text(st, 6, u->endpoint, sizeof u->endpoint);
	col_text(st, 7, u->auth_token, sizeof u->auth_token);
	u->status = (enum sub_status)sqlite3_column_int(st, 8);
	col_text(st, 9, u->secret, sizeof u->secret);
	col_text(st, 10, u->prev_secret, sizeof u->prev_secret);
	u->prev_secret_until = sqlite3_column_int64(st, 11);
	u->created_at = sqlite3_column_int64(st, 12);
	u->updated_at = sqlite3_column_int64(st, 13);
	u->failing_since = sqlite3_column_int64(st, 14);
}

/* Rewrites the event-holder rows of sub (none unless live); caller holds a transaction. */
static enum lh_err sub_write_events(struct sqlite_store *s, const struct subscription *u)
{
	sqlite3_stmt *st = stmt(s, "SELECT lab_id, party_id, event FROM subscription_events"
	                           " WHERE sub_id = ?1");
	enum lh_err e;
	char key[ROUTE_KEY_CAP];
	int rc;

	if (!st)
		return LH_ESTORE;
	s->routes_dirty = 1;
	bind_text(st, 1, u->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		route_key(key, (const char *)sqlite3_column_text(st, 0),
		          (const char *)sqlite3_column_text(st, 1), sqlite3_column_int(st, 2));
		route_del(s, key);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, rc, "sub_events_read");
	st = stmt(s, "DELETE FROM subscription_events WHERE sub_id = ?1");
	if (st)
		bind_text(st, 1, u->id);
	if ((e = step_done(s, st, "sub_events_clear")) != LH_OK)
		return e;
	if (u->status != SUB_ACTIVE && u->status != SUB_PAUSED)
		return LH_OK;
	for (int ev = 0; ev < 32; ev++) {
		if (!(u->events & (1u << ev)))
			continue;
		st = stmt(s, "INSERT INTO subscription_events(sub_id, lab_id, party_id, event)"
		             " VALUES(?1, ?2, ?3, ?4)");
		if (st) {
			bind_text(st, 1, u->id);
			bind_text(st, 2, u->lab_id);
			bind_text(st, 3, u->party_id);
			sqlite3_bind_int(st, 4, ev);
		}
		if ((e = step_done(s, st, "sub_events_put")) != LH_OK)
			return e;
		route_key(key, u->lab_id, u->party_id, ev);
		if ((e = route_put(s, key, u->id)) != LH_OK)
			return e;
	}
	return LH_OK;
}

static void bind_sub(sqlite3_stmt *st, const struct subscription *u)
{
	bind_text(st, 1, u->id);
	bind_text(st, 2, u->client_id);
	bind_text(st, 3, u->lab_id);
	sqlite3_bind_int64(st, 15, u->failing_since);
	bind_text(st, 4, u->party_id);
	sqlite3_bind_int(st, 5, (int)u->party_kind);
	sqlite3_bind_int64(st, 6, u->events);
	bind_text(st, 7, u->endpoint);
	bind_text(st, 8, u->auth_token);
	sqlite3_bind_int(st, 9, (int)u->status);
	bind_text(st, 10, u->secret);
	bind_text(st, 11, u->prev_secret);
	sqlite3_bind_int64(st, 12, u->prev_secret_until);
	sqlite3_bind_int64(st, 13, u->created_at);
	sqlite3_bind_int64(st, 14, u->updated_at);
}

static enum lh_err sqlite_sub_insert(struct store *base, const struct subscription *u)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "INSERT INTO subscriptions(" SUB_COLS ") VALUES(?1, ?2, ?3,"
	                           " ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
	if (st)
		bind_sub(st, u);
	if ((e = step_done(s, st, "sub_insert")) == LH_OK)
		e = sub_write_events(s, u);
	s->subs_dirty = 1;
	return finish(s, e);
}

static enum lh_err sqlite_sub_update(struct store *base, const struct subscription *want,
                                     unsigned fields, struct subscription *out)
{
	struct sqlite_store *s = S(base);
	struct subscription cur;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	/* Read under the write lock, so the fields not changed here are the latest. */
	sqlite3_stmt *st = stmt(s, "SELECT " SUB_COLS " FROM subscriptions"
	                           " WHERE sub_id = ?1 AND client_id = ?2 AND status != 3");
	if (st) {
		bind_text(st, 1, want->id);
		bind_text(st, 2, want->client_id);
	}
	if ((e = st ? one_row(s, st, sub_from_row, &cur, "sub_read") : LH_ESTORE) != LH_OK)
		goto out;
	store_sub_apply(&cur, want, fields);
	st = stmt(s, "UPDATE subscriptions SET events = ?6, endpoint = ?7, auth_token = ?8,"
	             " status = ?9, secret = ?10, prev_secret = ?11, prev_secret_until = ?12,"
	             " updated_at = ?14, failing_since = ?15 WHERE sub_id = ?1");
	if (st)
		bind_sub(st, &cur);
	if ((e = step_done(s, st, "sub_update")) != LH_OK)
		goto out;
	if ((fields & (SUBF_EVENTS | SUBF_STATUS)) && (e = sub_write_events(s, &cur)) != LH_OK)
		goto out;
	if (cur.status == SUB_DELETED) {
		/* Unsubscribing cancels what was still waiting to be sent. */
		st = stmt(s, "UPDATE deliveries SET status = 3, updated_at = ?2"
		             " WHERE sub_id = ?1 AND status = 0");
		if (st) {
			bind_text(st, 1, cur.id);
			sqlite3_bind_int64(st, 2, cur.updated_at);
		}
		e = step_done(s, st, "deliveries_cancel");
	}
out:
	s->subs_dirty = 1;
	if ((e = finish(s, e)) == LH_OK && out)
		*out = cur;
	return e;
}

static enum lh_err sqlite_sub_get(struct store *base, const char *client_id, const char *id,
                                  struct subscription *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " SUB_COLS " FROM subscriptions"
	                            " WHERE sub_id = ?1 AND client_id = ?2 AND status != 3");
	if (st) {
		bind_text(st, 1, id);
		bind_text(st, 2, client_id);
		e = one_row(s, st, sub_from_row, out, "sub");
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_sub_list_holding(struct store *base, const char *lab_id,
                                           const char *party_id, unsigned events,
                                           struct subscription **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " SUB_COLS " FROM subscriptions WHERE sub_id IN"
	                            " (SELECT sub_id FROM subscription_events WHERE lab_id = ?1"
	                            " AND party_id = ?2 AND ((1 << event) & ?3) != 0)"
	                            " ORDER BY sub_id");
	if (st) {
		bind_text(st, 1, lab_id);
		bind_text(st, 2, party_id);
		sqlite3_bind_int64(st, 3, events);
		e = collect(s, st, sizeof **out, sub_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_sub_list(struct store *base, const char *client_id, const char *lab_id,
                                   int status, const char *after, size_t limit,
                                   struct subscription **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " SUB_COLS " FROM subscriptions WHERE client_id = ?1"
	                            " AND status != 3 AND (?2 = '' OR lab_id = ?2)"
	                            " AND (?3 < 0 OR status = ?3) AND sub_id > ?4"
	                            " ORDER BY sub_id LIMIT ?5");
	if (st) {
		bind_text(st, 1, client_id);
		bind_text(st, 2, lab_id);
		sqlite3_bind_int(st, 3, status);
		bind_text(st, 4, after);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)limit);
		e = collect(s, st, sizeof **out, sub_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

/* ---- inside the writer's transaction (mu held by the writer) ---- */

static struct sqlite_store *TX(struct store_tx *tx)
{
	return (struct sqlite_store *)(void *)((char *)tx - offsetof(struct sqlite_store, tx));
}

static void bind_parties(sqlite3_stmt *st, int first, const struct parties *p)
{
	bind_text(st, first, p->corporate_user);
	bind_text(st, first + 1, p->referred_org);
	bind_text(st, first + 2, p->referred_hospital_org);
}

static void col_parties(sqlite3_stmt *st, int first, struct parties *p)
{
	col_text(st, first, p->corporate_user, sizeof p->corporate_user);
	col_text(st, first + 1, p->referred_org, sizeof p->referred_org);
	col_text(st, first + 2, p->referred_hospital_org, sizeof p->referred_hospital_org);
}

static enum lh_err report_put(struct sqlite_store *s, const struct report *r, int insert)
{
	sqlite3_stmt *st = insert ? stmt(s, "INSERT INTO reports(report_id, bill_id, seq, name,"
	                                    " package, status, completed_at)"
	                                    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)")
	                          : stmt(s, "UPDATE reports SET status = ?6, completed_at = ?7"
	                                    " WHERE report_id = ?1 AND bill_id = ?2");
	if (st) {
		bind_text(st, 1, r->report_id);
		bind_text(st, 2, r->bill_id);
		sqlite3_bind_int(st, 3, r->seq);
		bind_text(st, 4, r->name);
		bind_text(st, 5, r->package);
		sqlite3_bind_int(st, 6, (int)r->status);
		sqlite3_bind_int64(st, 7, r->completed_at);
	}
	return step_done(s, st, insert ? "report_insert" : "report_update");
}

static enum lh_err tx_bill_insert(struct store_tx *tx, const struct bill *b,
                                  const struct report *reports, size_t n)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st =
	    stmt(s, "INSERT INTO bills(bill_id, client_id, lab_id, integrator_id,"
	            " pre_booking_id, bar_code, lead_source, status, corporate_user,"
	            " referred_org, referred_hospital_org, patient, created_at,"
	            " updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
	            " ?12, ?13, ?14)");
	enum lh_err e;
	if (st) {
		bind_text(st, 1, b->bill_id);
		bind_text(st, 2, b->client_id);
		bind_text(st, 3, b->lab_id);
		bind_text(st, 4, b->integrator_id);
		bind_text(st, 5, b->pre_booking_id);
		if (b->bar_code[0])
			bind_text(st, 6, b->bar_code);
		else
			sqlite3_bind_null(st, 6);
		bind_text(st, 7, b->lead_source);
		sqlite3_bind_int(st, 8, (int)b->status);
		bind_parties(st, 9, &b->parties);
		bind_text(st, 12, b->patient);
		sqlite3_bind_int64(st, 13, b->created_at);
		sqlite3_bind_int64(st, 14, b->updated_at);
	}
	if ((e = step_done(s, st, "bill_insert")) != LH_OK)
		return e;
	for (size_t i = 0; i < n; i++)
		if ((e = report_put(s, &reports[i], 1)) != LH_OK)
			return e;
	return LH_OK;
}

#define BILL_COLS                                                                                  \
	"bill_id, client_id, lab_id, integrator_id, pre_booking_id, bar_code, lead_source,"        \
	" status, corporate_user, referred_org, referred_hospital_org, patient, created_at,"       \
	" updated_at"

static void bill_from_row(sqlite3_stmt *st, struct bill *b)
{
	memset(b, 0, sizeof *b);
	col_text(st, 0, b->bill_id, sizeof b->bill_id);
	col_text(st, 1, b->client_id, sizeof b->client_id);
	col_text(st, 2, b->lab_id, sizeof b->lab_id);
	col_text(st, 3, b->integrator_id, sizeof b->integrator_id);
	col_text(st, 4, b->pre_booking_id, sizeof b->pre_booking_id);
	col_text(st, 5, b->bar_code, sizeof b->bar_code);
	col_text(st, 6, b->lead_source, sizeof b->lead_source);
	b->status = (enum bill_status)sqlite3_column_int(st, 7);
	col_parties(st, 8, &b->parties);
	col_text(st, 11, b->patient, sizeof b->patient);
	b->created_at = sqlite3_column_int64(st, 12);
	b->updated_at = sqlite3_column_int64(st, 13);
}

static void report_from_row(sqlite3_stmt *st, void *p)
{
	struct report *r = p;
	memset(r, 0, sizeof *r);
	col_text(st, 0, r->report_id, sizeof r->report_id);
	col_text(st, 1, r->bill_id, sizeof r->bill_id);
	r->seq = sqlite3_column_int(st, 2);
	col_text(st, 3, r->name, sizeof r->name);
	col_text(st, 4, r->package, sizeof r->package);
	r->status = (enum report_status)sqlite3_column_int(st, 5);
	r->completed_at = sqlite3_column_int64(st, 6);
}

/* Reads a bill (of client_id unless NULL) and its reports; caller holds mu. */
static enum lh_err bill_read(struct sqlite_store *s, int reader, const char *client_id,
                             const char *bill_id, struct bill *out, struct report **reports,
                             size_t *n)
{
	struct bill b;
	sqlite3_stmt *st =
	    stmt_for(s, reader, "SELECT " BILL_COLS " FROM bills WHERE bill_id = ?1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, bill_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		bill_from_row(st, &b);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE || (rc == SQLITE_ROW && client_id && strcmp(b.client_id, client_id)))
		return LH_ENOTFOUND;
	if (rc != SQLITE_ROW)
		return fail(s, rc, "bill");
	st = stmt_for(s, reader,
	              "SELECT report_id, bill_id, seq, name, package, status,"
	              " completed_at FROM reports WHERE bill_id = ?1 ORDER BY seq");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, bill_id);
	enum lh_err e = collect(s, st, sizeof **reports, report_from_row, (void **)reports, n);
	if (e == LH_OK)
		*out = b;
	return e;
}

static enum lh_err tx_bill_load(struct store_tx *tx, const char *bill_id, struct bill *out,
                                struct report **reports, size_t *n)
{
	return bill_read(TX(tx), 0, NULL, bill_id, out, reports, n);
}

static enum lh_err tx_bill_update(struct store_tx *tx, const struct bill *b)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st =
	    stmt(s, "UPDATE bills SET status = ?2, updated_at = ?3 WHERE bill_id = ?1");
	if (st) {
		bind_text(st, 1, b->bill_id);
		sqlite3_bind_int(st, 2, (int)b->status);
		sqlite3_bind_int64(st, 3, b->updated_at);
	}
	return step_done(s, st, "bill_update");
}

static enum lh_err tx_report_update(struct store_tx *tx, const struct report *r)
{
	return report_put(TX(tx), r, 0);
}

static enum lh_err tx_lead_dup(struct store_tx *tx, const char *lab_id, const char *day,
                               const char *contact, const char *email, int *dup)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "SELECT 1 FROM leads WHERE lab_id = ?1 AND day = ?2 AND"
	                           " (contact = ?3 OR (?4 != '' AND email = ?4)) LIMIT 1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, lab_id);
	bind_text(st, 2, day);
	bind_text(st, 3, contact);
	bind_text(st, 4, email);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return fail(s, rc, "lead_dup");
	*dup = rc == SQLITE_ROW;
	return LH_OK;
}

static enum lh_err tx_lead_insert(struct store_tx *tx, const struct lead *l)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "INSERT INTO leads(lead_id, client_id, lab_id, integrator_id,"
	                           " phase, contact, email, day, booking_id, corporate_user,"
	                           " referred_org, referred_hospital_org, data, created_at)"
	                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	                           " ?14)");
	if (st) {
		bind_text(st, 1, l->lead_id);
		bind_text(st, 2, l->client_id);
		bind_text(st, 3, l->lab_id);
		bind_text(st, 4, l->integrator_id);
		sqlite3_bind_int(st, 5, (int)l->phase);
		bind_text(st, 6, l->contact);
		bind_text(st, 7, l->email);
		bind_text(st, 8, l->day);
		bind_text(st, 9, l->booking_id);
		bind_parties(st, 10, &l->parties);
		bind_text(st, 13, l->data);
		sqlite3_bind_int64(st, 14, l->created_at);
	}
	return step_done(s, st, "lead_insert");
}

static enum lh_err tx_lead_load(struct store_tx *tx, const char *lead_id, struct lead *out)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "SELECT lead_id, client_id, lab_id, integrator_id, phase,"
	                           " contact, email, day, booking_id, corporate_user, referred_org,"
	                           " referred_hospital_org, data, created_at FROM leads"
	                           " WHERE lead_id = ?1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, lead_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		struct lead *l = out;
		memset(l, 0, sizeof *l);
		col_text(st, 0, l->lead_id, sizeof l->lead_id);
		col_text(st, 1, l->client_id, sizeof l->client_id);
		col_text(st, 2, l->lab_id, sizeof l->lab_id);
		col_text(st, 3, l->integrator_id, sizeof l->integrator_id);
		l->phase = (enum lead_phase)sqlite3_column_int(st, 4);
		col_text(st, 5, l->contact, sizeof l->contact);
		col_text(st, 6, l->email, sizeof l->email);
		col_text(st, 7, l->day, sizeof l->day);
		col_text(st, 8, l->booking_id, sizeof l->booking_id);
		col_parties(st, 9, &l->parties);
		col_text(st, 12, l->data, sizeof l->data);
		l->created_at = sqlite3_column_int64(st, 13);
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "lead");
}

static enum lh_err tx_lead_set_booking(struct store_tx *tx, const char *lead_id,
                                       const char *booking_id)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "UPDATE leads SET booking_id = ?2, phase = 1"
	                           " WHERE lead_id = ?1 AND booking_id = ''");
	if (st) {
		bind_text(st, 1, lead_id);
		bind_text(st, 2, booking_id);
	}
	enum lh_err e = step_done(s, st, "lead_set_booking");
	if (e == LH_OK && sqlite3_changes(s->db) == 0)
		e = LH_ECONFLICT;
	return e;
}

static enum lh_err tx_booking_insert(struct store_tx *tx, const struct booking *b)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "INSERT INTO bookings(booking_id, lead_id, client_id, lab_id,"
	                           " integrator_id, booking_type, scheduled_at, corporate_user,"
	                           " referred_org, referred_hospital_org, created_at)"
	                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
	if (st) {
		bind_text(st, 1, b->booking_id);
		bind_text(st, 2, b->lead_id);
		bind_text(st, 3, b->client_id);
		bind_text(st, 4, b->lab_id);
		bind_text(st, 5, b->integrator_id);
		bind_text(st, 6, b->booking_type);
		bind_text(st, 7, b->scheduled_at);
		bind_parties(st, 8, &b->parties);
		sqlite3_bind_int64(st, 11, b->created_at);
	}
	return step_done(s, st, "booking_insert");
}

static enum lh_err tx_event_insert(struct store_tx *tx, const struct event *ev,
                                   const char *const *party_ids, size_t n, const char *only_sub,
                                   size_t *ndeliveries)
{
	struct sqlite_store *s = TX(tx);
	const char *matched[STORE_MAX_PARTIES + 1];
	size_t nm = 0;
	enum lh_err e;
	if (n > STORE_MAX_PARTIES)
		return LH_EINVAL;
	sqlite3_stmt *st = stmt(s, "INSERT INTO events(event_id, client_id, lab_id, type,"
	                           " entity_id, payload, created_at)"
	                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
	if (st) {
		bind_text(st, 1, ev->event_id);
		bind_text(st, 2, ev->client_id);
		bind_text(st, 3, ev->lab_id);
		sqlite3_bind_int(st, 4, ev->type);
		bind_text(st, 5, ev->entity_id);
		bind_text(st, 6, ev->payload);
		sqlite3_bind_int64(st, 7, ev->created_at);
	}
	if ((e = step_done(s, st, "event_insert")) != LH_OK)
		return e;
	int64_t seq = sqlite3_last_insert_rowid(s->db);
	if (only_sub) {
		/* Read again inside the transaction: a delete that committed after the caller
		 * loaded the subscription has cancelled its deliveries, and this one would stay
		 * pending for ever. */
		if (!(st =
		          stmt(s, "SELECT 1 FROM subscriptions WHERE sub_id = ?1 AND status != 3")))
			return LH_ESTORE;
		bind_text(st, 1, only_sub);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return LH_ENOTFOUND;
		if (rc != SQLITE_ROW)
			return fail(s, rc, "event_sub");
		matched[nm++] = only_sub;
		n = 0;
	}
	/* The catch-all key first, then each party; a subscription matched twice counts once. */
	for (size_t i = 0; !only_sub && i <= n; i++) {
		char key[ROUTE_KEY_CAP];
		int found;
		if (i > 0 && (!party_ids[i - 1] || !party_ids[i - 1][0]))
			continue;
		route_key(key, ev->lab_id, i == 0 ? "" : party_ids[i - 1], ev->type);
		size_t at = route_find(s, key, &found);
		if (!found)
			continue;
		const char *sub = s->routes[at].sub_id;
		int dup = 0;
		for (size_t k = 0; k < nm; k++)
			dup |= strcmp(matched[k], sub) == 0;
		if (!dup)
			matched[nm++] = sub;
	}
	for (size_t k = 0; k < nm; k++) {
		struct delivery d;
		char id[ID_CAP];
		if ((e = util_new_id("dlv_", id)) != LH_OK)
			return e;
		store_delivery_new(&d, ev, id, matched[k], seq);
		st =
		    stmt(s, "INSERT INTO deliveries(delivery_id, event_id, event_seq, event_type,"
		            " sub_id, entity_id, status, attempts, next_at, created_at, updated_at)"
		            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?8)");
		if (st) {
			bind_text(st, 1, d.delivery_id);
			bind_text(st, 2, d.event_id);
			sqlite3_bind_int64(st, 3, seq);
			sqlite3_bind_int(st, 4, d.event_type);
			bind_text(st, 5, d.sub_id);
			bind_text(st, 6, d.entity_id);
			sqlite3_bind_int64(st, 7, d.next_at_ms);
			sqlite3_bind_int64(st, 8, d.created_at);
		}
		if ((e = step_done(s, st, "delivery_insert")) != LH_OK)
			return e;
		if ((e = store_fresh_delivery(s->writer, &d, ev->payload)) != LH_OK)
			return e;
	}
	writer_event_made(s->writer, ev->type);
	if (ndeliveries)
		*ndeliveries = nm;
	return LH_OK;
}

/* ---- report documents ---- */

#define DOC_COLS "content_type, size, sha256, version, updated_at"

/* The five DOC_COLS from column first on, into d (its ids are the caller's). */
static void doc_from_row(sqlite3_stmt *st, int first, struct report_doc *d)
{
	col_text(st, first, d->content_type, sizeof d->content_type);
	d->size = sqlite3_column_int64(st, first + 1);
	memset(d->sha256, 0, sizeof d->sha256);
	if (sqlite3_column_bytes(st, first + 2) == 32)
		memcpy(d->sha256, sqlite3_column_blob(st, first + 2), 32);
	d->version = sqlite3_column_int64(st, first + 3);
	d->updated_at = sqlite3_column_int64(st, first + 4);
}

static enum lh_err tx_doc_meta(struct store_tx *tx, const char *bill_id, const char *report_id,
                               struct report_doc *out)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "SELECT " DOC_COLS " FROM report_documents"
	                           " WHERE bill_id = ?1 AND report_id = ?2");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, bill_id);
	bind_text(st, 2, report_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(out, 0, sizeof *out);
		snprintf(out->bill_id, sizeof out->bill_id, "%s", bill_id);
		snprintf(out->report_id, sizeof out->report_id, "%s", report_id);
		doc_from_row(st, 0, out);
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW    ? LH_OK
	       : rc == SQLITE_DONE ? LH_ENOTFOUND
	                           : fail(s, rc, "doc_meta");
}

static enum lh_err tx_doc_put(struct store_tx *tx, const struct report_doc *d, const void *data,
                              size_t len)
{
	struct sqlite_store *s = TX(tx);
	enum lh_err e;
	sqlite3_stmt *st =
	    stmt(s, "DELETE FROM report_chunks WHERE bill_id = ?1 AND report_id = ?2");
	if (st) {
		bind_text(st, 1, d->bill_id);
		bind_text(st, 2, d->report_id);
	}
	if ((e = step_done(s, st, "doc_clear")) != LH_OK)
		return e;
	st = stmt(s, "INSERT INTO report_documents(bill_id, report_id, " DOC_COLS ")"
	             " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(bill_id, report_id) DO UPDATE"
	             " SET content_type = excluded.content_type, size = excluded.size,"
	             " sha256 = excluded.sha256, version = excluded.version,"
	             " updated_at = excluded.updated_at");
	if (st) {
		bind_text(st, 1, d->bill_id);
		bind_text(st, 2, d->report_id);
		bind_text(st, 3, d->content_type);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)len);
		sqlite3_bind_blob(st, 5, d->sha256, 32, SQLITE_STATIC);
		sqlite3_bind_int64(st, 6, d->version);
		sqlite3_bind_int64(st, 7, d->updated_at);
	}
	if ((e = step_done(s, st, "doc_put")) != LH_OK)
		return e;
	for (size_t off = 0, n = 0; off < len; off += REPORT_CHUNK, n++) {
		size_t k = len - off < REPORT_CHUNK ? len - off : REPORT_CHUNK;
		st = stmt(s, "INSERT INTO report_chunks(bill_id, report_id, n, data)"
		             " VALUES(?1, ?2, ?3, ?4)");
		if (st) {
			bind_text(st, 1, d->bill_id);
			bind_text(st, 2, d->report_id);
			sqlite3_bind_int64(st, 3, (sqlite3_int64)n);
			sqlite3_bind_blob(st, 4, (const char *)data + off, (int)k, SQLITE_STATIC);
		}
		if ((e = step_done(s, st, "doc_chunk_put")) != LH_OK)
			return e;
	}
	return LH_OK;
}

static enum lh_err sqlite_report_doc_get(struct store *base, const char *client_id,
                                         const char *bill_id, const char *report_id,
                                         struct report_doc_info *out)
{
	struct sqlite_store *s = S(base);
	struct report_doc_info info;
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st =
	    rstmt(s, "SELECT b.client_id, b.status, d.report_id IS NOT NULL, d.content_type,"
	             " d.size, d.sha256, d.version, d.updated_at FROM reports r"
	             " JOIN bills b ON b.bill_id = r.bill_id LEFT JOIN report_documents d"
	             " ON d.bill_id = r.bill_id AND d.report_id = r.report_id"
	             " WHERE r.report_id = ?2 AND r.bill_id = ?1");
	if (st) {
		bind_text(st, 1, bill_id);
		bind_text(st, 2, report_id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			memset(&info, 0, sizeof info);
			col_text(st, 0, info.client_id, sizeof info.client_id);
			info.bill_status = (enum bill_status)sqlite3_column_int(st, 1);
			info.has_doc = sqlite3_column_int(st, 2);
			snprintf(info.doc.bill_id, sizeof info.doc.bill_id, "%s", bill_id);
			snprintf(info.doc.report_id, sizeof info.doc.report_id, "%s", report_id);
			if (info.has_doc)
				doc_from_row(st, 3, &info.doc);
			e = client_id && client_id[0] && strcmp(info.client_id, client_id) != 0
			        ? LH_ENOTFOUND
			        : LH_OK;
		} else {
			e = rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "report_doc_get");
		}
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&s->rmu);
	if (e == LH_OK)
		*out = info;
	return e;
}

static enum lh_err sqlite_report_doc_chunk(struct store *base, const char *bill_id,
                                           const char *report_id, int64_t version, int64_t n,
                                           void *buf, size_t cap, size_t *len)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	/* One statement: the chunk and the version it belongs to come from one snapshot. */
	sqlite3_stmt *st = rstmt(s, "SELECT c.data FROM report_chunks c JOIN report_documents d"
	                            " ON d.bill_id = c.bill_id AND d.report_id = c.report_id"
	                            " WHERE c.bill_id = ?1 AND c.report_id = ?2 AND c.n = ?3"
	                            " AND d.version = ?4");
	if (st) {
		bind_text(st, 1, bill_id);
		bind_text(st, 2, report_id);
		sqlite3_bind_int64(st, 3, n);
		sqlite3_bind_int64(st, 4, version);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			size_t k = (size_t)sqlite3_column_bytes(st, 0);
			if (k > cap) {
				e = LH_ESTORE;
			} else {
				if (k)
					memcpy(buf, sqlite3_column_blob(st, 0), k);
				*len = k;
				e = LH_OK;
			}
		} else {
			e = rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "report_doc_chunk");
		}
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

/* ---- a lab's catalog ---- */

static void catalog_item_from_row(sqlite3_stmt *st, void *p)
{
	struct catalog_item *it = p;
	memset(it, 0, sizeof *it);
	col_text(st, 0, it->lab_id, sizeof it->lab_id);
	it->kind = (enum catalog_kind)sqlite3_column_int(st, 1);
	col_text(st, 2, it->id, sizeof it->id);
	col_text(st, 3, it->name, sizeof it->name);
	it->price = sqlite3_column_int64(st, 4);
	it->updated_at = sqlite3_column_int64(st, 5);
	it->party_price =
	    sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 6);
}

static void catalog_member_from_row(sqlite3_stmt *st, void *p)
{
	struct catalog_member *m = p;
	memset(m, 0, sizeof *m);
	col_text(st, 0, m->package_id, sizeof m->package_id);
	col_text(st, 1, m->test_id, sizeof m->test_id);
	col_text(st, 2, m->name, sizeof m->name);
}

#define CATALOG_MEMBERS_SQL                                                                        \
	"SELECT m.package_id, m.test_id, COALESCE(t.name, m.test_id) FROM catalog_members m"       \
	" LEFT JOIN catalog_items t ON t.lab_id = m.lab_id AND t.kind = 0"                         \
	" AND t.item_id = m.test_id WHERE m.lab_id = ?1 AND m.package_id BETWEEN ?2 AND ?3"        \
	" ORDER BY m.package_id, m.seq"

static enum lh_err tx_catalog_any(struct store_tx *tx, const char *lab_id, int *any)
{
	struct sqlite_store *s = TX(tx);
	sqlite3_stmt *st = stmt(s, "SELECT 1 FROM catalog_items WHERE lab_id = ?1 LIMIT 1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, lab_id);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return fail(s, rc, "catalog_any");
	*any = rc == SQLITE_ROW;
	return LH_OK;
}

static enum lh_err tx_catalog_get(struct store_tx *tx, const char *lab_id, enum catalog_kind kind,
                                  const char *id, struct catalog_item *out,
                                  struct catalog_member **members, size_t *n)
{
	struct sqlite_store *s = TX(tx);
	struct catalog_item it;
	struct catalog_member *m = NULL;
	size_t nm = 0;
	sqlite3_stmt *st = stmt(s, "SELECT lab_id, kind, item_id, name, price, updated_at, NULL"
	                           " FROM catalog_items WHERE lab_id = ?1 AND kind = ?2"
	                           " AND item_id = ?3");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, lab_id);
	sqlite3_bind_int(st, 2, (int)kind);
	bind_text(st, 3, id);
	enum lh_err e = one_row(s, st, catalog_item_from_row, &it, "catalog_get");
	if (e != LH_OK)
		return e;
	if (members && kind == CATALOG_PACKAGE) {
		if (!(st = stmt(s, CATALOG_MEMBERS_SQL)))
			return LH_ESTORE;
		bind_text(st, 1, lab_id);
		bind_text(st, 2, id);
		bind_text(st, 3, id);
		if ((e = collect(s, st, sizeof *m, catalog_member_from_row, (void **)&m, &nm)) !=
		    LH_OK)
			return e;
	}
	*out = it;
	if (members) {
		*members = m;
		*n = nm;
	}
	return LH_OK;
}

static enum lh_err sqlite_catalog_put(struct store *base, const char *lab_id,
                                      const struct catalog_item *items, size_t n,
                                      const struct catalog_member *members, size_t nmembers,
                                      size_t *bad)
{
	struct sqlite_store *s = S(base);
	sqlite3_stmt *st;
	size_t bad_at = 0;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	for (size_t i = 0; e == LH_OK && i < n; i++) {
		st = stmt(s,
		          "INSERT INTO catalog_items(lab_id, kind, item_id, name, price,"
		          " updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
		          " ON CONFLICT(lab_id, kind, item_id) DO UPDATE SET name = excluded.name,"
		          " price = excluded.price, updated_at = excluded.updated_at");
		if (st) {
			bind_text(st, 1, lab_id);
			sqlite3_bind_int(st, 2, (int)items[i].kind);
			bind_text(st, 3, items[i].id);
			bind_text(st, 4, items[i].name);
			sqlite3_bind_int64(st, 5, items[i].price);
			sqlite3_bind_int64(st, 6, items[i].updated_at);
		}
		if ((e = step_done(s, st, "catalog_put")) != LH_OK ||
		    items[i].kind != CATALOG_PACKAGE)
			continue;
		st = stmt(s, "DELETE FROM catalog_members WHERE lab_id = ?1 AND package_id = ?2");
		if (st) {
			bind_text(st, 1, lab_id);
			bind_text(st, 2, items[i].id);
		}
		e = step_done(s, st, "catalog_members_clear");
	}
	for (size_t i = 0; e == LH_OK && i < nmembers; i++) {
		/* Inserted only when the test is in the catalog: no row means an unknown test. */
		st = stmt(s,
		          "INSERT INTO catalog_members(lab_id, package_id, seq, test_id)"
		          " SELECT ?1, ?2, (SELECT COALESCE(MAX(seq) + 1, 0) FROM catalog_members"
		          " WHERE lab_id = ?1 AND package_id = ?2), ?3"
		          " WHERE EXISTS(SELECT 1 FROM catalog_items WHERE lab_id = ?1 AND kind = 0"
		          " AND item_id = ?3)");
		if (st) {
			bind_text(st, 1, lab_id);
			bind_text(st, 2, members[i].package_id);
			bind_text(st, 3, members[i].test_id);
		}
		if ((e = step_done(s, st, "catalog_member")) == LH_OK &&
		    sqlite3_changes(s->db) == 0) {
			e = LH_ENOTFOUND;
			bad_at = i;
		}
	}
	e = finish(s, e);
	if (e == LH_ENOTFOUND && bad)
		*bad = bad_at;
	return e;
}

static enum lh_err sqlite_catalog_delete(struct store *base, const char *lab_id,
                                         enum catalog_kind kind, const char *id,
                                         char in_package[ID_CAP])
{
	struct sqlite_store *s = S(base);
	char pkg[ID_CAP] = "";
	sqlite3_stmt *st;
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	if (kind == CATALOG_TEST) {
		st = stmt(s, "SELECT package_id FROM catalog_members WHERE lab_id = ?1"
		             " AND test_id = ?2 ORDER BY package_id LIMIT 1");
		if (!st) {
			e = LH_ESTORE;
			goto out;
		}
		bind_text(st, 1, lab_id);
		bind_text(st, 2, id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			col_text(st, 0, pkg, sizeof pkg);
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			e = fail(s, rc, "catalog_in_package");
			goto out;
		}
		if (rc == SQLITE_ROW) {
			e = LH_ECONFLICT;
			goto out;
		}
	}
	static const char *const sql[] = {
	    "DELETE FROM catalog_items WHERE lab_id = ?1 AND kind = ?2 AND item_id = ?3",
	    "DELETE FROM catalog_rates WHERE lab_id = ?1 AND kind = ?2 AND item_id = ?3",
	    "DELETE FROM catalog_members WHERE lab_id = ?1 AND package_id = ?3 AND ?2 = 1",
	};
	for (size_t k = 0; e == LH_OK && k < COUNTOF(sql); k++) {
		if ((st = stmt(s, sql[k]))) {
			bind_text(st, 1, lab_id);
			sqlite3_bind_int(st, 2, (int)kind);
			bind_text(st, 3, id);
		}
		e = step_done(s, st, "catalog_delete");
		if (e == LH_OK && k == 0 && sqlite3_changes(s->db) == 0)
			e = LH_ENOTFOUND;
	}
out:
	e = finish(s, e);
	if (e == LH_ECONFLICT && in_package)
		memcpy(in_package, pkg, ID_CAP);
	return e;
}

#define CATALOG_LIST_FROM                                                                          \
	" FROM catalog_items i LEFT JOIN catalog_rates r ON r.lab_id = i.lab_id"                   \
	" AND r.kind = i.kind AND r.item_id = i.item_id AND r.party_id = ?3"                       \
	" WHERE i.lab_id = ?1 AND (?2 < 0 OR i.kind = ?2) AND (?4 = 0 OR r.price IS NOT NULL)"

static enum lh_err sqlite_catalog_list(struct store *base, const char *lab_id, int kind,
                                       const char *party_id, int only_rated, size_t offset,
                                       size_t limit, struct catalog_item **out, size_t *n,
                                       int64_t *total)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	int64_t count = 0;
	pthread_mutex_lock(&s->rmu);
	/* One read transaction: the page and the total come from the same snapshot. */
	int rc = total ? sqlite3_exec(s->rdb, "BEGIN", NULL, NULL, NULL) : SQLITE_OK;
	sqlite3_stmt *st = total ? rstmt(s, "SELECT count(*)" CATALOG_LIST_FROM) : NULL;
	if (!total)
		e = LH_OK; /* no total asked: the page alone (a bill's "is there a catalog?") */
	if (rc == SQLITE_OK && st) {
		bind_text(st, 1, lab_id);
		sqlite3_bind_int(st, 2, kind);
		bind_text(st, 3, party_id);
		sqlite3_bind_int(st, 4, only_rated);
		rc = sqlite3_step(st);
		count = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
		sqlite3_reset(st);
		e = rc == SQLITE_ROW ? LH_OK : fail(s, rc, "catalog_count");
	}
	if (e == LH_OK) {
		st = rstmt(s, "SELECT i.lab_id, i.kind, i.item_id, i.name, i.price, i.updated_at,"
		              " r.price" CATALOG_LIST_FROM
		              " ORDER BY i.kind, i.item_id LIMIT ?5 OFFSET ?6");
		e = LH_ESTORE;
		if (st) {
			bind_text(st, 1, lab_id);
			sqlite3_bind_int(st, 2, kind);
			bind_text(st, 3, party_id);
			sqlite3_bind_int(st, 4, only_rated);
			sqlite3_bind_int64(st, 5, (sqlite3_int64)limit);
			sqlite3_bind_int64(st, 6, (sqlite3_int64)offset);
			e = collect(s, st, sizeof **out, catalog_item_from_row, (void **)out, n);
		}
	}
	if (!sqlite3_get_autocommit(s->rdb))
		sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL); /* it only read */
	pthread_mutex_unlock(&s->rmu);
	if (e == LH_OK && total)
		*total = count;
	return e;
}

static enum lh_err sqlite_catalog_members(struct store *base, const char *lab_id,
                                          const char *first_id, const char *last_id,
                                          struct catalog_member **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, CATALOG_MEMBERS_SQL);
	if (st) {
		bind_text(st, 1, lab_id);
		bind_text(st, 2, first_id);
		bind_text(st, 3, last_id);
		e = collect(s, st, sizeof **out, catalog_member_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_catalog_rate_set(struct store *base, const char *lab_id,
                                           enum catalog_kind kind, const char *item_id,
                                           const char *party_id, int64_t price)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st =
	    price < 0 ? stmt(s, "DELETE FROM catalog_rates WHERE lab_id = ?1 AND kind = ?2"
	                        " AND item_id = ?3 AND party_id = ?4")
	              : stmt(s, "INSERT INTO catalog_rates(lab_id, kind, item_id, party_id, price)"
	                        " SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS(SELECT 1 FROM"
	                        " catalog_items WHERE lab_id = ?1 AND kind = ?2 AND item_id = ?3)"
	                        " ON CONFLICT(lab_id, kind, item_id, party_id)"
	                        " DO UPDATE SET price = excluded.price");
	if (st) {
		bind_text(st, 1, lab_id);
		sqlite3_bind_int(st, 2, (int)kind);
		bind_text(st, 3, item_id);
		bind_text(st, 4, party_id);
		if (price >= 0)
			sqlite3_bind_int64(st, 5, price);
	}
	if ((e = step_done(s, st, "catalog_rate")) == LH_OK && sqlite3_changes(s->db) == 0)
		e = LH_ENOTFOUND;
	return finish(s, e);
}

static const struct store_tx_ops sqlite_tx_ops = {
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
	struct sqlite_store *s = be;
	(void)may_hold;             /* nothing is held: every statement is answered at once */
	pthread_mutex_lock(&s->mu); /* even when BEGIN fails: wb_end releases it */
	return exec(s, "BEGIN IMMEDIATE");
}

static enum lh_err wb_savepoint(void *be)
{
	/* Prepared once: parsing these per job cost more than some jobs' own work. */
	return step_done(be, stmt(be, "SAVEPOINT job"), "savepoint");
}

static enum lh_err wb_rollback_to(void *be)
{
	struct sqlite_store *s = be;
	if (s->routes_dirty)
		s->routes_stale = 1; /* the job may have changed the index: rebuilt at the end */
	return step_done(s, stmt(s, "ROLLBACK TO job"), "rollback_to");
}

static enum lh_err wb_release(void *be)
{
	return step_done(be, stmt(be, "RELEASE job"), "release");
}

static int wb_in_tx(void *be)
{
	/* An I/O error inside a statement makes SQLite roll back the whole transaction, not
	 * only the job's savepoint (and a later SAVEPOINT would open, and RELEASE commit, a
	 * transaction of its own); a full disk may roll back only the statement, and the
	 * transaction goes on. */
	return !sqlite3_get_autocommit(((struct sqlite_store *)be)->db);
}

static enum lh_err wb_end(void *be, enum lh_err e)
{
	return finish(be, e);
}

static const struct writer_backend sqlite_writer_ops = {
    .begin = wb_begin,
    .savepoint = wb_savepoint,
    .rollback_to = wb_rollback_to,
    .release = wb_release,
    .in_tx = wb_in_tx,
    .end = wb_end,
};

static enum lh_err sqlite_submit(struct store *base, store_tx_fn fn, void *arg)
{
	return writer_submit(S(base)->writer, fn, arg);
}

static void sqlite_submit_async(struct store *base, store_tx_fn fn, void *arg, unsigned flags,
                                store_done_fn done, void *done_arg)
{
	writer_submit_async(S(base)->writer, fn, arg, flags, done, done_arg);
}

static enum lh_err sqlite_bill_get(struct store *base, const char *client_id, const char *bill_id,
                                   struct bill *out, struct report **reports, size_t *n)
{
	struct sqlite_store *s = S(base);
	pthread_mutex_lock(&s->rmu);
	enum lh_err e = bill_read(s, 1, client_id, bill_id, out, reports, n);
	pthread_mutex_unlock(&s->rmu);
	return e;
}

/* ---- the delivery engine's side ---- */

static void sqlite_set_commit_hook(struct store *base, store_commit_hook fn, void *ctx)
{
	writer_set_hook(S(base)->writer, fn, ctx);
}

#define DELIVERY_COLS                                                                              \
	"delivery_id, event_id, sub_id, entity_id, event_seq, event_type, status, attempts,"       \
	" next_at, last_error, created_at"

static void delivery_from_row(sqlite3_stmt *st, void *p)
{
	struct delivery *d = p;
	memset(d, 0, sizeof *d);
	col_text(st, 0, d->delivery_id, sizeof d->delivery_id);
	col_text(st, 1, d->event_id, sizeof d->event_id);
	col_text(st, 2, d->sub_id, sizeof d->sub_id);
	col_text(st, 3, d->entity_id, sizeof d->entity_id);
	d->event_seq = sqlite3_column_int64(st, 4);
	d->event_type = sqlite3_column_int(st, 5);
	d->status = (enum delivery_status)sqlite3_column_int(st, 6);
	d->attempts = sqlite3_column_int(st, 7);
	d->next_at_ms = sqlite3_column_int64(st, 8);
	col_text(st, 9, d->last_error, sizeof d->last_error);
	d->created_at = sqlite3_column_int64(st, 10);
}

static void pending_drop(void *p)
{
	free(((struct delivery *)p)->payload);
}

/* A pending delivery with its payload (column 11). */
static void pending_from_row(sqlite3_stmt *st, void *p)
{
	struct delivery *d = p;
	delivery_from_row(st, d);
	const char *text = (const char *)sqlite3_column_text(st, 11);
	size_t len = (size_t)sqlite3_column_bytes(st, 11);
	if (text && len <= DELIVERY_PAYLOAD_INLINE && (d->payload = malloc(len + 1)))
		memcpy(d->payload, text, len + 1);
}

static enum lh_err sqlite_delivery_pending(struct store *base, int64_t after_seq,
                                           const char *sub_id, size_t limit, struct delivery **out,
                                           size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	/* The event by its seq, its rowid (a delivery's event_seq is its event's seq, also in
	 * a store's copy): one B-tree descent instead of two through event_id's index. */
	sqlite3_stmt *st = rstmt(s, "SELECT " DELIVERY_COLS ","
	                            " (SELECT payload FROM events e WHERE e.seq = d.event_seq"
	                            " AND e.event_id = d.event_id)"
	                            " FROM deliveries d WHERE status = 0"
	                            " AND sub_id = ?2 AND event_seq > ?1"
	                            " ORDER BY event_seq LIMIT ?3");
	if (st) {
		sqlite3_bind_int64(st, 1, after_seq);
		bind_text(st, 2, sub_id);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
		e = collect_with(s, st, sizeof **out, pending_from_row, pending_drop, (void **)out,
		                 n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static void sub_ref_from_row(sqlite3_stmt *st, void *p)
{
	struct sub_ref *r = p;
	memset(r, 0, sizeof *r);
	col_text(st, 0, r->sub_id, sizeof r->sub_id);
}

static enum lh_err sqlite_delivery_pending_subs(struct store *base, struct sub_ref **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	/* One index seek per subscription (each min() jumps to the next sub_id), not a scan
	 * of every pending delivery: a million of them are one subscription's backlog. */
	sqlite3_stmt *st =
	    rstmt(s, "WITH RECURSIVE subs(id) AS ("
	             " SELECT (SELECT min(sub_id) FROM deliveries WHERE status = 0)"
	             " UNION ALL SELECT (SELECT min(sub_id) FROM deliveries"
	             "  WHERE status = 0 AND sub_id > subs.id) FROM subs WHERE subs.id IS NOT NULL)"
	             " SELECT id FROM subs WHERE id IS NOT NULL");
	if (st)
		e = collect(s, st, sizeof **out, sub_ref_from_row, (void **)out, n);
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static enum lh_err sqlite_event_payload(struct store *base, const char *event_id, char **out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT payload FROM events WHERE event_id = ?1");
	if (st) {
		bind_text(st, 1, event_id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			const char *t = (const char *)sqlite3_column_text(st, 0);
			char *copy = t ? strdup(t) : NULL;
			e = copy ? LH_OK : LH_ENOMEM;
			if (copy)
				*out = copy;
		} else {
			e = rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "payload");
		}
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

/* One statement on the reader: the pending count walks the partial index of pending
 * deliveries (as small as the backlog), subscriptions are few, and the size is the file's
 * pages as this snapshot sees them. */
static enum lh_err sqlite_stats(struct store *base, struct store_stats *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(
	    s, "SELECT (SELECT count(*) FROM deliveries WHERE status = 0),"
	       " (SELECT count(*) FROM subscriptions WHERE status = 0),"
	       " (SELECT count(*) FROM subscriptions WHERE status = 1),"
	       " (SELECT count(*) FROM subscriptions WHERE status = 2),"
	       " (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())");
	if (st) {
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			struct store_stats r;
			r.pending = sqlite3_column_int64(st, 0);
			for (int i = 0; i < SUB_DELETED; i++)
				r.subs[i] = sqlite3_column_int64(st, 1 + i);
			r.bytes = sqlite3_column_int64(st, 4);
			*out = r;
			e = LH_OK;
		} else {
			e = fail(s, rc, "stats");
		}
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

struct record_job {
	const struct delivery_result *r;
	size_t n;
};

/* An outcome that disables its subscription, inside a savepoint of its own. */
static enum lh_err record_disable(struct sqlite_store *s, const struct delivery_result *r)
{
	/* The writer's own savepoint: the record job that runs this has none. */
	enum lh_err e = wb_savepoint(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "UPDATE subscriptions SET status = 2, updated_at = ?2"
	                           " WHERE sub_id = ?1 AND status IN (0, 1)");
	if (st) {
		bind_text(st, 1, r->sub_id);
		sqlite3_bind_int64(st, 2, r->now);
	}
	e = step_done(s, st, "sub_outcome");
	if (e == LH_OK && sqlite3_changes(s->db) > 0) {
		/* A disabled subscription gives its events up to new registrations. */
		struct subscription u;
		memset(&u, 0, sizeof u);
		snprintf(u.id, sizeof u.id, "%s", r->sub_id);
		u.status = SUB_DISABLED;
		e = sub_write_events(s, &u);
		s->subs_dirty = 1;
	}
	if (e != LH_OK && wb_in_tx(s))
		wb_rollback_to(s);
	if (wb_in_tx(s))
		wb_release(s);
	return e;
}

/* An attempt sent again after a restart (its outcome was not recorded) replaces its row.
 * An upsert, not INSERT OR REPLACE: a replace may delete rows, which with foreign keys on
 * makes SQLite keep a journal for the statement, copying each page it touches first (a
 * tenth of the writer's time per webhook). */
#define ATTEMPT_UPSERT                                                                             \
	" ON CONFLICT(delivery_id, n) DO UPDATE SET started_at = excluded.started_at,"             \
	" duration_ms = excluded.duration_ms, status_code = excluded.status_code,"                 \
	" error = excluded.error, response = excluded.response"

/* An attempt's started_at, duration_ms, status_code and response, from parameter k on (the
 * order of both statements of job_record that write one). */
static void bind_attempt(sqlite3_stmt *st, int k, const struct attempt *a)
{
	sqlite3_bind_int64(st, k, a->started_at_ms);
	sqlite3_bind_int(st, k + 1, a->duration_ms);
	sqlite3_bind_int(st, k + 2, a->status_code);
	bind_text(st, k + 3, a->response);
}

/* Moves the attempt a delivery keeps on its row (migration 8) into attempts, so that
 * another can be kept or the delivery sent again; *moved (unless NULL) says whether there
 * was one. */
static enum lh_err kept_to_row(struct sqlite_store *s, const char *delivery_id, int *moved)
{
	sqlite3_stmt *st =
	    stmt(s, "INSERT INTO attempts(delivery_id, n, started_at, duration_ms, status_code,"
	            " error, response) SELECT delivery_id, att_n, att_started_at,"
	            " att_duration_ms, att_status_code, '', att_response FROM deliveries"
	            " WHERE delivery_id = ?1 AND att_n IS NOT NULL" ATTEMPT_UPSERT);
	enum lh_err e;
	if (st)
		bind_text(st, 1, delivery_id);
	if ((e = step_done(s, st, "kept_attempt")) != LH_OK)
		return e;
	int found = sqlite3_changes(s->db) > 0;
	if (moved)
		*moved = found;
	if (!found)
		return LH_OK;
	st = stmt(s, "UPDATE deliveries SET att_n = NULL WHERE delivery_id = ?1");
	if (st)
		bind_text(st, 1, delivery_id);
	return step_done(s, st, "kept_attempt");
}

static enum lh_err job_record(struct store_tx *tx, void *arg)
{
	struct sqlite_store *s = TX(tx);
	struct record_job *j = arg;
	enum lh_err e = LH_OK;
	for (size_t i = 0; i < j->n && e == LH_OK; i++) {
		const struct delivery_result *r = &j->r[i];
		/* The attempt that delivered it stays on the delivery's row (migration 8), in place
		 * of a kept attempt of the same number (an attempt sent again after a restart);
		 * any other outcome drops a kept attempt of its own number, which its row
		 * replaces. A kept attempt of another number goes into attempts first (below). A
		 * delivery cancelled meanwhile (unsubscribed) stays cancelled. */
		int kept = r->status == DLV_DELIVERED && !r->a.error[0];
		sqlite3_stmt *st =
		    kept ? stmt(s, "UPDATE deliveries SET status = ?2, attempts = ?3, next_at = ?4,"
		                   " last_error = ?5, updated_at = ?6, att_n = ?3,"
		                   " att_started_at = ?7, att_duration_ms = ?8,"
		                   " att_status_code = ?9, att_response = ?10"
		                   " WHERE delivery_id = ?1 AND status != 3"
		                   " AND (att_n IS NULL OR att_n = ?3)")
		         : stmt(s, "UPDATE deliveries SET status = ?2, attempts = ?3, next_at = ?4,"
		                   " last_error = ?5, updated_at = ?6, att_n = nullif(att_n, ?3)"
		                   " WHERE delivery_id = ?1 AND status != 3"
		                   " AND (att_n IS NULL OR att_n = ?3)");
		if (st) {
			bind_text(st, 1, r->a.delivery_id);
			sqlite3_bind_int(st, 2, (int)r->status);
			sqlite3_bind_int(st, 3, r->a.n);
			sqlite3_bind_int64(st, 4, r->next_at_ms);
			bind_text(st, 5, r->a.error);
			sqlite3_bind_int64(st, 6, r->now);
			if (kept)
				bind_attempt(st, 7, &r->a);
		}
		if ((e = step_done(s, st, "delivery_update")) != LH_OK)
			break;
		int updated = sqlite3_changes(s->db) > 0, moved = 0;
		if (!updated) {
			/* Cancelled, removed, or keeping another attempt (a delivered delivery
			 * recorded again): that one into attempts, and the update again (the
			 * statement keeps its bindings). */
			if ((e = kept_to_row(s, r->a.delivery_id, &moved)) != LH_OK)
				break;
			if (moved && (e = step_done(s, st, "delivery_update")) != LH_OK)
				break;
			updated = moved && sqlite3_changes(s->db) > 0;
		}
		/* Updated: the delivery is there, and its attempt goes in without looking again
		 * (unless it stayed on the row). Otherwise it was cancelled (the attempt is still
		 * logged) or removed by retention while this attempt ran (it takes none). */
		if (!updated || !kept) {
			st =
			    updated
			        ? stmt(s, "INSERT INTO attempts(delivery_id, n, error, started_at,"
			                  " duration_ms, status_code, response)"
			                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)" ATTEMPT_UPSERT)
			        : stmt(
			              s,
			              "INSERT INTO attempts(delivery_id, n, error, started_at,"
			              " duration_ms, status_code, response)"
			              " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS"
			              " (SELECT 1 FROM deliveries WHERE delivery_id = ?1)" ATTEMPT_UPSERT);
			if (st) {
				bind_text(st, 1, r->a.delivery_id);
				sqlite3_bind_int(st, 2, r->a.n);
				bind_text(st, 3, r->a.error);
				bind_attempt(st, 4, &r->a);
			}
			if ((e = step_done(s, st, "attempt_insert")) != LH_OK)
				break;
		}
		if (r->sub == SUBO_NONE)
			continue;
		if (r->sub == SUBO_DISABLE) {
			/* Disabling changes the subscription, its events and the routing index:
			 * all of it or none, in this job that has no savepoint of its own. */
			e = record_disable(s, r);
			if (e != LH_OK)
				break;
			continue;
		}
		st = r->sub == SUBO_SUCCESS
		         ? stmt(s, "UPDATE subscriptions SET failing_since = 0 WHERE sub_id = ?1"
		                   " AND failing_since != 0")
		     : r->sub == SUBO_FAILURE
		         ? stmt(s, "UPDATE subscriptions SET failing_since = ?2 WHERE sub_id = ?1"
		                   " AND failing_since = 0")
		         : stmt(s, "UPDATE subscriptions SET status = 2, updated_at = ?2"
		                   " WHERE sub_id = ?1 AND status IN (0, 1)");
		if (st) {
			bind_text(st, 1, r->sub_id);
			sqlite3_bind_int64(st, 2, r->now);
		}
		if ((e = step_done(s, st, "sub_outcome")) != LH_OK)
			break;
	}
	return e;
}

static enum lh_err sqlite_delivery_record(struct store *base, const struct delivery_result *r,
                                          size_t n)
{
	/* Each outcome stands alone (a delivery left pending is sent again, and its attempt
	 * row replaced): no savepoint, whose journal made hundreds of outcomes quadratic. */
	struct record_job j = {r, n};
	return writer_submit_bare(S(base)->writer, job_record, &j);
}

static enum lh_err sqlite_sub_get_any(struct store *base, const char *id, struct subscription *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " SUB_COLS " FROM subscriptions WHERE sub_id = ?1");
	if (st) {
		bind_text(st, 1, id);
		e = one_row(s, st, sub_from_row, out, "sub");
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static uint64_t sqlite_subs_version(struct store *base)
{
	/* Read every dispatcher loop: it must not wait for the writer's commit. */
	return __atomic_load_n(&S(base)->subs_version, __ATOMIC_ACQUIRE);
}

/* One process owns the file, so it sends every subscription's deliveries. */
static enum lh_err sqlite_lease_sync(struct store *base, int64_t lease_ms, struct lease **out,
                                     size_t *n, size_t *share, int *all, int64_t *expiry_ms)
{
	(void)base;
	(void)lease_ms;
	*expiry_ms = -1;
	*out = NULL;
	*n = 0;
	*share = 0;
	*all = 1;
	return LH_OK;
}

static enum lh_err sqlite_lease_release(struct store *base, const struct lease *l, size_t n)
{
	(void)base;
	(void)l;
	(void)n;
	return LH_OK;
}

static enum lh_err sqlite_delivery_list(struct store *base, const char *client_id,
                                        const char *sub_id, int status, int64_t since,
                                        const char *before, size_t limit, struct delivery **out,
                                        size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	sqlite3_stmt *st = rstmt(s, "SELECT " DELIVERY_COLS " FROM deliveries WHERE sub_id = ?1"
	                            " AND sub_id IN (SELECT sub_id FROM subscriptions"
	                            " WHERE client_id = ?2) AND (?3 < 0 OR status = ?3)"
	                            " AND created_at >= ?4 AND (?5 = '' OR delivery_id < ?5)"
	                            " ORDER BY delivery_id DESC LIMIT ?6");
	if (st) {
		bind_text(st, 1, sub_id);
		bind_text(st, 2, client_id);
		sqlite3_bind_int(st, 3, status);
		sqlite3_bind_int64(st, 4, since);
		bind_text(st, 5, before);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)limit);
		e = collect(s, st, sizeof **out, delivery_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

static void attempt_from_row(sqlite3_stmt *st, void *p)
{
	struct attempt *a = p;
	memset(a, 0, sizeof *a);
	col_text(st, 0, a->delivery_id, sizeof a->delivery_id);
	a->n = sqlite3_column_int(st, 1);
	a->started_at_ms = sqlite3_column_int64(st, 2);
	a->duration_ms = sqlite3_column_int(st, 3);
	a->status_code = sqlite3_column_int(st, 4);
	col_text(st, 5, a->error, sizeof a->error);
	col_text(st, 6, a->response, sizeof a->response);
}

static enum lh_err sqlite_attempt_list(struct store *base, const char *delivery_id,
                                       struct attempt **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->rmu);
	/* Its rows and the attempt kept on its row (migration 8): the view's filter on
	 * delivery_id goes into both of its halves (two index searches). */
	sqlite3_stmt *st =
	    rstmt(s, "SELECT delivery_id, n, started_at, duration_ms, status_code, error,"
	             " response FROM attempts_all WHERE delivery_id = ?1 ORDER BY n");
	if (st) {
		bind_text(st, 1, delivery_id);
		e = collect(s, st, sizeof **out, attempt_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->rmu);
	return e;
}

struct requeue_job {
	const char *client_id, *delivery_id, *sub_id;
	int64_t since, now_ms;
	struct delivery *out;  /* requeue: one */
	struct delivery *list; /* recover: many */
	size_t n;
};

static enum lh_err job_requeue(struct store_tx *tx, void *arg)
{
	struct sqlite_store *s = TX(tx);
	struct requeue_job *j = arg;
	sqlite3_stmt *st = stmt(s, "UPDATE deliveries SET status = 0, next_at = ?3, updated_at = ?4"
	                           " WHERE delivery_id = ?1 AND status != 3 AND sub_id IN"
	                           " (SELECT sub_id FROM subscriptions WHERE client_id = ?2"
	                           " AND status != 3)");
	enum lh_err e;
	if (st) {
		bind_text(st, 1, j->delivery_id);
		bind_text(st, 2, j->client_id);
		sqlite3_bind_int64(st, 3, j->now_ms);
		sqlite3_bind_int64(st, 4, j->now_ms / 1000);
	}
	if ((e = step_done(s, st, "requeue")) != LH_OK)
		return e;
	if (sqlite3_changes(s->db) == 0)
		return LH_ENOTFOUND;
	/* The attempt that delivered it (kept on its row) becomes a row of attempts: the next
	 * one to deliver it is kept there instead (migration 8). */
	if ((e = kept_to_row(s, j->delivery_id, NULL)) != LH_OK)
		return e;
	st = stmt(s, "SELECT " DELIVERY_COLS " FROM deliveries WHERE delivery_id = ?1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, j->delivery_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		delivery_from_row(st, j->out);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return fail(s, rc, "requeue_read");
	j->out->requeued = 1;
	return writer_fresh_push(s->writer, j->out);
}

static enum lh_err sqlite_delivery_requeue(struct store *base, const char *client_id,
                                           const char *delivery_id, int64_t now_ms,
                                           struct delivery *out)
{
	struct delivery d;
	struct requeue_job j = {
	    .client_id = client_id, .delivery_id = delivery_id, .now_ms = now_ms, .out = &d};
	enum lh_err e = sqlite_submit(base, job_requeue, &j);
	if (e == LH_OK)
		*out = d;
	return e;
}

static enum lh_err job_recover(struct store_tx *tx, void *arg)
{
	struct sqlite_store *s = TX(tx);
	struct requeue_job *j = arg;
	sqlite3_stmt *st = stmt(s, "SELECT " DELIVERY_COLS " FROM deliveries WHERE sub_id = ?1"
	                           " AND status = 2 AND created_at >= ?2 AND sub_id IN"
	                           " (SELECT sub_id FROM subscriptions WHERE client_id = ?3"
	                           " AND status != 3)"
	                           " ORDER BY event_seq");
	enum lh_err e;
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, j->sub_id);
	sqlite3_bind_int64(st, 2, j->since);
	bind_text(st, 3, j->client_id);
	if ((e = collect(s, st, sizeof *j->list, delivery_from_row, (void **)&j->list, &j->n)) !=
	    LH_OK)
		return e;
	for (size_t i = 0; i < j->n; i++) {
		j->list[i].status = DLV_PENDING;
		j->list[i].next_at_ms = j->now_ms;
		j->list[i].requeued = 1;
		st = stmt(s, "UPDATE deliveries SET status = 0, next_at = ?2, updated_at = ?3"
		             " WHERE delivery_id = ?1");
		if (st) {
			bind_text(st, 1, j->list[i].delivery_id);
			sqlite3_bind_int64(st, 2, j->now_ms);
			sqlite3_bind_int64(st, 3, j->now_ms / 1000);
		}
		if ((e = step_done(s, st, "recover")) != LH_OK ||
		    (e = kept_to_row(s, j->list[i].delivery_id, NULL)) != LH_OK ||
		    (e = writer_fresh_push(s->writer, &j->list[i])) != LH_OK)
			return e;
	}
	return LH_OK;
}

static enum lh_err sqlite_delivery_recover(struct store *base, const char *client_id,
                                           const char *sub_id, int64_t since, int64_t now_ms,
                                           struct delivery **out, size_t *n)
{
	struct requeue_job j = {
	    .client_id = client_id, .sub_id = sub_id, .since = since, .now_ms = now_ms};
	enum lh_err e = sqlite_submit(base, job_recover, &j);
	if (e != LH_OK) {
		free(j.list);
		return e;
	}
	*out = j.list;
	*n = j.n;
	return LH_OK;
}

/* ---- retention ---- */

/* Reads a page of a retention pass: st (?1 the cursor, ?2 the page size) gives the page's
 * rows (id or seq, created_at) in order; the last row's are kept, and *n gets the count. */
static enum lh_err sweep_page(struct sqlite_store *s, sqlite3_stmt *st, size_t *n, char *id,
                              size_t idcap, int64_t *seq, int64_t *created)
{
	int rc;
	if (!st)
		return LH_ESTORE;
	*n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (id)
			col_text(st, 0, id, idcap);
		else
			*seq = sqlite3_column_int64(st, 0);
		*created = sqlite3_column_int64(st, 1);
		(*n)++;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? LH_OK : fail(s, rc, "sweep_page");
}

/* One batch of a retention pass (see store.h), on the writer: a primary-key range of at
 * most `batch` rows, so the job stays short whatever the table's size. */
static enum lh_err job_sweep(struct store_tx *tx, void *arg)
{
	struct sqlite_store *s = TX(tx);
	struct store_sweep_job *j = arg;
	struct retention_cursor *c = &j->cur;
	char hi[ID_CAP] = "";
	int64_t hi_seq = 0, created = 0;
	size_t n = 0;
	enum lh_err e;
	sqlite3_stmt *st;

	if (!c->events) {
		if ((st = stmt(s, "SELECT delivery_id, created_at FROM deliveries"
		                  " WHERE delivery_id > ?1 ORDER BY delivery_id LIMIT ?2"))) {
			bind_text(st, 1, c->delivery_id);
			sqlite3_bind_int64(st, 2, (sqlite3_int64)j->batch);
		}
		if ((e = sweep_page(s, st, &n, hi, sizeof hi, NULL, &created)) != LH_OK)
			return e;
		/* The page's finished deliveries and their attempts: counted first, as the
		 * attempt list shows them (the rows a kept attempt does not hide, and the kept
		 * ones: migration 8), by the deliveries' key range (through attempts_all the
		 * IN (...) would not reach the view's halves: each page scanned every attempt
		 * and delivery, 0.5 s for a million); then the attempts, which refer to their
		 * delivery, and the deliveries. */
		static const char *const step[] = {
		    "SELECT (SELECT count(*) FROM deliveries d JOIN attempts a"
		    " ON a.delivery_id = d.delivery_id WHERE d.delivery_id > ?1"
		    " AND d.delivery_id <= ?2 AND d.status != 0 AND d.updated_at < ?3"
		    " AND a.n IS NOT d.att_n) + (SELECT count(*) FROM deliveries"
		    " WHERE delivery_id > ?1 AND delivery_id <= ?2 AND status != 0"
		    " AND updated_at < ?3 AND att_n IS NOT NULL)",
		    "DELETE FROM attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries"
		    " WHERE delivery_id > ?1 AND delivery_id <= ?2 AND status != 0"
		    " AND updated_at < ?3)",
		    "DELETE FROM deliveries WHERE delivery_id > ?1 AND delivery_id <= ?2"
		    " AND status != 0 AND updated_at < ?3",
		};
		int64_t attempts = 0;
		for (size_t k = 0; n > 0 && k < COUNTOF(step); k++) {
			if ((st = stmt(s, step[k]))) {
				bind_text(st, 1, c->delivery_id);
				bind_text(st, 2, hi);
				sqlite3_bind_int64(st, 3, j->before);
			}
			e = k == 0 ? one_int(s, st, &attempts, "sweep_attempts")
			           : step_done(s, st, "sweep_deliveries");
			if (e != LH_OK)
				return e;
		}
		if (n > 0)
			j->removed += (size_t)attempts + (size_t)sqlite3_changes(s->db);
	} else {
		if ((st = stmt(s, "SELECT seq, created_at FROM events WHERE seq > ?1"
		                  " ORDER BY seq LIMIT ?2"))) {
			sqlite3_bind_int64(st, 1, c->event_seq);
			sqlite3_bind_int64(st, 2, (sqlite3_int64)j->batch);
		}
		if ((e = sweep_page(s, st, &n, NULL, 0, &hi_seq, &created)) != LH_OK)
			return e;
		/* deliveries_event makes the check (and the foreign key's own) one index
		 * seek. */
		if (n > 0) {
			if ((st = stmt(s, "DELETE FROM events WHERE seq > ?1 AND seq <= ?2"
			                  " AND created_at < ?3 AND NOT EXISTS (SELECT 1 FROM"
			                  " deliveries d WHERE d.event_id = events.event_id)"))) {
				sqlite3_bind_int64(st, 1, c->event_seq);
				sqlite3_bind_int64(st, 2, hi_seq);
				sqlite3_bind_int64(st, 3, j->before);
			}
			if ((e = step_done(s, st, "sweep_events")) != LH_OK)
				return e;
			j->removed += (size_t)sqlite3_changes(s->db);
		}
	}
	store_sweep_advance(c, n, j->batch, hi, hi_seq, created, j->before);
	return LH_OK;
}

static enum lh_err sqlite_retention_sweep(struct store *base, int64_t before, size_t batch,
                                          struct retention_cursor *cur, size_t *removed)
{
	return store_sweep_submit(base, job_sweep, before, batch, cur, removed);
}

/* ---- moving a store: export and import (see store.h) ---- */

/* Prepares sql, a statement built at run time (not cached: finalize it), on the writer's
 * connection (caller holds mu) or the reader's (rmu). */
static enum lh_err prepare_once(struct sqlite_store *s, int reader, const char *sql,
                                sqlite3_stmt **out)
{
	sqlite3 *db = reader ? s->rdb : s->db;
	int rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);
	if (rc != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "err=\"%s\" prepare failed", sqlite3_errmsg(db));
		sqlite3_finalize(*out);
		*out = NULL;
		return err_of(rc);
	}
	return LH_OK;
}

/* Where the store copy reads a table from, when not from the table itself (migration 8):
 * the deliveries without the attempt they keep (its five att_ columns), and the attempts
 * with those, as the other backend has them. */
static const struct copy_source {
	const char *table, *from;
	size_t hidden; /* the table's columns that `from` leaves out */
} copy_sources[] = {{"deliveries", "deliveries_copy", 5}, {"attempts", "attempts_all", 0}};

static struct copy_source copy_source(size_t t)
{
	const char *name = store_copy_tables[t].name;
	for (size_t i = 0; i < COUNTOF(copy_sources); i++)
		if (strcmp(name, copy_sources[i].table) == 0)
			return copy_sources[i];
	return (struct copy_source){name, name, 0};
}

/* The rows of every copied table, into counts, on the writer's connection (caller holds
 * mu). */
static enum lh_err count_tables(struct sqlite_store *s, int64_t counts[STORE_COPY_NTABLES])
{
	enum lh_err e = LH_OK;
	for (size_t t = 0; e == LH_OK && t < STORE_COPY_NTABLES; t++) {
		char sql[128];
		sqlite3_stmt *st = NULL;
		snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", copy_source(t).from);
		if ((e = prepare_once(s, 0, sql, &st)) != LH_OK)
			break;
		e = one_int(s, st, &counts[t], "copy_count");
		sqlite3_finalize(st);
	}
	return e;
}

/* Passes every row of table t to fn (caller holds rmu, inside the export's transaction). */
static enum lh_err export_table(struct sqlite_store *s, size_t t, store_row_fn fn, void *ctx,
                                int64_t *count)
{
	const struct store_table *tb = &store_copy_tables[t];
	char cols[STORE_COPY_NAMES_CAP], keys[STORE_COPY_NAMES_CAP], sql[3 * STORE_COPY_NAMES_CAP];
	struct store_val v[STORE_COPY_MAXCOLS];
	sqlite3_stmt *st = NULL;
	enum lh_err e;
	int rc;

	/* The table itself, so that a column a later migration adds and the copy does not name
	 * is refused; less those its source leaves out on purpose. */
	struct copy_source src = copy_source(t);
	snprintf(sql, sizeof sql, "SELECT * FROM %s LIMIT 0", tb->name);
	if ((e = prepare_once(s, 1, sql, &st)) != LH_OK)
		return e;
	size_t ncols = (size_t)sqlite3_column_count(st);
	e = store_copy_columns(t, ncols >= src.hidden ? ncols - src.hidden : 0);
	sqlite3_finalize(st);
	if (e != LH_OK)
		return e;
	store_copy_names(tb, tb->ncols, cols, sizeof cols);
	store_copy_names(tb, tb->nkey, keys, sizeof keys);
	snprintf(sql, sizeof sql, "SELECT %s FROM %s ORDER BY %s", cols, src.from, keys);
	if ((e = prepare_once(s, 1, sql, &st)) != LH_OK)
		return e;
	while (e == LH_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (size_t i = 0; i < tb->ncols; i++) {
			int type = sqlite3_column_type(st, (int)i);
			v[i].kind = type == SQLITE_NULL   ? STORE_VAL_NULL
			            : type == SQLITE_BLOB ? STORE_VAL_BYTES
			                                  : STORE_VAL_TEXT;
			v[i].p = type == SQLITE_BLOB
			             ? sqlite3_column_blob(st, (int)i)
			             : (const char *)sqlite3_column_text(st, (int)i);
			v[i].len = (size_t)sqlite3_column_bytes(st, (int)i);
			if (type != SQLITE_NULL && !v[i].p && v[i].len)
				e = LH_ENOMEM;
			if (!v[i].p)
				v[i].p = "";
		}
		if (e == LH_OK && (e = fn(ctx, t, v)) == LH_OK)
			(*count)++;
	}
	if (e == LH_OK && rc != SQLITE_DONE)
		e = fail(s, rc, "copy_export");
	sqlite3_finalize(st);
	return e;
}

static enum lh_err sqlite_export_rows(struct store *base, store_row_fn fn, void *ctx,
                                      int64_t rows[STORE_COPY_NTABLES])
{
	struct sqlite_store *s = S(base);
	int64_t counts[STORE_COPY_NTABLES] = {0};
	pthread_mutex_lock(&s->rmu);
	/* One read transaction: every table is read from the same snapshot (WAL). */
	int rc = sqlite3_exec(s->rdb, "BEGIN", NULL, NULL, NULL);
	enum lh_err e = rc == SQLITE_OK ? LH_OK : fail(s, rc, "copy_begin");
	for (size_t t = 0; e == LH_OK && t < STORE_COPY_NTABLES; t++)
		e = export_table(s, t, fn, ctx, &counts[t]);
	if (!sqlite3_get_autocommit(s->rdb))
		sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL); /* it only read */
	pthread_mutex_unlock(&s->rmu);
	if (e == LH_OK && rows)
		memcpy(rows, counts, sizeof counts);
	return e;
}

/* An import in progress: the insert statement of the table being copied. */
struct sqlite_import {
	struct sqlite_store *s;
	size_t table;
	sqlite3_stmt *st;
};

/* Inserts one exported row (store_row_fn) on the writer's connection, inside the import's
 * transaction. */
static enum lh_err import_row(void *ctx, size_t t, const struct store_val *vals)
{
	struct sqlite_import *im = ctx;
	const struct store_table *tb = &store_copy_tables[t];
	enum lh_err e;
	if (!im->st || im->table != t) {
		char cols[STORE_COPY_NAMES_CAP], sql[3 * STORE_COPY_NAMES_CAP];
		size_t o;
		sqlite3_finalize(im->st);
		im->st = NULL;
		store_copy_names(tb, tb->ncols, cols, sizeof cols);
		o = (size_t)snprintf(sql, sizeof sql, "INSERT INTO %s(%s) VALUES(?", tb->name,
		                     cols);
		for (size_t i = 1; i < tb->ncols && o < sizeof sql; i++)
			o += (size_t)snprintf(sql + o, sizeof sql - o, ", ?");
		snprintf(sql + o, sizeof sql - o, ")");
		if ((e = prepare_once(im->s, 0, sql, &im->st)) != LH_OK)
			return e;
		im->table = t;
	}
	sqlite3_reset(im->st);
	sqlite3_clear_bindings(im->st);
	for (size_t i = 0; i < tb->ncols; i++) {
		struct store_val v = vals[i];
		int k = (int)i + 1;
		if ((e = store_copy_value(t, i, &v)) != LH_OK)
			return e;
		if (v.kind == STORE_VAL_NULL)
			sqlite3_bind_null(im->st, k);
		else if (v.kind == STORE_VAL_BYTES)
			sqlite3_bind_blob(im->st, k, v.p, (int)v.len, SQLITE_STATIC);
		else if (tb->cols[i].kind == STORE_COL_INT)
			sqlite3_bind_int64(im->st, k, strtoll(v.p, NULL, 10));
		else
			sqlite3_bind_text(im->st, k, v.p, (int)v.len, SQLITE_STATIC);
	}
	int rc = sqlite3_step(im->st);
	sqlite3_reset(im->st);
	if (rc == SQLITE_DONE)
		return LH_OK;
	if ((e = fail(im->s, rc, "copy_insert")) == LH_ECONFLICT) {
		LOG(LOG_ERROR, "store", "table=%s a copied row breaks a key or a reference",
		    tb->name);
		e = LH_ESTORE; /* not the target's fault: it was empty */
	}
	return e;
}

/* After an import every cached copy of the tables is stale: the lookups forget all. */
static void lookup_forget_all(struct sqlite_store *s)
{
	struct lookup_cache *lc = s->lc;
	pthread_mutex_lock(&lc->mu);
	lc->gen++;
	for (size_t i = 0; i < LOOKUP_SLOTS; i++) {
		lc->acct[i].client_id[0] = '\0';
		lc->lab[i].lab_id[0] = '\0';
	}
	pthread_mutex_unlock(&lc->mu);
}

static enum lh_err sqlite_import_from(struct store *base, struct store *from,
                                      int64_t rows[STORE_COPY_NTABLES])
{
	struct sqlite_store *s = S(base);
	struct sqlite_import im = {.s = s};
	int64_t exported[STORE_COPY_NTABLES] = {0}, have[STORE_COPY_NTABLES] = {0};
	enum lh_err e;

	if (from == base)
		return LH_EINVAL;
	if ((e = begin(s)) != LH_OK)
		return e;
	if ((e = count_tables(s, have)) != LH_OK)
		goto out;
	for (size_t t = 1; t < STORE_COPY_NTABLES; t++) /* meta (0) is replaced */
		if (have[t]) {
			e = store_copy_refuse(t, have[t]);
			goto out;
		}
	if ((e = exec(s, "DELETE FROM meta")) != LH_OK)
		goto out;
	/* events.seq is AUTOINCREMENT: an explicit seq larger than any before moves the
	 * table's counter (sqlite_sequence) with it, so the next event follows the last
	 * copied. */
	e = from->ops->export_rows(from, import_row, &im, exported);
	sqlite3_finalize(im.st);
	if (e != LH_OK || (e = count_tables(s, have)) != LH_OK ||
	    (e = store_copy_check(exported, have)) != LH_OK)
		goto out;
	/* The routing index mirrors subscription_events: read it again (and again from the
	 * rolled-back tables by finish, should the commit fail). */
	s->routes_dirty = 1;
	s->subs_dirty = 1;
	e = routes_rebuild(s);
out:
	e = finish(s, e);
	lookup_forget_all(s);
	if (e == LH_OK && rows)
		memcpy(rows, exported, sizeof exported);
	return e;
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .meta_get_or_put = sqlite_meta_get_or_put,
    .meta_set = sqlite_meta_set,
    .account_insert = sqlite_account_insert,
    .account_get = sqlite_account_get,
    .account_list = sqlite_account_list,
    .account_set_secret = sqlite_account_set_secret,
    .account_set_mode = sqlite_account_set_mode,
    .lab_insert = sqlite_lab_insert,
    .lab_get = sqlite_lab_get,
    .lab_list = sqlite_lab_list,
    .lab_find = sqlite_lab_find,
    .party_insert = sqlite_party_insert,
    .party_get = sqlite_party_get,
    .party_list = sqlite_party_list,
    .refresh_insert = sqlite_refresh_insert,
    .refresh_rotate = sqlite_refresh_rotate,
    .sub_insert = sqlite_sub_insert,
    .sub_update = sqlite_sub_update,
    .sub_get = sqlite_sub_get,
    .sub_list_holding = sqlite_sub_list_holding,
    .sub_list = sqlite_sub_list,
    .submit = sqlite_submit,
    .submit_async = sqlite_submit_async,
    .set_commit_hook = sqlite_set_commit_hook,
    .delivery_pending = sqlite_delivery_pending,
    .delivery_pending_subs = sqlite_delivery_pending_subs,
    .event_payload = sqlite_event_payload,
    .delivery_record = sqlite_delivery_record,
    .sub_get_any = sqlite_sub_get_any,
    .subs_version = sqlite_subs_version,
    .lease_sync = sqlite_lease_sync,
    .lease_release = sqlite_lease_release,
    .delivery_list = sqlite_delivery_list,
    .attempt_list = sqlite_attempt_list,
    .delivery_requeue = sqlite_delivery_requeue,
    .delivery_recover = sqlite_delivery_recover,
    .bill_get = sqlite_bill_get,
    .retention_sweep = sqlite_retention_sweep,
    .report_doc_get = sqlite_report_doc_get,
    .report_doc_chunk = sqlite_report_doc_chunk,
    .catalog_put = sqlite_catalog_put,
    .catalog_delete = sqlite_catalog_delete,
    .catalog_list = sqlite_catalog_list,
    .catalog_members = sqlite_catalog_members,
    .catalog_rate_set = sqlite_catalog_rate_set,
    .stats = sqlite_stats,
    .export_rows = sqlite_export_rows,
    .import_from = sqlite_import_from,
};

enum lh_err store_sqlite_open(const char *data_dir, struct store **out)
{
	struct sqlite_store *s = NULL;
	char path[4096];
	enum lh_err e = LH_ESTORE;

	if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
		LOG(LOG_ERROR, "store", "dir=%s err=\"%s\" cannot create data directory", data_dir,
		    strerror(errno));
		return LH_EIO;
	}
	if ((size_t)snprintf(path, sizeof path, "%s/labhook.db", data_dir) >= sizeof path)
		return LH_EINVAL;
	s = calloc(1, sizeof *s);
	if (!s)
		return LH_ENOMEM;
	s->base.ops = &sqlite_ops;
	s->tx.ops = &sqlite_tx_ops;
	if (!(s->lc = calloc(1, sizeof *s->lc))) {
		free(s);
		return LH_ENOMEM;
	}
	pthread_mutex_init(&s->lc->mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->rmu, NULL);
	if (sqlite3_open_v2(path, &s->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    store_sqlite_vfs()) != SQLITE_OK) {
		int sys = s->db ? sqlite3_system_errno(s->db) : 0;
		LOG(LOG_ERROR, "store", "path=%s err=\"%s%s%s\" cannot open database", path,
		    s->db ? sqlite3_errmsg(s->db) : "out of memory", sys ? ": " : "",
		    sys ? strerror(sys) : "");
		goto out;
	}
	sqlite3_busy_timeout(s->db, 5000);
	/* WAL + synchronous=FULL: every COMMIT is on disk before it returns. */
	/* 4 KiB pages (the default, stated): with commits of dozens of jobs, larger pages
	 * wrote more bytes per commit and copied more into each job's savepoint journal
	 * (measured with 16 KiB: 15% fewer bills per second). Only takes effect on a new
	 * database. */
	if ((e = exec(s, "PRAGMA page_size=4096; PRAGMA journal_mode=WAL;"
	                 " PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
	                 " PRAGMA cache_size=-32768;"
	                 /* Keeps each job's savepoint journal in memory: on disk it was a
	                  * temporary file created, written and deleted in every batch. */
	                 " PRAGMA temp_store=MEMORY;")) != LH_OK)
		goto out;
	if ((e = check_synchronous(s, path)) != LH_OK)
		goto out;
	if ((e = migrate(s)) != LH_OK)
		goto out;
	if (sqlite3_open_v2(path, &s->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
	                    store_sqlite_vfs()) != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "path=%s cannot open the read connection", path);
		e = LH_ESTORE;
		goto out;
	}
	sqlite3_busy_timeout(s->rdb, 5000);
	pthread_mutex_lock(&s->mu);
	e = routes_rebuild(s);
	pthread_mutex_unlock(&s->mu);
	if (e != LH_OK)
		goto out;
	if ((e = writer_start(&sqlite_writer_ops, s, &s->tx, &s->writer)) != LH_OK)
		goto out;
	*out = &s->base;
	return LH_OK;
out:
	sqlite_close(&s->base);
	return e == LH_OK ? LH_ESTORE : e;
}
