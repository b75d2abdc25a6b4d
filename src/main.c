/* main.c: the labhook command line: `serve` runs the service, `admin` and `lab` drive the
 * admin API, `listen`, `trigger` and `client` are the developer's and integrator's tools
 * (cli_*.c), `store copy` moves a SQLite store into PostgreSQL (store_copy.c).
 *
 * serve builds the shared state (config, store, auth, admin key) on the main thread, starts
 * the HTTP threads, then waits for SIGTERM/SIGINT with those signals blocked in every thread
 * and stops in reverse order.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <systemd/sd-daemon.h>

#include "accounts.h"
#include "admin_cli.h"
#include "api.h"
#include "app.h"
#include "cli_client.h"
#include "cli_listen.h"
#include "cli_trigger.h"
#include "delivery.h"
#include "demo.h"
#include "dirlock.h"
#include "http.h"
#include "log.h"
#include "manpage.h"
#include "retention.h"
#include "store_copy.h"
#include "store_pg.h"
#include "store_sqlite.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "labhook %s: webhooks for a laboratory information system\n\n"
	    "Usage:\n"
	    "  labhook serve [settings]          run the service\n"
	    "  labhook admin [settings] COMMAND  manage accounts, labs and parties\n"
	    "                                    (labhook admin --help for the commands)\n"
	    "  labhook lab [settings] COMMAND    complete reports, delete bills, convert leads\n"
	    "                                    (labhook lab --help for the commands)\n"
	    "  labhook listen [settings] [--forward-to URL]\n"
	    "                                    receive, verify and print webhooks on this\n"
	    "                                    machine (with serve --demo; labhook listen --help)\n"
	    "  labhook trigger [settings] EVENT  make the demo lab emit EVENT\n"
	    "  labhook client [settings] COMMAND the integrator's API: login, subscriptions,\n"
	    "                                    deliveries ... (labhook client --help)\n"
	    "  labhook store copy [settings] --to postgresql://...\n"
	    "                                    copy a stopped node's SQLite store into an\n"
	    "                                    empty PostgreSQL database (the way to several\n"
	    "                                    nodes; labhook store copy --help)\n"
	    "  labhook version                   print the version\n"
	    "  labhook --help                    this text\n\n",
	    LABHOOK_VERSION);
	config_print_help(f);
}

/* Writes key to <data-dir>/admin.key (0600) through a temporary file and a rename, so a
 * reader sees the old key or the new one, never a part. */
static enum lh_err admin_key_write(const char *path, const char *key)
{
	char tmp[CFG_PATH_CAP + 32];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		LOG(LOG_ERROR, "admin", "path=%s err=\"%s\" cannot write the admin key", path,
		    strerror(errno));
		return LH_EIO;
	}
	size_t len = strlen(key);
	int ok = write(fd, key, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	ok = close(fd) == 0 && ok && rename(tmp, path) == 0;
	if (!ok) {
		LOG(LOG_ERROR, "admin", "path=%s err=\"%s\" cannot write the admin key", path,
		    strerror(errno));
		unlink(tmp);
		return LH_EIO;
	}
	return LH_OK;
}

/* <data-dir>/admin.key.new, if there is one, replaces the admin key in the store (for
 * every node: each takes it at its next start) and is then removed. */
static enum lh_err admin_key_replace(const struct config *cfg, struct store *st)
{
	char path[CFG_PATH_CAP + 16], key[128];
	snprintf(path, sizeof path, "%s/admin.key.new", cfg->data_dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? LH_OK : LH_EIO;
	ssize_t n = read(fd, key, sizeof key - 1);
	close(fd);
	key[n > 0 ? n : 0] = '\0';
	key[strcspn(key, "\r\n")] = '\0';
	if (strlen(key) < 16) {
		LOG(LOG_ERROR, "admin",
		    "path=%s the new admin key must have at least 16 characters", path);
		OPENSSL_cleanse(key, sizeof key);
		return LH_EINVAL;
	}
	enum lh_err e = st->ops->meta_set(st, "admin_key", key);
	OPENSSL_cleanse(key, sizeof key);
	if (e != LH_OK)
		return e;
	unlink(path);
	LOG(LOG_INFO, "admin", "path=%s replaced the admin key in the store", path);
	return LH_OK;
}

/* The admin key lives in the store, so every node sharing it accepts the same key; each
 * node keeps a copy in <data-dir>/admin.key (0600) for `labhook admin` and `labhook lab`.
 * On the first start the key is the file's if there is one (a store made before the key
 * moved into it), else a new random one. Keeps only its hash. */
static enum lh_err admin_key_load(const struct config *cfg, struct store *st,
                                  unsigned char hash[32])
{
	char path[CFG_PATH_CAP + 16], file_key[128] = "", key[128], stored[128];
	enum lh_err e;

	snprintf(path, sizeof path, "%s/admin.key", cfg->data_dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, file_key, sizeof file_key - 1);
		close(fd);
		file_key[n > 0 ? n : 0] = '\0';
		file_key[strcspn(file_key, "\r\n")] = '\0';
	} else if (errno != ENOENT) {
		LOG(LOG_ERROR, "admin", "path=%s err=\"%s\" cannot read the admin key", path,
		    strerror(errno));
		return LH_EIO;
	}
	if (strlen(file_key) >= 16)
		snprintf(key, sizeof key, "%s", file_key);
	else if (util_random_token("lhk_", 32, key, sizeof key) != LH_OK)
		return LH_EIO;
	if ((e = admin_key_replace(cfg, st)) != LH_OK)
		return e;
	e = st->ops->meta_get_or_put(st, "admin_key", key, stored, sizeof stored);
	OPENSSL_cleanse(key, sizeof key);
	if (e != LH_OK) {
		LOG(LOG_ERROR, "admin", "err=%s cannot read the admin key from the store",
		    err_code(e));
		return e;
	}
	if (strcmp(stored, file_key) != 0) {
		if ((e = admin_key_write(path, stored)) != LH_OK) {
			OPENSSL_cleanse(stored, sizeof stored);
			return e;
		}
		LOG(LOG_INFO, "admin", "path=%s %s (mode 0600)", path,
		    file_key[0] ? "replaced the admin key with the store's"
		                : "wrote the admin key");
	}
	util_sha256(stored, strlen(stored), hash);
	OPENSSL_cleanse(stored, sizeof stored);
	OPENSSL_cleanse(file_key, sizeof file_key);
	return LH_OK;
}

/* The key reportURL links are signed with: made at the first start (OpenSSL's CSPRNG) and
 * kept in the store's meta, so every node of a shared store signs and checks alike. */
static enum lh_err report_links_load(struct app *app)
{
	unsigned char raw[32];
	char fresh[65], stored[80];
	struct domain_links *l = &app->links;
	enum lh_err e = util_random(raw, sizeof raw);
	if (e != LH_OK)
		return e;
	util_hex(raw, sizeof raw, fresh);
	OPENSSL_cleanse(raw, sizeof raw);
	e = app->store->ops->meta_get_or_put(app->store, "report_link_key", fresh, stored,
	                                     sizeof stored);
	OPENSSL_cleanse(fresh, sizeof fresh);
	if (e != LH_OK)
		return e;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (strlen(stored) != 64 || sscanf(stored + 2 * i, "%2x", &v) != 1) {
			LOG(LOG_ERROR, "main", "the stored report link key is damaged");
			OPENSSL_cleanse(stored, sizeof stored);
			return LH_ESTORE;
		}
		l->key[i] = (unsigned char)v;
	}
	OPENSSL_cleanse(stored, sizeof stored);
	l->public_url = app->public_url;
	l->ttl_s = app->cfg.report_link_ttl_ms / 1000;
	return LH_OK;
}

/* This node's id on a shared store: <data-dir>/node.id, made at its first start, so a node
 * that restarts is the same node and takes its subscriptions back at once. */
static enum lh_err node_id_load(const char *data_dir, char out[ID_CAP])
{
	char path[CFG_PATH_CAP + 16], id[ID_CAP] = "";
	snprintf(path, sizeof path, "%s/node.id", data_dir);
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(id, sizeof id, f))
			id[0] = '\0';
		fclose(f);
		id[strcspn(id, "\r\n")] = '\0';
		if (util_id_valid(id, "node_")) {
			snprintf(out, ID_CAP, "%s", id);
			return LH_OK;
		}
		LOG(LOG_WARN, "main", "path=%s not a node id: a new one replaces it", path);
	}
	enum lh_err e = util_new_id("node_", id);
	if (e != LH_OK)
		return e;
	char tmp[CFG_PATH_CAP + 24];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t len = strlen(id);
	int ok = fd >= 0 && write(fd, id, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
	         fsync(fd) == 0;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		LOG(LOG_ERROR, "main", "path=%s err=\"%s\" cannot write the node id", path,
		    strerror(errno));
		unlink(tmp);
		return LH_EIO;
	}
	snprintf(out, ID_CAP, "%s", id);
	return LH_OK;
}

/* Opens the store the `store` setting names (the data directory exists: its lock is held). */
static enum lh_err store_open(const struct config *cfg, struct store **out)
{
	char node_id[ID_CAP];
	if (strcmp(cfg->store, "sqlite") == 0)
		return store_sqlite_open(cfg->data_dir, out);
	enum lh_err e = node_id_load(cfg->data_dir, node_id);
	if (e != LH_OK)
		return e;
	LOG(LOG_INFO, "main", "node=%s this node's id on the shared store", node_id);
	return store_pg_open_as(cfg->store, node_id, out);
}

/* Why serve cannot go on: "labhook: ..." for a person at a terminal, or in JSON mode an
 * error line like every other, so that everything serve writes to stderr is JSON. */
static void serve_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void serve_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (log_output == LOG_FORMAT_JSON)
		log_write(LOG_ERROR, "main", "%s", msg);
	else
		fprintf(stderr, "labhook: %s\n", msg);
}

/* Why the store did not open, with the setting that names it. The log line above holds
 * the backend's own words; for SQLite the file's access is asked again here for the
 * system's reason, since SQLite's "unable to open database file" does not say. */
static void store_fail(const struct config *cfg, enum lh_err e)
{
	char shown[CFG_PATH_CAP + 64], db[CFG_PATH_CAP + 16];
	if (strcmp(cfg->store, "sqlite") != 0) {
		config_store_text(cfg->store, shown, sizeof shown);
		serve_fail("cannot start: cannot open the store %s (%s; the line above says why):"
		           " check the store setting (--store, LABHOOK_STORE or store in the"
		           " config file) and that PostgreSQL runs there",
		           shown, err_code(e));
		return;
	}
	snprintf(db, sizeof db, "%s/labhook.db", cfg->data_dir);
	const char *reason =
	    access(db, R_OK | W_OK) != 0 && errno != ENOENT ? strerror(errno) : err_code(e);
	serve_fail("cannot start: cannot open the SQLite store '%s': %s (labhook runs as uid %ld;"
	           " the line above says more): give this user the data directory and its files,"
	           " or set data-dir (--data-dir, LABHOOK_DATA_DIR or data-dir in the config file)",
	           db, reason, (long)geteuid());
}

static int serve(int argc, char **argv, char **env)
{
	struct app app;
	struct http_server *srv = NULL, *msrv = NULL;
	struct delivery_engine *disp = NULL;
	struct retention *ret = NULL;
	char err[512], why[2600], mtext[300] = "";
	int port = 0, mport = 0, rc = 1, sig = 0, lock = -1;
	long holder = 0;
	sigset_t set;
	enum lh_err e;

	memset(&app, 0, sizeof app);
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
	if (config_load(&app.cfg, argc, argv, env, NULL, 0, NULL, err, sizeof err) != 0) {
		/* in the format read so far: json if a layer before the bad one said so */
		log_output = app.cfg.log_format;
		serve_fail("%s", err);
		return 2;
	}
	log_threshold = app.cfg.log_level;
	log_output = app.cfg.log_format;
	/* The database holds signing secrets and tokens: nobody else reads what we create. */
	umask(077);
	/* Block the stop signals before any thread exists, so only sigwait sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	config_log_effective(&app.cfg);
	/* One process per data directory: on SQLite a second one would be a second writer of
	 * the file (and `labhook store copy` must not read a store that is still changing); on
	 * PostgreSQL the directory names the node (node.id), and one node is one process. */
	if ((e = dirlock_take(app.cfg.data_dir, &lock, &holder, why, sizeof why)) != LH_OK) {
		serve_fail("cannot start: %s", why);
		goto out;
	}
	sd_notify(0, "STATUS=opening the store");
	if ((e = store_open(&app.cfg, &app.store)) != LH_OK) {
		store_fail(&app.cfg, e);
		goto out;
	}
	if ((e = admin_key_load(&app.cfg, app.store, app.admin_key_hash)) != LH_OK ||
	    (e = auth_new(app.store, &app.cfg, &app.auth)) != LH_OK) {
		serve_fail("cannot start: %s (see the log above)", err_code(e));
		goto out;
	}
	if (app.cfg.demo && (e = demo_trust(&app.cfg)) != LH_OK) {
		serve_fail("cannot start: cannot make the development CA in %s: %s (see the log"
		           " above)",
		           app.cfg.data_dir, err_code(e));
		goto out;
	}
	if ((e = delivery_start(app.store, &app.cfg, &disp)) != LH_OK) {
		serve_fail("cannot start the delivery engine: %s", err_code(e));
		goto out;
	}
	if (app.cfg.retention_ms > 0 &&
	    (e = retention_start(app.store, app.cfg.retention_ms, &ret)) != LH_OK) {
		serve_fail("cannot start the retention sweep: %s", err_code(e));
		goto out;
	}
	struct http_listen main_at = {app.cfg.listen_host, app.cfg.listen_port,
	                              app.cfg.http_threads, "listen"};
	if ((e = http_start(&app.cfg, &main_at, api_admit, api_dispatch, &app, &srv, &port, why,
	                    sizeof why)) != LH_OK) {
		serve_fail("cannot start: %s", why);
		goto out;
	}
	/* Scrapes are rare and quick: two threads are plenty. */
	struct http_listen metrics_at = {app.cfg.metrics_host, app.cfg.metrics_port, 2,
	                                 "metrics-listen"};
	if (app.cfg.metrics_host[0] &&
	    (e = http_start(&app.cfg, &metrics_at, api_metrics_admit, api_metrics_dispatch, &app,
	                    &msrv, &mport, why, sizeof why)) != LH_OK) {
		serve_fail("cannot start: %s", why);
		goto out;
	}
	if (msrv)
		snprintf(mtext, sizeof mtext, " metrics_listen=%s:%d", app.cfg.metrics_host, mport);
	if (app.cfg.public_url[0])
		snprintf(app.public_url, sizeof app.public_url, "%s", app.cfg.public_url);
	else
		snprintf(app.public_url, sizeof app.public_url, "http://%s%s%s:%d",
		         strchr(app.cfg.listen_host, ':') ? "[" : "", app.cfg.listen_host,
		         strchr(app.cfg.listen_host, ':') ? "]" : "", port);
	size_t ul = strlen(app.public_url);
	while (ul > 0 && app.public_url[ul - 1] == '/')
		app.public_url[--ul] = '\0';
	if ((e = report_links_load(&app)) != LH_OK) {
		fprintf(stderr, "labhook: cannot load the report link key: %s\n", err_code(e));
		goto out;
	}
	if (app.cfg.demo && (e = demo_seed(&app, port)) != LH_OK) {
		serve_fail("cannot create the demo accounts: %s", err_code(e));
		goto out;
	}
	__atomic_store_n(&app.ready, 1, __ATOMIC_RELEASE);
	LOG(LOG_INFO, "main", "listen=%s:%d version=%s store=%s%s ready", app.cfg.listen_host, port,
	    LABHOOK_VERSION, app.store->ops->name, mtext);
	/* Under systemd (Type=notify): started means the port answers and the store is open.
	 * Without NOTIFY_SOCKET these calls do nothing. */
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s:%d (store %s)", app.cfg.listen_host, port,
	           app.store->ops->name);
	while (sigwait(&set, &sig) != 0)
		;
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing requests and deliveries in flight");
	LOG(LOG_INFO, "main", "signal=%d stopping", sig);
	rc = 0;
out:
	http_stop(msrv);
	http_stop(srv);      /* no new requests, so no new deliveries */
	delivery_stop(disp); /* in-flight attempts finish or stay pending */
	retention_stop(ret); /* its batch in hand commits; the next start sweeps on */
	auth_free(app.auth);
	if (app.store)
		app.store->ops->close(app.store);
	dirlock_release(lock); /* after the store's last write */
	curl_global_cleanup();
	if (rc == 0)
		LOG(LOG_INFO, "main", "stopped cleanly");
	return rc;
}

int main(int argc, char **argv, char **env)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("labhook %s\n", LABHOOK_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "serve"))
		return serve(argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "admin") || !strcmp(argv[1], "lab"))
		return admin_cli_main(argv[1], argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "client"))
		return cli_client_main(argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "listen"))
		return cli_listen_main(argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "trigger"))
		return cli_trigger_main(argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "store"))
		return store_copy_main(argc - 2, argv + 2, env);
	if (!strcmp(argv[1], "man")) { /* hidden: the package build makes labhook.8 with it */
		manpage_print(stdout);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	fprintf(stderr, "labhook: unknown command '%s' (try labhook --help)\n", argv[1]);
	return 2;
}
