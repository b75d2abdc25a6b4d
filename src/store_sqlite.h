/* store_sqlite.h: the embedded SQLite backend of store.h, the default: one process owns one
 * database file in its data directory.
 */
#ifndef LH_STORE_SQLITE_H
#define LH_STORE_SQLITE_H

#include "store.h"

/* Opens (creating and migrating as needed) the SQLite store in data_dir.
 * Returns owned, close with s->ops->close(s). */
enum lh_err store_sqlite_open(const char *data_dir, struct store **out);

/* Test hook of the SQLite backend (the store contract tests inject I/O faults through it;
 * the service never calls it). Every store does its file I/O through a shim over the
 * default VFS (see store_sqlite.c); store_sqlite_fault_set() makes that shim fail every
 * write (STORE_FAULT_FULL: as a full disk does; STORE_FAULT_IO: writes and syncs, as a
 * failing disk does) until set back to STORE_FAULT_NONE. Process-wide; safe from any
 * thread. */
enum store_fault { STORE_FAULT_NONE = 0, STORE_FAULT_FULL, STORE_FAULT_IO };
void store_sqlite_fault_set(enum store_fault f);

/* The name of that VFS (a static string), registered with SQLite by the first call (or the
 * first store opened): for the VFS's own test, which opens databases through it
 * directly. */
const char *store_sqlite_vfs(void);

#endif
