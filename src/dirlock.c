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

enum lh_err dirlock_take(const char *data_dir, int *fd, long *holder)
{
	char path[4096], text[32];
	if ((size_t)snprintf(path, sizeof path, "%s/labhook.lock", data_dir) >= sizeof path)
		return LH_EINVAL;
	if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
		LOG(LOG_ERROR, "main", "dir=%s err=\"%s\" cannot create the data directory",
		    data_dir, strerror(errno));
		return LH_EIO;
	}
	int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (f < 0) {
		LOG(LOG_ERROR, "main", "path=%s err=\"%s\" cannot open the lock file", path,
		    strerror(errno));
		return LH_EIO;
	}
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		ssize_t n = err == EWOULDBLOCK ? pread(f, text, sizeof text - 1, 0) : -1;
		close(f);
		if (err != EWOULDBLOCK) {
			LOG(LOG_ERROR, "main", "path=%s err=\"%s\" cannot lock the data directory",
			    path, strerror(err));
			return LH_EIO;
		}
		text[n > 0 ? n : 0] = '\0';
		*holder = strtol(text, NULL, 10);
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
