/* store_copy.c: see store_copy.h. The source is <data-dir>/labhook.db, held under the data
 * directory's lock (dirlock.h) for the whole copy, so a node cannot start on it meanwhile and
 * a running one makes the copy refuse. The target's URI is shown with its password hidden.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_copy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "dirlock.h"
#include "store_pg.h"
#include "store_sqlite.h"

static void copy_usage(FILE *f)
{
	fprintf(
	    f, "Usage: labhook store copy [--data-dir DIR] [--config FILE] --to postgresql://...\n"
	       "Copies the SQLite store of a stopped node (DIR/labhook.db) into an empty\n"
	       "PostgreSQL database: everything (accounts, subscriptions, pending deliveries, the\n"
	       "token signing key and the admin key) in one transaction, checked by counts.\n"
	       "The target is --to URI; without it, the store setting when that is a\n"
	       "postgresql:// URI (--store, LABHOOK_STORE or the config file). The node must be\n"
	       "stopped: the copy takes the data directory's lock (DIR/labhook.lock).\n"
	       "Then start the nodes with --store URI (see docs/operations.md).\n");
}

/* The copy itself, once the source is locked: exit code 0 or 1. */
static int copy_run(const struct config *cfg, const char *uri, const char *shown)
{
	struct store *src = NULL, *dst = NULL;
	int64_t rows[STORE_COPY_NTABLES], total = 0;
	enum lh_err e;
	int rc = 1;

	if ((e = store_sqlite_open(cfg->data_dir, &src)) != LH_OK) {
		fprintf(stderr,
		        "labhook store copy: cannot open the SQLite store in %s: %s (see the"
		        " log above)\n",
		        cfg->data_dir, err_code(e));
		goto out;
	}
	if ((e = store_pg_open(uri, &dst)) != LH_OK) {
		fprintf(stderr, "labhook store copy: %s %s: %s (see the log above)\n",
		        e == LH_EUNAVAIL ? "cannot connect to" : "cannot use the database at",
		        shown, err_code(e));
		goto out;
	}
	if ((e = dst->ops->import_from(dst, src, rows)) != LH_OK) {
		if (e == LH_ECONFLICT)
			fprintf(
			    stderr,
			    "labhook store copy: the target database %s is not empty (the log above"
			    " names a table with rows): copy only into a new, empty database."
			    " Nothing was changed.\n",
			    shown);
		else
			fprintf(
			    stderr,
			    "labhook store copy: the copy failed: %s (see the log above). Nothing"
			    " was changed: the transaction was rolled back.\n",
			    err_code(e));
		goto out;
	}
	printf("copied %s/labhook.db into %s:\n  %-20s %10s\n", cfg->data_dir, shown, "table",
	       "rows");
	for (size_t i = 0; i < STORE_COPY_NTABLES; i++) {
		printf("  %-20s %10" PRId64 "\n", store_copy_tables[i].name, rows[i]);
		total += rows[i];
	}
	printf("done: %" PRId64 " rows copied and checked. Start the nodes on it, each with a data"
	       " directory of its own: labhook serve --store '%s' (or LABHOOK_STORE); do not start"
	       " the old node on %s again.\n",
	       total, shown, cfg->data_dir);
	rc = 0;
out:
	if (dst)
		dst->ops->close(dst);
	if (src)
		src->ops->close(src);
	return rc;
}

int store_copy_main(int argc, char **argv, char **env)
{
	struct config cfg;
	const char *rest[8], *to = NULL;
	size_t nrest = 0;
	char err[512], shown[CFG_PATH_CAP + 64], db[CFG_PATH_CAP + 16];
	int copy = 0, lock = -1;
	long holder = 0;
	struct stat stt;

	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			copy_usage(stdout);
			return 0;
		}
	if (config_load(&cfg, argc, argv, env, rest, COUNTOF(rest), &nrest, err, sizeof err) != 0) {
		fprintf(stderr, "labhook store: %s\n", err);
		return 2;
	}
	log_threshold = cfg.log_level;
	log_output = cfg.log_format;
	for (size_t i = 0; i < nrest; i++) {
		if (!strcmp(rest[i], "--to") && i + 1 < nrest)
			to = rest[++i];
		else if (!strncmp(rest[i], "--to=", 5))
			to = rest[i] + 5;
		else if (!strcmp(rest[i], "copy") && !copy)
			copy = 1;
		else {
			fprintf(stderr, "labhook store: unexpected '%.100s'\n", rest[i]);
			copy_usage(stderr);
			return 2;
		}
	}
	if (!copy) {
		copy_usage(stderr);
		return 2;
	}
	if (!to && strcmp(cfg.store, "sqlite") != 0)
		to = cfg.store;
	if (!to || (strncmp(to, "postgresql://", 13) != 0 && strncmp(to, "postgres://", 11) != 0)) {
		fprintf(stderr, "labhook store copy: name the target database with --to"
		                " postgresql://... (or the store setting)\n");
		return 2;
	}
	config_store_text(to, shown, sizeof shown);
	snprintf(db, sizeof db, "%s/labhook.db", cfg.data_dir);
	if (stat(db, &stt) != 0) {
		fprintf(stderr, "labhook store copy: no store in %s (%s: %s): nothing to copy\n",
		        cfg.data_dir, db, strerror(errno));
		return 1;
	}
	char why[2600];
	enum lh_err e = dirlock_take(cfg.data_dir, &lock, &holder, why, sizeof why);
	if (e == LH_ECONFLICT) {
		fprintf(
		    stderr,
		    "labhook store copy: the node using %s is running (pid %ld holds %s/labhook.lock):"
		    " stop the node first\n",
		    cfg.data_dir, holder, cfg.data_dir);
		return 1;
	}
	if (e != LH_OK) {
		fprintf(stderr, "labhook store copy: %s\n", why);
		return 1;
	}
	int rc = copy_run(&cfg, to, shown);
	dirlock_release(lock);
	return rc;
}
