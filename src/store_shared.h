/* store_shared.h: what every store backend does the same way, without SQL: the rules of a
 * subscription update, and how a new delivery reaches the group commit.
 *
 * Pure functions over the caller's records (store_fresh_delivery also hands the delivery to
 * the writer, from inside a job on the writer thread). Thread-safe.
 */
#ifndef LH_STORE_SHARED_H
#define LH_STORE_SHARED_H

#include "store.h"
#include "store_writer.h"

/* Applies sub_update's change to cur, the row as read inside the update's transaction: the
 * fields named in `fields` (SUBF_*) and updated_at take want's values; SUBF_SECRET rotates
 * (cur's secret becomes the previous one, until want->prev_secret_until); a disabled
 * subscription made active again starts its failures over. */
void store_sub_apply(struct subscription *cur, const struct subscription *want, unsigned fields);

/* Fills d with the new, pending delivery of ev to sub_id (ev's seq is seq), first due when
 * the event was made. */
void store_delivery_new(struct delivery *d, const struct event *ev, const char *delivery_id,
                        const char *sub_id, int64_t seq);

/* Hands d, a delivery the open job created, to the writer (writer_fresh_push) with a copy of
 * its event's payload when that is at most DELIVERY_PAYLOAD_INLINE bytes, so the engine
 * sends it from memory without reading it back (NULL when larger, or out of memory). */
enum lh_err store_fresh_delivery(struct store_writer *w, struct delivery *d, const char *payload);

#endif
