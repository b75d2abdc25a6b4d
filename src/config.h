/* config.h: the one table of settings (name, type, default, range, help) from which
 * defaults, validation, --help and the effective-config log line all come.
 *
 * Precedence: default < config file < LABHOOK_* environment < command line. A list setting
 * set in a higher layer replaces the lower layer's list. A bad setting is refused with its
 * name and source. config_load is called once at start-up, before any thread exists; the
 * resulting struct is read-only afterwards.
 */
#ifndef LH_CONFIG_H
#define LH_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "log.h"

#define CFG_PATH_CAP  1024
#define CFG_MAX_CIDR  32
#define CFG_MAX_RETRY 32

struct config {
	char config_file[CFG_PATH_CAP];
	char data_dir[CFG_PATH_CAP];
	char store[CFG_PATH_CAP]; /* "sqlite" or a postgresql:// URI */
	int64_t lease_ms;         /* how long a node owns a subscription's deliveries unrenewed */
	char listen_host[256];
	int listen_port;
	char metrics_host[256]; /* "": no metrics listener */
	int metrics_port;
	struct cidr allow_net[CFG_MAX_CIDR];
	size_t n_allow_net;
	struct cidr trusted_proxy[CFG_MAX_CIDR];
	size_t n_trusted_proxy;
	char ca_file[CFG_PATH_CAP];
	int64_t retry_ms[CFG_MAX_RETRY];
	size_t n_retry;
	char public_url[512];
	enum log_level log_level;
	enum log_format log_format;
	int http_threads;
	int max_connections;
	int max_connections_per_ip;
	int64_t conn_timeout_ms;
	int64_t header_timeout_ms;
	int64_t body_timeout_ms;
	int64_t max_body;
	int64_t refresh_ttl_ms;
	int auth_max_failures;
	int64_t auth_lockout_ms;
	int demo;
	int64_t delivery_timeout_ms;
	int64_t connect_timeout_ms;
	int max_in_flight;
	int max_in_flight_per_endpoint;
	int64_t disable_after_ms;
	int64_t disable_min_span_ms;
	int delivery_window;
	int64_t retention_ms;       /* finished deliveries are kept this long; 0: for ever */
	int64_t report_max_size;    /* largest report document accepted (its route's body cap) */
	int64_t report_link_ttl_ms; /* how long a reportURL stays valid */
	int report_max_uploads;     /* document uploads buffered at once (503 beyond) */
};

/* Fills cfg from defaults, the file named by --config / LABHOOK_CONFIG, the environment and
 * argv (options only; argv[0] is not skipped). Unknown options are an error unless
 * `rest` is non-NULL, in which case non-setting arguments are collected into rest (borrowed
 * pointers into argv, at most rest_cap) and counted in *n_rest.
 * On error, writes one line naming the setting into err (cap bytes) and returns -1. */
int config_load(struct config *cfg, int argc, char **argv, char **env, const char **rest,
                size_t rest_cap, size_t *n_rest, char *err, size_t errcap);
/* Prints the settings table (name, default, help) for --help. */
void config_print_help(FILE *f);
/* Prints the settings table as the body of a man page's SETTINGS section (roff), from the
 * same rows as --help, so the page cannot drift from the code. */
void config_print_man(FILE *f);
/* Logs the effective configuration as one line, a key per setting (its name with '_' for
 * '-', durations in milliseconds), generated from the settings table; there are no secrets. */
void config_log_effective(const struct config *cfg);

/* The store setting (or any store URI) as it may be shown or logged: a password in it
 * (user:PASSWORD@ or password=...) becomes "***", and the rest is escaped (log_escape). */
void config_store_text(const char *v, char *out, size_t cap);

#endif
