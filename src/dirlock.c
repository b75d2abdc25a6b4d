/* dirlock.c: see dirlock.h. */
#define _DEFAULT_SOURCE /* flock */
#include "dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* The data directory's reason in words a person can act on: which setting moves it. */
#define DATA_DIR_HINT                                                                              \
	"set data-dir (--data-dir, LABHOOK_DATA_DIR or data-dir in the config file) to a"          \
	" directory this user can write"

enum lh_err dirlock_take(const char *data_dir, int *fd, long *holder, char *why, size_t whycap)
{
	char path[4096], text[32];
	if ((size_t)snprintf(path, sizeof path, "%s/labhook.lock", data_dir) >= sizeof path) {
		snprintf(why, whycap, "the data directory's path is too long; " DATA_DIR_HINT);
		return LH_EINVAL;
	}
	if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
		int err = errno;
		snprintf(why, whycap, "cannot create the data directory '%.1000s': %s%s; %s",
		         data_dir, strerror(err), err == ENOENT ? " (its parent must exist)" : "",
		         DATA_DIR_HINT);
		return LH_EIO;
	}
	int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (f < 0) {
		int err = errno;
		snprintf(why, whycap,
		         "cannot write in the data directory '%.1000s' (creating labhook.lock): %s"
		         " (labhook runs as uid %ld); %s",
		         data_dir, strerror(err), (long)geteuid(), DATA_DIR_HINT);
		return LH_EIO;
	}
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		ssize_t n = err == EWOULDBLOCK ? pread(f, text, sizeof text - 1, 0) : -1;
		close(f);
		if (err != EWOULDBLOCK) {
			snprintf(why, whycap, "cannot lock '%.1000s': %s; %s", path, strerror(err),
			         DATA_DIR_HINT);
			return LH_EIO;
		}
		text[n > 0 ? n : 0] = '\0';
		*holder = strtol(text, NULL, 10);
		snprintf(why, whycap,
		         "another labhook (pid %ld) is using the data directory %.1000s (it holds"
		         " %.1000s): stop it, or set data-dir to another directory",
		         *holder, data_dir, path);
		return LH_ECONFLICT;
	}
	/* The pid is only for messages: a failure to write it leaves the lock held. */
	int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
	if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)len, 0) != len)
		LOG(LOG_WARN, "main", "path=%s err=\"%s\" cannot write the pid into the lock file",
		    path, strerror(errno));
	*fd = f;
	return LH_OK;
}

void dirlock_release(int fd)
{
	if (fd >= 0)
		close(fd); /* closing the last descriptor releases the flock */
}
