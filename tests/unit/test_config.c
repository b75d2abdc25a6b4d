/* test_config.c: config.h: defaults, the four layers (default < file < environment <
 * command line), option forms, list replacement, refusal of bad values naming the setting,
 * and the `rest` collection mode. Config files are written to mkstemp files and removed by
 * the test that made them. Single-threaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "config.h"
#include "retention.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const int64_t default_retry_ms[] = {
    0,       5000,     30000,    120000,   600000,   1800000,
    3600000, 10800000, 21600000, 43200000, 86400000, 86400000,
};

/* Writes text to a new temporary file and puts its path into path (64 bytes). */
static void write_temp(char path[64], const char *text)
{
	snprintf(path, 64, "/tmp/labhook-cfg-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Runs config_load without rest collection; argv and env are NULL-terminated arrays. */
static int load(struct config *cfg, const char *const *argv, const char *const *env, char *err,
                size_t errcap)
{
	int argc = 0;
	while (argv && argv[argc])
		argc++;
	err[0] = '\0';
	return config_load(cfg, argc, (char **)argv, (char **)env, NULL, 0, NULL, err, errcap);
}

static void cidr_text(const struct cidr *c, char *out, size_t cap)
{
	char a[64];
	assert_non_null(inet_ntop(c->family, c->addr, a, sizeof a));
	snprintf(out, cap, "%s/%d", a, c->prefix);
}

static void check_allow(const struct config *cfg, const char *const *want, size_t n)
{
	if (cfg->n_allow_net != n)
		fail_msg("n_allow_net %zu, want %zu", cfg->n_allow_net, n);
	for (size_t i = 0; i < n; i++) {
		char got[80];
		cidr_text(&cfg->allow_net[i], got, sizeof got);
		if (strcmp(got, want[i]) != 0)
			fail_msg("allow_net[%zu] = %s, want %s", i, got, want[i]);
	}
}

static void test_defaults(void **state)
{
	static const char *const argv[] = {NULL};
	static const char *const env[] = {NULL};
	struct config cfg;
	char err[256];
	(void)state;

	memset(&cfg, 0xa5, sizeof cfg);
	assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
	assert_string_equal(cfg.config_file, "");
	assert_string_equal(cfg.data_dir, "./var");
	assert_string_equal(cfg.listen_host, "127.0.0.1");
	assert_int_equal(cfg.listen_port, 8080);
	assert_string_equal(cfg.metrics_host, ""); /* no metrics listener unless asked */
	assert_int_equal(cfg.n_allow_net, 0);
	assert_string_equal(cfg.ca_file, "");
	assert_int_equal(cfg.n_retry, N_ELEMS(default_retry_ms));
	for (size_t i = 0; i < N_ELEMS(default_retry_ms); i++)
		if (cfg.retry_ms[i] != default_retry_ms[i])
			fail_msg("retry_ms[%zu] = %lld, want %lld", i, (long long)cfg.retry_ms[i],
			         (long long)default_retry_ms[i]);
	assert_string_equal(cfg.public_url, "");
	assert_int_equal(cfg.log_level, LOG_INFO);
	assert_int_equal(cfg.log_format, LOG_FORMAT_TEXT);
	assert_int_equal(cfg.max_body, 1048576);                   /* API.md 0: 1 MiB */
	assert_int_equal(cfg.refresh_ttl_ms, 30LL * 86400 * 1000); /* API.md 2: 30 days */
	assert_int_equal(cfg.demo, 0);
	assert_int_equal(cfg.retention_ms, 30LL * 86400 * 1000);
	assert_int_equal(cfg.report_max_size, 10 * 1048576);          /* issue 12: 10 MiB */
	assert_int_equal(cfg.report_link_ttl_ms, 7LL * 86400 * 1000); /* issue 12: 7 days */
	assert_in_range(cfg.report_max_uploads, 1, 1024);
	/* Tuning values are not part of the contract; they only have to be in range (the
	 * 0xa5 fill would show through if a field were left unset). */
	assert_in_range(cfg.http_threads, 1, 64);
	assert_in_range(cfg.max_connections, 1, 100000);
	assert_in_range(cfg.conn_timeout_ms, 1000, 3600 * 1000);
	assert_in_range(cfg.auth_max_failures, 1, 100000);
	assert_in_range(cfg.auth_lockout_ms, 1000, 86400 * 1000);

	/* NULL env is the same as an empty one. */
	assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
	assert_int_equal(cfg.listen_port, 8080);
}

static void test_precedence(void **state)
{
	char path[64], cfgarg[96], err[512];
	struct config cfg;
	(void)state;

	write_temp(path, "# labhook settings\n"
	                 "\n"
	                 "   # indented comment\n"
	                 "listen = 127.0.0.1:1111\n"
	                 "data-dir=/srv/labhook\n"
	                 "http-threads 4\n"
	                 "\tlog-level   =   debug   \n"
	                 "log-format = json\n"
	                 "max-body = 2MiB\r\n"
	                 "retry-schedule = 0, 1s, 2s\n");
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);

	/* file over defaults */
	{
		const char *argv[] = {cfgarg, NULL};
		const char *env[] = {NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_string_equal(cfg.config_file, path);
		assert_int_equal(cfg.listen_port, 1111);
		assert_string_equal(cfg.data_dir, "/srv/labhook");
		assert_int_equal(cfg.http_threads, 4);
		assert_int_equal(cfg.log_level, LOG_DEBUG);
		assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
		assert_int_equal(cfg.max_body, 2 * 1048576);
		assert_int_equal(cfg.n_retry, 3);
		assert_int_equal(cfg.retry_ms[0], 0);
		assert_int_equal(cfg.retry_ms[1], 1000);
		assert_int_equal(cfg.retry_ms[2], 2000);
		assert_int_equal(cfg.max_connections, 1024); /* not in the file: default */
	}
	/* environment over file */
	{
		const char *argv[] = {cfgarg, NULL};
		const char *env[] = {"HOME=/root", "LABHOOK_LISTEN=127.0.0.1:2222",
		                     "LABHOOK_HTTP_THREADS=8", "LABHOOK_LISTENX=junk", NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_int_equal(cfg.listen_port, 2222);
		assert_int_equal(cfg.http_threads, 8);
		assert_string_equal(cfg.data_dir, "/srv/labhook"); /* still the file's */
	}
	/* command line over environment */
	{
		const char *argv[] = {"--listen", "127.0.0.1:3333", cfgarg, NULL};
		const char *env[] = {"LABHOOK_LISTEN=127.0.0.1:2222", NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_int_equal(cfg.listen_port, 3333);
		assert_int_equal(cfg.http_threads, 4); /* the file's: env does not set it here */
	}
	/* the file named by the environment, in the "--config PATH" form too */
	{
		char envcfg[96];
		snprintf(envcfg, sizeof envcfg, "LABHOOK_CONFIG=%s", path);
		const char *argv[] = {NULL};
		const char *env[] = {envcfg, NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_int_equal(cfg.listen_port, 1111);
		assert_string_equal(cfg.config_file, path);

		const char *argv2[] = {"--config", path, "--data-dir", "/x", NULL};
		const char *env2[] = {NULL};
		assert_int_equal(load(&cfg, argv2, env2, err, sizeof err), 0);
		assert_int_equal(cfg.listen_port, 1111);
		assert_string_equal(cfg.data_dir, "/x");
	}
	/* the last of several values on one layer wins */
	{
		const char *argv[] = {"--listen=127.0.0.1:1", "--listen", "localhost:2", NULL};
		const char *env[] = {NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_int_equal(cfg.listen_port, 2);
		assert_string_equal(cfg.listen_host, "localhost");
	}
	/* metrics-listen: an address like listen, and empty turns it off again */
	{
		const char *argv[] = {"--metrics-listen", "[::1]:9464", NULL};
		const char *env[] = {NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_string_equal(cfg.metrics_host, "::1");
		assert_int_equal(cfg.metrics_port, 9464);
		const char *off[] = {"--metrics-listen", "127.0.0.1:9464",
		                     "--metrics-listen=", NULL};
		assert_int_equal(load(&cfg, off, env, err, sizeof err), 0);
		assert_string_equal(cfg.metrics_host, "");
	}
	unlink(path);
}

struct form_case {
	const char *argv[6];
	const char *env[3];
	int listen_port;
	int demo;
	int64_t conn_timeout_ms;
};

static void test_option_forms(void **state)
{
	static const struct form_case cases[] = {
	    {{"--listen=127.0.0.1:9", NULL}, {NULL}, 9, 0, 30000},
	    {{"--listen", "127.0.0.1:9", NULL}, {NULL}, 9, 0, 30000},
	    {{"--listen", "localhost:0", NULL}, {NULL}, 0, 0, 30000},
	    {{"--demo", NULL}, {NULL}, 8080, 1, 30000},
	    /* a bare bool flag does not swallow the next option */
	    {{"--demo", "--listen", "127.0.0.1:7", NULL}, {NULL}, 7, 1, 30000},
	    {{"--demo=false", NULL}, {NULL}, 8080, 0, 30000},
	    {{"--demo=yes", NULL}, {NULL}, 8080, 1, 30000},
	    {{"--demo=0", NULL}, {"LABHOOK_DEMO=true", NULL}, 8080, 0, 30000},
	    {{NULL}, {"LABHOOK_DEMO=on", NULL}, 8080, 1, 30000},
	    {{"--conn-timeout", "1m", NULL}, {NULL}, 8080, 0, 60000},
	    {{"--conn-timeout=1500ms", NULL}, {"LABHOOK_CONN_TIMEOUT=2s", NULL}, 8080, 0, 1500},
	    {{NULL}, {"LABHOOK_CONN_TIMEOUT=2s", NULL}, 8080, 0, 2000},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		struct config cfg;
		char err[256];
		if (load(&cfg, cases[i].argv, cases[i].env, err, sizeof err) != 0)
			fail_msg("case %zu (%s): refused: %s", i,
			         cases[i].argv[0] ? cases[i].argv[0] : cases[i].env[0], err);
		if (cfg.listen_port != cases[i].listen_port || cfg.demo != cases[i].demo ||
		    cfg.conn_timeout_ms != cases[i].conn_timeout_ms)
			fail_msg("case %zu: port %d demo %d timeout %lld, want %d %d %lld", i,
			         cfg.listen_port, cfg.demo, (long long)cfg.conn_timeout_ms,
			         cases[i].listen_port, cases[i].demo,
			         (long long)cases[i].conn_timeout_ms);
	}
}

static void test_allow_net_lists(void **state)
{
	struct config cfg;
	char err[256], path[64];
	(void)state;

	/* repeated on the command line: accumulates, comma lists too */
	{
		const char *argv[] = {"--allow-net",
		                      "10.0.0.0/8",
		                      "--allow-net=::1/128",
		                      "--allow-net",
		                      "192.168.0.0/16,127.0.0.0/8",
		                      NULL};
		const char *env[] = {NULL};
		static const char *const want[] = {"10.0.0.0/8", "::1/128", "192.168.0.0/16",
		                                   "127.0.0.0/8"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	/* from the environment alone */
	{
		const char *argv[] = {NULL};
		const char *env[] = {"LABHOOK_ALLOW_NET=10.0.0.0/8,172.16.0.0/12", NULL};
		static const char *const want[] = {"10.0.0.0/8", "172.16.0.0/12"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	/* a command-line list replaces the environment's */
	{
		const char *argv[] = {"--allow-net", "127.0.0.0/8", NULL};
		const char *env[] = {"LABHOOK_ALLOW_NET=10.0.0.0/8,172.16.0.0/12", NULL};
		static const char *const want[] = {"127.0.0.0/8"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	/* lines in the file accumulate; the environment replaces them; the CLI replaces both */
	write_temp(path, "allow-net = 10.0.0.0/8\nallow-net = fc00::/7\n");
	{
		const char *argv[] = {"--config", path, NULL};
		const char *env[] = {NULL};
		static const char *const want[] = {"10.0.0.0/8", "fc00::/7"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	{
		const char *argv[] = {"--config", path, NULL};
		const char *env[] = {"LABHOOK_ALLOW_NET=192.168.0.0/16", NULL};
		static const char *const want[] = {"192.168.0.0/16"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	{
		const char *argv[] = {"--config",    path,          "--allow-net", "::1/128",
		                      "--allow-net", "127.0.0.0/8", NULL};
		const char *env[] = {"LABHOOK_ALLOW_NET=192.168.0.0/16", NULL};
		static const char *const want[] = {"::1/128", "127.0.0.0/8"};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		check_allow(&cfg, want, N_ELEMS(want));
	}
	/* an empty value clears the list below it */
	{
		const char *argv[] = {"--config", path, "--allow-net=", NULL};
		const char *env[] = {NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
		assert_int_equal(cfg.n_allow_net, 0);
	}
	unlink(path);
}

struct bad_case {
	const char *argv[4];
	const char *env[2];
	const char *want1; /* substrings the error must contain */
	const char *want2;
};

static void test_bad_values(void **state)
{
	static const struct bad_case cases[] = {
	    {{"--listen", "nope", NULL}, {NULL}, "listen", "command line"},
	    {{"--listen", "127.0.0.1", NULL}, {NULL}, "listen", "HOST:PORT"},
	    {{"--listen", "127.0.0.1:", NULL}, {NULL}, "listen", "port"},
	    {{"--listen", "127.0.0.1:65536", NULL}, {NULL}, "listen", "port"},
	    {{"--listen", "127.0.0.1:80x", NULL}, {NULL}, "listen", "port"},
	    {{"--listen", "example.com:80", NULL}, {NULL}, "listen", "host"},
	    {{"--listen", ":80", NULL}, {NULL}, "listen", "HOST:PORT"},
	    {{"--metrics-listen", "9464", NULL}, {NULL}, "metrics-listen", "HOST:PORT"},
	    {{"--metrics-listen", "prometheus.internal:9464", NULL},
	     {NULL},
	     "metrics-listen",
	     "host"},
	    {{"--metrics-listen", "127.0.0.1:99999", NULL}, {NULL}, "metrics-listen", "port"},
	    {{"--http-threads", "0", NULL}, {NULL}, "http-threads", "between 1 and 64"},
	    {{"--http-threads", "65", NULL}, {NULL}, "http-threads", "between"},
	    {{"--http-threads", "two", NULL}, {NULL}, "http-threads", "integer"},
	    {{"--http-threads", "99999999999999999999", NULL}, {NULL}, "http-threads", NULL},
	    {{"--retry-schedule", "5x", NULL}, {NULL}, "retry-schedule", "5x"},
	    {{"--retry-schedule", "", NULL}, {NULL}, "retry-schedule", NULL},
	    {{"--retry-schedule", "0,,5s", NULL}, {NULL}, "retry-schedule", NULL},
	    {{"--retry-schedule", "8d", NULL}, {NULL}, "retry-schedule", "8d"},
	    {{"--retry-schedule",
	      "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", NULL},
	     {NULL},
	     "retry-schedule",
	     NULL},
	    {{"--allow-net", "10.0.0.0/99", NULL}, {NULL}, "allow-net", "10.0.0.0/99"},
	    {{"--allow-net", "10.0.0.0/8,,::1", NULL}, {NULL}, "allow-net", NULL},
	    {{"--allow-net", "localhost", NULL}, {NULL}, "allow-net", "localhost"},
	    {{"--ca-file", "/nonexistent", NULL}, {NULL}, "ca-file", "/nonexistent"},
	    {{"--log-level", "loud", NULL}, {NULL}, "log-level", NULL},
	    {{"--log-level", "INFO", NULL}, {NULL}, "log-level", NULL},
	    {{"--log-format", "xml", NULL}, {NULL}, "log-format", "text or json"},
	    {{"--log-format", "JSON", NULL}, {NULL}, "log-format", NULL},
	    {{"--max-body", "1GiB", NULL}, {NULL}, "max-body", NULL},
	    {{"--max-body", "1023", NULL}, {NULL}, "max-body", NULL},
	    {{"--max-body", "-5", NULL}, {NULL}, "max-body", NULL},
	    {{"--max-body", "65m", NULL}, {NULL}, "max-body", NULL},
	    {{"--report-max-size", "1GiB", NULL}, {NULL}, "report-max-size", NULL},
	    {{"--report-max-size", "10", NULL}, {NULL}, "report-max-size", NULL},
	    {{"--report-link-ttl", "0s", NULL}, {NULL}, "report-link-ttl", NULL},
	    {{"--report-link-ttl", "400d", NULL}, {NULL}, "report-link-ttl", NULL},
	    {{"--report-max-uploads", "0", NULL}, {NULL}, "report-max-uploads", NULL},
	    {{"--conn-timeout", "1ms", NULL}, {NULL}, "conn-timeout", NULL},
	    {{"--conn-timeout", "2h", NULL}, {NULL}, "conn-timeout", NULL},
	    {{"--refresh-ttl", "366d", NULL}, {NULL}, "refresh-ttl", NULL},
	    {{"--retention", "-1s", NULL}, {NULL}, "retention", "duration"},
	    {{"--retention", "forever", NULL}, {NULL}, "retention", "duration"},
	    {{"--retention", "3651d", NULL}, {NULL}, "retention", "between"},
	    {{"--auth-max-failures", "0", NULL}, {NULL}, "auth-max-failures", NULL},
	    {{"--auth-lockout", "soon", NULL}, {NULL}, "auth-lockout", NULL},
	    {{"--public-url", "ftp://x", NULL}, {NULL}, "public-url", NULL},
	    {{"--data-dir=", NULL}, {NULL}, "data-dir", "empty"},
	    {{"--demo=maybe", NULL}, {NULL}, "demo", NULL},
	    {{"--bogus", NULL}, {NULL}, "--bogus", NULL},
	    {{"--bogus=1", NULL}, {NULL}, "--bogus", NULL},
	    {{"-l", NULL}, {NULL}, "-l", NULL},
	    {{"serve", NULL}, {NULL}, "serve", NULL}, /* positional without rest collection */
	    {{"--listen", NULL}, {NULL}, "listen", "value"},
	    {{"--config", NULL}, {NULL}, "config", NULL},
	    {{"--config", "/nonexistent/labhook.conf", NULL}, {NULL}, "config", "/nonexistent"},
	    {{NULL}, {"LABHOOK_HTTP_THREADS=zero", NULL}, "http-threads", "LABHOOK_HTTP_THREADS"},
	    {{NULL}, {"LABHOOK_LISTEN=nope", NULL}, "listen", "environment"},
	    {{NULL}, {"LABHOOK_CONFIG=/nonexistent/x.conf", NULL}, "config", "/nonexistent"},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct bad_case *c = &cases[i];
		struct config cfg;
		char err[512];
		const char *what = c->argv[0] ? c->argv[0] : c->env[0];

		memset(err, 0, sizeof err);
		int rc = load(&cfg, c->argv, c->env, err, sizeof err);
		if (rc != -1)
			fail_msg("case %zu (%s %s): accepted, want refusal", i, what,
			         c->argv[0] && c->argv[1] ? c->argv[1] : "");
		if (strchr(err, '\n') != NULL || err[0] == '\0')
			fail_msg("case %zu (%s): error is not one line: '%s'", i, what, err);
		if (!strstr(err, c->want1) || (c->want2 && !strstr(err, c->want2)))
			fail_msg("case %zu (%s): error '%s' does not name '%s'%s%s", i, what, err,
			         c->want1, c->want2 ? " and " : "", c->want2 ? c->want2 : "");
	}
}

static void test_bad_file(void **state)
{
	char path[64], cfgarg[96], err[512];
	struct config cfg;
	const char *env[] = {NULL};
	(void)state;

	/* an unknown key names the file and line */
	write_temp(path, "# settings\nlisten = 127.0.0.1:1\nbogus = 1\n");
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
	{
		const char *argv[] = {cfgarg, NULL};
		char where[96];
		snprintf(where, sizeof where, "%s:3", path);
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
		if (!strstr(err, "bogus") || !strstr(err, where))
			fail_msg("error '%s' does not name 'bogus' and '%s'", err, where);
	}
	unlink(path);

	/* a bad value names the setting, the file and line */
	write_temp(path, "\n\nhttp-threads = 4\nlisten = nowhere\n");
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
	{
		const char *argv[] = {cfgarg, NULL};
		char where[96];
		snprintf(where, sizeof where, "%s:4", path);
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
		if (!strstr(err, "listen") || !strstr(err, where) || !strstr(err, "config file"))
			fail_msg("error '%s' does not name 'listen' and '%s'", err, where);
	}
	unlink(path);

	/* a file cannot name another file */
	write_temp(path, "config = /etc/passwd\n");
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
	{
		const char *argv[] = {cfgarg, NULL};
		char where[96];
		snprintf(where, sizeof where, "%s:1", path);
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
		if (!strstr(err, "config") || !strstr(err, where))
			fail_msg("error '%s' does not name 'config' and '%s'", err, where);
	}
	unlink(path);

	/* a bad file value is refused even when the command line would override it */
	write_temp(path, "http-threads = 0\n");
	{
		const char *argv[] = {"--config", path, "--http-threads", "3", NULL};
		assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
		assert_non_null(strstr(err, "http-threads"));
	}
	unlink(path);
}

/* Lines are read whole: text past a buffer's end never becomes a line of its own, and a NUL
 * does not hide the rest of a line. Both are refused, naming the line. */
static void test_file_lines(void **state)
{
	char path[64], cfgarg[96], err[512], where[96];
	struct config cfg;
	const char *env[] = {NULL};
	static char text[8192];
	(void)state;

	/* a comment whose tail (past 4095 bytes) reads like a setting */
	memset(text, 'x', sizeof text);
	text[0] = '#';
	snprintf(text + 4095, sizeof text - 4095, "demo = true\n");
	write_temp(path, text);
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
	snprintf(where, sizeof where, "%s:1", path);
	{
		const char *argv[] = {cfgarg, NULL};
		int rc = load(&cfg, argv, env, err, sizeof err);
		if (rc == 0 && cfg.demo)
			fail_msg("the tail of a long comment line switched demo on");
		if (rc != -1 || !strstr(err, "longer") || !strstr(err, where))
			fail_msg("rc %d error '%s': want a refusal naming '%s'", rc, err, where);
	}
	unlink(path);

	/* a NUL inside a line */
	snprintf(path, 64, "/tmp/labhook-cfg-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char nul[] = "log-level = warn\0junk\n";
	assert_int_equal(write(fd, nul, sizeof nul - 1), (ssize_t)(sizeof nul - 1));
	close(fd);
	snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
	snprintf(where, sizeof where, "%s:1", path);
	{
		const char *argv[] = {cfgarg, NULL};
		int rc = load(&cfg, argv, env, err, sizeof err);
		if (rc != -1 || !strstr(err, "NUL") || !strstr(err, where))
			fail_msg("rc %d error '%s': want a refusal naming the NUL and '%s'", rc,
			         err, where);
	}
	unlink(path);
}

static void test_ca_file_readable(void **state)
{
	char path[64], err[256];
	struct config cfg;
	(void)state;

	write_temp(path, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
	const char *argv[] = {"--ca-file", path, NULL};
	const char *env[] = {NULL};
	assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
	assert_string_equal(cfg.ca_file, path);
	unlink(path);
	/* gone now: refused */
	assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
	assert_non_null(strstr(err, "ca-file"));
	/* a FIFO is refused at once: opening one would wait for a writer forever */
	assert_int_equal(mkfifo(path, 0600), 0);
	alarm(10); /* a hang fails the test instead of reaching ctest's timeout */
	int rc = load(&cfg, argv, env, err, sizeof err);
	alarm(0);
	unlink(path);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "not a file"));
}

static void test_rest_collection(void **state)
{
	struct config cfg;
	char err[256];
	const char *rest[4];
	size_t n_rest = 99;
	(void)state;

	const char *argv[] = {"serve",  "--listen", "127.0.0.1:0",  "extra",
	                      "--demo", "--bogus",  "--data-dir=/d"};
	const char *env[] = {"LABHOOK_HTTP_THREADS=3", NULL};
	int argc = (int)N_ELEMS(argv);

	err[0] = '\0';
	assert_int_equal(config_load(&cfg, argc, (char **)argv, (char **)env, rest, N_ELEMS(rest),
	                             &n_rest, err, sizeof err),
	                 0);
	assert_int_equal(n_rest, 3);
	assert_ptr_equal(rest[0], argv[0]); /* borrowed pointers into argv */
	assert_string_equal(rest[1], "extra");
	assert_string_equal(rest[2], "--bogus");
	/* settings among them were still applied */
	assert_int_equal(cfg.listen_port, 0);
	assert_int_equal(cfg.demo, 1);
	assert_string_equal(cfg.data_dir, "/d");
	assert_int_equal(cfg.http_threads, 3);

	/* bad settings are still refused in rest mode */
	const char *argv2[] = {"serve", "--listen", "nope"};
	assert_int_equal(config_load(&cfg, 3, (char **)argv2, (char **)env, rest, N_ELEMS(rest),
	                             &n_rest, err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "listen"));

	/* more arguments than rest_cap is an error, not an overflow */
	const char *argv3[] = {"a", "b", "c"};
	const char *small[2] = {NULL, NULL};
	assert_int_equal(
	    config_load(&cfg, 3, (char **)argv3, (char **)env, small, 2, &n_rest, err, sizeof err),
	    -1);
	assert_non_null(strstr(err, "too many"));

	/* nothing to collect */
	const char *argv4[] = {"--demo"};
	assert_int_equal(config_load(&cfg, 1, (char **)argv4, (char **)env, rest, N_ELEMS(rest),
	                             &n_rest, err, sizeof err),
	                 0);
	assert_int_equal(n_rest, 0);
}

static void test_error_fits_small_buffer(void **state)
{
	struct config cfg;
	char err[16];
	const char *argv[] = {"--listen", "nope", NULL};
	const char *env[] = {"LABHOOK_HTTP_THREADS=zero", NULL};
	(void)state;

	memset(err, 'x', sizeof err);
	assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), -1);
	assert_true(memchr(err, '\0', sizeof err) != NULL);
	assert_int_equal(strncmp(err, "bad setting lis", 15), 0);
	memset(err, 'x', sizeof err);
	assert_int_equal(load(&cfg, argv, env, err, sizeof err), -1);
	assert_true(memchr(err, '\0', sizeof err) != NULL);
}

/* retention: 0 keeps everything; a period of seconds is allowed (tests), and the sweep's
 * interval follows it: half of it, between 1 s and a minute. */
static void test_retention(void **state)
{
	static const struct {
		const char *v;
		int64_t ms, interval;
	} cases[] = {
	    {"0", 0, 1000},        {"3s", 3000, 1500},
	    {"1s", 1000, 1000},    {"30d", 30LL * 86400 * 1000, 60000},
	    {"90s", 90000, 45000},
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const char *argv[] = {"--retention", cases[i].v, NULL};
		struct config cfg;
		char err[256];
		assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
		assert_int_equal(cfg.retention_ms, cases[i].ms);
		assert_int_equal(retention_interval_ms(cfg.retention_ms), cases[i].interval);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),        cmocka_unit_test(test_precedence),
	    cmocka_unit_test(test_option_forms),    cmocka_unit_test(test_allow_net_lists),
	    cmocka_unit_test(test_bad_values),      cmocka_unit_test(test_bad_file),
	    cmocka_unit_test(test_file_lines),      cmocka_unit_test(test_ca_file_readable),
	    cmocka_unit_test(test_rest_collection), cmocka_unit_test(test_error_fits_small_buffer),
	    cmocka_unit_test(test_retention),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
