/* store_pg.h: the PostgreSQL backend of store.h, for several labhook nodes sharing one
 * database (libpq; PostgreSQL 15).
 *
 * Other nodes change what is in the database, so little is cached: labs (they never change
 * once created), and accounts for at most 0.5 s from their read (another node's change,
 * such as a rotated secret, is seen within that; this node's own at once). Subscriptions
 * and everything else are read from the database every time. subs_version is bumped by this store's
 * own subscription changes and by every NOTIFY labhook_subs another node's change sends (and after
 * every reconnection of the listener, since notifications are lost meanwhile). The listener needs a
 * direct, long-lived session: LISTEN does not work through PgBouncer's transaction pooling. When
 * the database cannot be reached, operations fail fast with LH_EUNAVAIL and the store reconnects by
 * itself once it is back.
 */
#ifndef LH_STORE_PG_H
#define LH_STORE_PG_H

#include "store.h"

/* Connects to the database at uri (a libpq URI or key=value string), migrating its schema
 * as needed. Refuses (LH_ESTORE, with a log line) a server with synchronous_commit=off;
 * LH_EUNAVAIL when the database cannot be reached. Returns owned, close with
 * s->ops->close(s). */
enum lh_err store_pg_open(const char *uri, struct store **out);
/* The same as the node node_id (an id with the prefix "node_"; a node keeps its id across
 * restarts in its data directory). The leases an earlier process of this node held lapse
 * at once (that process is gone: the data directory's lock says so), so the node takes its
 * subscriptions back at its first lease_sync instead of a lease-time later, under new
 * epochs. store_pg_open uses a new random id. */
enum lh_err store_pg_open_as(const char *uri, const char *node_id, struct store **out);

/* Test hook: drops everything labhook created in the database at uri (its whole public
 * schema), so a contract test starts on an empty database. The service never calls it. */
enum lh_err store_pg_reset_for_tests(const char *uri);

#endif
