/* retention.h: the background sweep that removes what the `retention` setting lets go.
 *
 * One thread (lh-retention) wakes every retention_interval_ms and runs a pass of
 * store_ops.retention_sweep, batch after batch, each its own short job of the store's group
 * commit: finished deliveries (with their attempts) and unreferenced events older than the
 * retention period go; pending deliveries, their events and the lab's records stay. A
 * retention of 0 starts nothing. retention_start and retention_stop are called from one
 * thread (main.c's).
 */
#ifndef LH_RETENTION_H
#define LH_RETENTION_H

#include <stdint.h>

#include "store.h"

#define RETENTION_BATCH 500 /* rows examined per job: a few milliseconds of the writer */

/* How often a pass runs for a retention period: half of it, between 1 s and 60 s (a test
 * with a retention of seconds sees it work; a service with days sweeps once a minute). */
int64_t retention_interval_ms(int64_t retention_ms);

struct retention;

/* Starts the sweep over st (borrowed until retention_stop) for a retention of retention_ms
 * (> 0). Returns owned, stop with retention_stop. */
enum lh_err retention_start(struct store *st, int64_t retention_ms, struct retention **out);
/* Stops the thread after the batch in hand (the pass resumes at the next start: deletes are
 * idempotent) and frees it. Accepts NULL. */
void retention_stop(struct retention *r);

#endif
