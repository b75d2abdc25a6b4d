/* fuzz_config.c: libFuzzer target for the config file parser: the input is the file's
 * text, loaded through config_load exactly as `labhook serve --config FILE` does (one temp
 * file per process, rewritten for each input). */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static int fd = -1;

static void remove_file(void)
{
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	char err[512] = "";

	if (fd < 0) {
		snprintf(path, sizeof path, "/tmp/labhook-fuzz-config-XXXXXX");
		fd = mkstemp(path);
		assert(fd >= 0);
		atexit(remove_file);
	}
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	char *argv[] = {"--config", path};
	if (config_load(&cfg, 2, argv, NULL, NULL, 0, NULL, err, sizeof err) == 0) {
		assert(cfg.listen_port >= 0 && cfg.listen_port <= 65535);
		assert(cfg.n_allow_net <= CFG_MAX_CIDR);
		assert(cfg.n_retry >= 1 && cfg.n_retry <= CFG_MAX_RETRY);
		assert(memchr(cfg.data_dir, '\0', sizeof cfg.data_dir) && cfg.data_dir[0]);
		assert(memchr(cfg.listen_host, '\0', sizeof cfg.listen_host));
		assert(memchr(cfg.public_url, '\0', sizeof cfg.public_url));
		assert(cfg.max_body > 0 && cfg.http_threads > 0);
		for (size_t i = 0; i < cfg.n_retry; i++)
			assert(cfg.retry_ms[i] >= 0);
	} else {
		/* Refused, naming the setting (or the line) at fault. */
		assert(err[0] && (strstr(err, "setting") || strstr(err, "line")));
	}
	return 0;
}
