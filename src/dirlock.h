/* dirlock.h: the lock on a data directory, so that one process at a time works on the SQLite
 * store in it (`labhook serve` on SQLite for its lifetime, `labhook store copy` while it
 * reads). An exclusive flock on <data-dir>/labhook.lock: the kernel drops it when its holder
 * exits or dies (SIGKILL included), so a stale file never locks anyone out. The file holds
 * the holder's pid, for the message of whoever is refused. Main thread only.
 */
#ifndef LH_DIRLOCK_H
#define LH_DIRLOCK_H

#include <stddef.h>

#include "err.h"

/* Takes the lock of data_dir, creating the directory (0700) and the file as needed, and
 * writes this process's pid into it. On LH_OK *fd is the descriptor that holds the lock
 * (release with dirlock_release). LH_ECONFLICT if another process holds it: *holder gets
 * its pid (0 if the file does not say). LH_EIO if the directory or the file cannot be
 * made. On failure why (whycap bytes) gets a sentence for the person starting labhook:
 * the path, the system's reason and the setting to change. */
enum lh_err dirlock_take(const char *data_dir, int *fd, long *holder, char *why, size_t whycap);

/* Releases a lock dirlock_take gave (-1: none). */
void dirlock_release(int fd);

#endif
