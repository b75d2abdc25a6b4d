/* store_copy.h: `labhook store copy`, the way from one node to several: copies the SQLite
 * store of a stopped node into an empty PostgreSQL database (store_ops.import_from: one
 * transaction, checked by counts), so the nodes started on it go on where the single node
 * stopped. Single-threaded; runs in its own process.
 */
#ifndef LH_STORE_COPY_H
#define LH_STORE_COPY_H

/* `labhook store ...`; argv excludes "labhook store". Returns the process exit code: 0 once
 * the copy is committed, 1 when it failed (nothing changed), 2 for a bad command line. */
int store_copy_main(int argc, char **argv, char **env);

#endif
