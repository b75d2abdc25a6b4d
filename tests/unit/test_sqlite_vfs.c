/* test_sqlite_vfs.c: the SQLite store's VFS (store_sqlite.c), which gathers the appends to a
 * write-ahead log into one write. What it must keep is what SQLite's own VFS gives:
 * every committed transaction in the log exactly as SQLite wrote it, which only recovery
 * after a crash checks (frame by frame, with its checksums). So each test writes through
 * the VFS directly with SQLite, copies the database and its log while the connection is
 * still open (a crash, as far as the files are concerned: no clean close), and opens the
 * copy with the default VFS, which recovers from the log; the copy must hold, row for row,
 * what the writer sees.
 *
 * The transactions are chosen to reach each of the shim's paths: a commit larger than
 * one write (64 KiB) and than the buffer (1 MiB); a transaction larger than a tiny page
 * cache, so SQLite spills pages to the log before the commit, reads them back and
 * rewrites their frames (and their checksums, reading the frames back) at the commit;
 * many commits, with and without checkpoints (which restart the log from its start); a
 * write that fails at the commit, and one that fails in the middle of a transaction that
 * goes on and commits (a full disk fails only the statement); and a transaction rolled
 * back with frames still gathered, followed by another writer. Single-threaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store_sqlite.h"

struct fixture {
	char dir[64];
	char db[96], copy[96];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/lh-vfs-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->db, sizeof f->db, "%s/a.db", f->dir);
	snprintf(f->copy, sizeof f->copy, "%s/b.db", f->dir);
	*state = f;
	return 0;
}

static void unlink_db(const char *db)
{
	char p[128];
	const char *suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", db, suffix[i]);
		unlink(p);
	}
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_sqlite_fault_set(STORE_FAULT_NONE); /* a failed test may have left one set */
	unlink_db(f->db);
	unlink_db(f->copy);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static sqlite3 *open_lh(const char *path, int cache_pages, int checkpoint)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                                 store_sqlite_vfs()),
	                 SQLITE_OK);
	char sql[256];
	/* As the store runs it (synchronous=FULL); with checkpoint 0 none runs, and every
	 * commit stays in the log for the copy to recover from. */
	snprintf(sql, sizeof sql,
	         "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=%d;"
	         " PRAGMA cache_size=%d;"
	         " CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
	         checkpoint, cache_pages);
	exec(db, sql);
	return db;
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		return; /* no log yet */
	FILE *out = fopen(to, "wb");
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/* The files as a crash would leave them (the writer's connection still open), opened with
 * SQLite's own VFS: recovery rebuilds the index from the log, up to the last complete
 * commit whose frames all check. */
static sqlite3 *crash_copy(const struct fixture *f)
{
	char from[128], to[128];
	unlink_db(f->copy);
	copy_file(f->db, f->copy);
	snprintf(from, sizeof from, "%s-wal", f->db);
	snprintf(to, sizeof to, "%s-wal", f->copy);
	copy_file(from, to);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open_v2(f->copy, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	return db;
}

static int64_t one_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void assert_intact(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
}

/* Rows k in [from, to) in pseudo-random key order (so inserts land all over the tree),
 * each v a blob of size bytes derived from k and round (so a rewrite differs). */
static void put_rows(sqlite3 *db, int from, int to, int size, int round)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(
	    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO t(k, v) VALUES (?1, ?2)", -1, &st, NULL),
	    SQLITE_OK);
	unsigned char *v = malloc((size_t)size);
	assert_non_null(v);
	int n = to - from;
	for (int i = 0; i < n; i++) {
		int k = from + (int)(((unsigned)i * 7919u) % (unsigned)n); /* 7919 is prime */
		for (int j = 0; j < size; j++)
			v[j] = (unsigned char)(k * 31 + j + round);
		sqlite3_bind_int(st, 1, k);
		sqlite3_bind_blob(st, 2, v, size, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		sqlite3_reset(st);
	}
	free(v);
	sqlite3_finalize(st);
}

/* a and b hold the same rows, byte for byte. */
static void assert_same_rows(sqlite3 *a, sqlite3 *b)
{
	sqlite3_stmt *sa = NULL, *sb = NULL;
	const char *sql = "SELECT k, v FROM t ORDER BY k";
	assert_int_equal(sqlite3_prepare_v2(a, sql, -1, &sa, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(b, sql, -1, &sb, NULL), SQLITE_OK);
	for (;;) {
		int ra = sqlite3_step(sa), rb = sqlite3_step(sb);
		assert_int_equal(ra, rb);
		if (ra != SQLITE_ROW) {
			assert_int_equal(ra, SQLITE_DONE);
			break;
		}
		assert_int_equal(sqlite3_column_int64(sa, 0), sqlite3_column_int64(sb, 0));
		int n = sqlite3_column_bytes(sa, 1);
		assert_int_equal(n, sqlite3_column_bytes(sb, 1));
		assert_memory_equal(sqlite3_column_blob(sa, 1), sqlite3_column_blob(sb, 1),
		                    (size_t)n);
	}
	sqlite3_finalize(sa);
	sqlite3_finalize(sb);
}

/* The writer sees rows rows, intact, and so does the crash copy, row for row; db is
 * closed. */
static void assert_recovered(const struct fixture *f, sqlite3 *db, int64_t rows)
{
	assert_int_equal(one_int(db, "SELECT count(*) FROM t"), rows);
	assert_intact(db);
	sqlite3 *c = crash_copy(f);
	assert_intact(c);
	assert_same_rows(db, c);
	sqlite3_close(c);
	sqlite3_close(db);
}

static void test_large_commit(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = open_lh(f->db, 2000, 0);
	exec(db, "BEGIN");
	put_rows(db, 0, 6000, 500, 0); /* about 3.5 MiB of frames: many writes, several buffers */
	exec(db, "COMMIT");
	assert_recovered(f, db, 6000);
}

static void test_spilled_transaction(void **state)
{
	struct fixture *f = *state;
	/* 20 pages of cache: the transaction spills to the log long before its commit, reads
	 * spilled pages back, and at the commit writes some of their frames again in place. */
	sqlite3 *db = open_lh(f->db, 20, 0);
	exec(db, "BEGIN");
	put_rows(db, 0, 3000, 300, 0);
	put_rows(db, 0, 1500, 300, 1); /* the same keys again: pages spilled earlier change */
	exec(db, "COMMIT");
	assert_recovered(f, db, 3000);
}

static void test_many_commits(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = open_lh(f->db, 2000, 0);
	for (int i = 0; i < 200; i++)
		put_rows(db, i * 10, i * 10 + 10, 100, i); /* a commit each */
	assert_recovered(f, db, 2000);
}

/* A failed write is reported (at the latest by the commit's sync) and the commit keeps
 * nothing: what was gathered is not written later behind SQLite's back. */
static void test_failed_write_keeps_nothing(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = open_lh(f->db, 2000, 0);
	put_rows(db, 0, 100, 100, 0);
	store_sqlite_fault_set(STORE_FAULT_FULL);
	exec(db, "BEGIN");
	put_rows(db, 100, 400, 100, 0);
	int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	store_sqlite_fault_set(STORE_FAULT_NONE);
	assert_int_not_equal(rc, SQLITE_OK);
	if (!sqlite3_get_autocommit(db))
		exec(db, "ROLLBACK");
	assert_int_equal(one_int(db, "SELECT count(*) FROM t"), 100);
	put_rows(db, 100, 200, 100, 0); /* and it works again */
	assert_recovered(f, db, 200);
}

static void test_commits_with_checkpoints(void **state)
{
	struct fixture *f = *state;
	/* A checkpoint every 50 pages: the log is copied into the database and written again
	 * from its start (a new header, new salts) over and over. */
	sqlite3 *db = open_lh(f->db, 2000, 50);
	for (int i = 0; i < 300; i++)
		put_rows(db, (i * 37) % 3000, (i * 37) % 3000 + 10, 200, i);
	int64_t rows = one_int(db, "SELECT count(*) FROM t");
	assert_recovered(f, db, rows);
}

/* A full disk in the middle of a transaction fails only the statement that met it (SQLite
 * rolls back the statement, not the transaction): the frames of the earlier statements
 * that could not be written then must still reach the log, or the commit that follows
 * would point at frames that are not there. Here the failing write is the flush before a
 * read of a spilled page, inside a savepoint that is rolled back, as the writer's careful
 * batches do. */
static void test_full_disk_mid_transaction(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = open_lh(f->db, 10, 0);
	exec(db, "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 1999)"
	         " INSERT INTO t SELECT i, randomblob(200) FROM r");
	exec(db, "BEGIN IMMEDIATE; SAVEPOINT job");
	/* spills: frames gathered, not yet written */
	exec(db, "WITH RECURSIVE r(i) AS (SELECT 2000 UNION ALL SELECT i + 1 FROM r WHERE i < 3999)"
	         " INSERT INTO t SELECT i, randomblob(200) FROM r");
	exec(db, "RELEASE job; SAVEPOINT job");
	store_sqlite_fault_set(STORE_FAULT_FULL);
	int rc = sqlite3_exec(db, "UPDATE t SET v = v || x'00' WHERE k < 50", NULL, NULL, NULL);
	store_sqlite_fault_set(STORE_FAULT_NONE); /* space is back */
	assert_int_equal(rc, SQLITE_FULL);
	assert_false(sqlite3_get_autocommit(db)); /* the transaction goes on */
	exec(db, "ROLLBACK TO job; RELEASE job; COMMIT");
	assert_recovered(f, db, 4000);
}

/* A transaction rolled back with frames still gathered (spilled, never synced), then
 * another writer (the default VFS, as another process would be) commits in the log where
 * they would have gone: they must not be written over its frames later. */
static void test_rollback_then_another_writer(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = open_lh(f->db, 10, 0);
	exec(db, "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 999)"
	         " INSERT INTO t SELECT i, randomblob(300) FROM r");
	exec(db, "PRAGMA wal_checkpoint"); /* the first page is read from the database now */
	exec(db, "BEGIN IMMEDIATE");
	exec(db, "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 999)"
	         " INSERT INTO t SELECT i + 5000, randomblob(300) FROM r");
	exec(db, "ROLLBACK");
	sqlite3 *other = NULL;
	assert_int_equal(sqlite3_open_v2(f->db, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	exec(other, "PRAGMA synchronous=FULL");
	exec(other, "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 99)"
	            " INSERT INTO t SELECT i + 1000, zeroblob(300) FROM r");
	assert_int_equal(one_int(db, "SELECT count(*) FROM t"), 1100); /* reads the log */
	assert_intact(other);
	assert_same_rows(db, other);
	sqlite3_close(other);
	assert_recovered(f, db, 1100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_large_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spilled_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_write_keeps_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commits_with_checkpoints, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_disk_mid_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_then_another_writer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
