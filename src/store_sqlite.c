/* store_sqlite.c: the embedded SQLite backend of store.h.
 *
 * One connection in WAL mode with synchronous=FULL, so a COMMIT has reached the disk before
 * any function returns LH_OK. A mutex serialises all calls (SQLite's own write lock would
 * serialise writers anyway); prepared statements are cached per SQL text for the life of the
 * connection. Schema changes are forward-only migrations numbered by PRAGMA user_version.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"

#define STMT_CACHE 64

struct sqlite_store {
	struct store base;
	sqlite3 *db;
	pthread_mutex_t mu;
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} cache[STMT_CACHE];
	size_t ncache;
};

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
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])

static struct sqlite_store *S(struct store *s)
{
	return (struct sqlite_store *)s;
}

/* Returns a reset, cached statement for sql (a string literal: cached by address). */
static sqlite3_stmt *stmt(struct sqlite_store *s, const char *sql)
{
	for (size_t i = 0; i < s->ncache; i++) {
		if (s->cache[i].sql == sql) {
			sqlite3_reset(s->cache[i].st);
			sqlite3_clear_bindings(s->cache[i].st);
			return s->cache[i].st;
		}
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "err=\"%s\" prepare failed", sqlite3_errmsg(s->db));
		return NULL;
	}
	if (s->ncache < STMT_CACHE) {
		s->cache[s->ncache].sql = sql;
		s->cache[s->ncache].st = st;
		s->ncache++;
	}
	/* Past the cache size the statement would leak; STMT_CACHE exceeds our statements. */
	return st;
}

static enum lh_err fail(struct sqlite_store *s, int rc, const char *what)
{
	if (rc == SQLITE_CONSTRAINT || (rc & 0xff) == SQLITE_CONSTRAINT)
		return LH_ECONFLICT;
	LOG(LOG_ERROR, "store", "op=%s rc=%d err=\"%s\" sqlite call failed", what, rc,
	    sqlite3_errmsg(s->db));
	return rc == SQLITE_NOMEM ? LH_ENOMEM : LH_ESTORE;
}

static enum lh_err exec(struct sqlite_store *s, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "rc=%d err=\"%s\" exec failed", rc, msg ? msg : "?");
		sqlite3_free(msg);
		return rc == SQLITE_NOMEM ? LH_ENOMEM : LH_ESTORE;
	}
	return LH_OK;
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
static enum lh_err finish(struct sqlite_store *s, enum lh_err e)
{
	if (e == LH_OK)
		e = exec(s, "COMMIT");
	if (e != LH_OK && !sqlite3_get_autocommit(s->db))
		exec(s, "ROLLBACK");
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

static void sqlite_close(struct store *base)
{
	struct sqlite_store *s = S(base);
	if (!s)
		return;
	for (size_t i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	if (s->db) {
		sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
		sqlite3_close(s->db);
	}
	pthread_mutex_destroy(&s->mu);
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
		LOG(LOG_ERROR, "store", "schema=%d known=%zu the database is newer than this binary",
		    version, N_MIGRATIONS);
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
	sqlite3_stmt *st = stmt(s, "INSERT INTO accounts(" ACCOUNT_COLS
				   ") VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
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
static enum lh_err account_read(struct sqlite_store *s, const char *client_id, struct account *out)
{
	sqlite3_stmt *st = stmt(s, "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id = ?1");
	if (!st)
		return LH_ESTORE;
	bind_text(st, 1, client_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		account_from_row(st, out);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "account");
}

static enum lh_err sqlite_account_get(struct store *base, const char *client_id,
				      struct account *out)
{
	struct sqlite_store *s = S(base);
	pthread_mutex_lock(&s->mu);
	enum lh_err e = account_read(s, client_id, out);
	pthread_mutex_unlock(&s->mu);
	return e;
}

/* Collects rows of a bound statement into a growing array; caller holds the lock. */
static enum lh_err collect(struct sqlite_store *s, sqlite3_stmt *st, size_t elem,
			   void (*from_row)(sqlite3_stmt *, void *), void **out, size_t *n)
{
	char *arr = NULL;
	size_t cnt = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			char *na = realloc(arr, ncap * elem);
			if (!na) {
				free(arr);
				sqlite3_reset(st);
				return LH_ENOMEM;
			}
			arr = na;
			cap = ncap;
		}
		from_row(st, arr + cnt * elem);
		cnt++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(arr);
		return fail(s, rc, "list");
	}
	*out = arr;
	*n = cnt;
	return LH_OK;
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
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT " ACCOUNT_COLS " FROM accounts WHERE client_id > ?1"
				   " ORDER BY client_id LIMIT ?2");
	if (st) {
		bind_text(st, 1, after);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
		e = collect(s, st, sizeof **out, account_row_cb, (void **)out, n);
	}
	pthread_mutex_unlock(&s->mu);
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
	e = account_read(s, client_id, &a);
out:
	e = finish(s, e);
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
	e = sqlite3_changes(s->db) ? account_read(s, client_id, &a) : LH_ENOTFOUND;
out:
	e = finish(s, e);
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
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT lab_id, client_id, name, created_at FROM labs"
				   " WHERE lab_id = ?1 AND client_id = ?2");
	if (st) {
		bind_text(st, 1, lab_id);
		bind_text(st, 2, client_id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			lab_from_row(st, out);
		sqlite3_reset(st);
		e = rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "lab");
	}
	pthread_mutex_unlock(&s->mu);
	return e;
}

static enum lh_err sqlite_lab_list(struct store *base, const char *client_id, struct lab **out,
				   size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT lab_id, client_id, name, created_at FROM labs"
				   " WHERE client_id = ?1 ORDER BY lab_id");
	if (st) {
		bind_text(st, 1, client_id);
		e = collect(s, st, sizeof **out, lab_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->mu);
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

static enum lh_err sqlite_party_get(struct store *base, const char *client_id,
				    const char *party_id, struct party *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT party_id, client_id, kind, name, created_at"
				   " FROM parties WHERE party_id = ?1 AND client_id = ?2");
	if (st) {
		bind_text(st, 1, party_id);
		bind_text(st, 2, client_id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			party_from_row(st, out);
		sqlite3_reset(st);
		e = rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "party");
	}
	pthread_mutex_unlock(&s->mu);
	return e;
}

static enum lh_err sqlite_party_list(struct store *base, const char *client_id,
				     struct party **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT party_id, client_id, kind, name, created_at"
				   " FROM parties WHERE client_id = ?1 ORDER BY party_id");
	if (st) {
		bind_text(st, 1, client_id);
		e = collect(s, st, sizeof **out, party_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->mu);
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

/* ---- subscriptions ---- */

#define SUB_COLS                                                                            \
	"sub_id, client_id, lab_id, party_id, party_kind, events, endpoint, auth_token,"    \
	" status, secret, prev_secret, prev_secret_until, created_at, updated_at"

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
}

/* Rewrites the event-holder rows of sub (none unless live); caller holds a transaction. */
static enum lh_err sub_write_events(struct sqlite_store *s, const struct subscription *u)
{
	sqlite3_stmt *st = stmt(s, "DELETE FROM subscription_events WHERE sub_id = ?1");
	enum lh_err e;
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
	}
	return LH_OK;
}

static void bind_sub(sqlite3_stmt *st, const struct subscription *u)
{
	bind_text(st, 1, u->id);
	bind_text(st, 2, u->client_id);
	bind_text(st, 3, u->lab_id);
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
				   " ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
	if (st)
		bind_sub(st, u);
	if ((e = step_done(s, st, "sub_insert")) == LH_OK)
		e = sub_write_events(s, u);
	return finish(s, e);
}

static enum lh_err sqlite_sub_update(struct store *base, const struct subscription *u)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = begin(s);
	if (e != LH_OK)
		return e;
	sqlite3_stmt *st = stmt(s, "UPDATE subscriptions SET events = ?6, endpoint = ?7,"
				   " auth_token = ?8, status = ?9, secret = ?10, prev_secret = ?11,"
				   " prev_secret_until = ?12, updated_at = ?14"
				   " WHERE sub_id = ?1 AND client_id = ?2 AND status != 3");
	if (st)
		bind_sub(st, u);
	if ((e = step_done(s, st, "sub_update")) != LH_OK)
		goto out;
	if (sqlite3_changes(s->db) == 0) {
		e = LH_ENOTFOUND;
		goto out;
	}
	e = sub_write_events(s, u);
out:
	return finish(s, e);
}

static enum lh_err sqlite_sub_get(struct store *base, const char *client_id, const char *id,
				  struct subscription *out)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT " SUB_COLS " FROM subscriptions"
				   " WHERE sub_id = ?1 AND client_id = ?2 AND status != 3");
	if (st) {
		bind_text(st, 1, id);
		bind_text(st, 2, client_id);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			sub_from_row(st, out);
		sqlite3_reset(st);
		e = rc == SQLITE_ROW ? LH_OK : rc == SQLITE_DONE ? LH_ENOTFOUND : fail(s, rc, "sub");
	}
	pthread_mutex_unlock(&s->mu);
	return e;
}

static enum lh_err sqlite_sub_list_holding(struct store *base, const char *lab_id,
					   const char *party_id, unsigned events,
					   struct subscription **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT " SUB_COLS " FROM subscriptions WHERE sub_id IN"
				   " (SELECT sub_id FROM subscription_events WHERE lab_id = ?1"
				   " AND party_id = ?2 AND ((1 << event) & ?3) != 0)"
				   " ORDER BY sub_id");
	if (st) {
		bind_text(st, 1, lab_id);
		bind_text(st, 2, party_id);
		sqlite3_bind_int64(st, 3, events);
		e = collect(s, st, sizeof **out, sub_from_row, (void **)out, n);
	}
	pthread_mutex_unlock(&s->mu);
	return e;
}

static enum lh_err sqlite_sub_list(struct store *base, const char *client_id, const char *lab_id,
				   int status, const char *after, size_t limit,
				   struct subscription **out, size_t *n)
{
	struct sqlite_store *s = S(base);
	enum lh_err e = LH_ESTORE;
	pthread_mutex_lock(&s->mu);
	sqlite3_stmt *st = stmt(s, "SELECT " SUB_COLS " FROM subscriptions WHERE client_id = ?1"
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
	pthread_mutex_unlock(&s->mu);
	return e;
}

static const struct store_ops sqlite_ops = {
	.name = "sqlite",
	.close = sqlite_close,
	.meta_get_or_put = sqlite_meta_get_or_put,
	.account_insert = sqlite_account_insert,
	.account_get = sqlite_account_get,
	.account_list = sqlite_account_list,
	.account_set_secret = sqlite_account_set_secret,
	.account_set_mode = sqlite_account_set_mode,
	.lab_insert = sqlite_lab_insert,
	.lab_get = sqlite_lab_get,
	.lab_list = sqlite_lab_list,
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
	pthread_mutex_init(&s->mu, NULL);
	if (sqlite3_open_v2(path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		LOG(LOG_ERROR, "store", "path=%s err=\"%s\" cannot open database", path,
		    s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(s->db, 5000);
	/* WAL + synchronous=FULL: every COMMIT is on disk before it returns. */
	if ((e = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			 " PRAGMA foreign_keys=ON;")) != LH_OK)
		goto out;
	if ((e = migrate(s)) != LH_OK)
		goto out;
	*out = &s->base;
	return LH_OK;
out:
	sqlite_close(&s->base);
	return e == LH_OK ? LH_ESTORE : e;
}
