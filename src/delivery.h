/* delivery.h: the delivery engine: signed, ordered, at-least-once HTTPS delivery.
 *
 * One dispatcher thread (lh-dispatch) runs a libcurl multi handle. Deliveries come in only
 * through the store's commit hook, the moment their transaction is durable (fresh ones, and
 * ones that retry or recover re-queued: the API never calls the engine), and from the store
 * in pages per subscription (a bounded window shared fairly among subscriptions; the rest
 * waits on disk). They queue in lanes, one per (subscription, entity): only a lane's head is
 * ever in flight, so each subscription sees an entity's events in order while other lanes go
 * on; subscriptions take turns for free slots. What follows an attempt (retry, backoff,
 * disable) is decided by retry_policy.h. A recorder thread (lh-recorder) writes outcomes in
 * batches through the store's group commit; a delivery is marked delivered only after its
 * 2xx. delivery_start and delivery_stop are called from one thread (main.c's).
 */
#ifndef LH_DELIVERY_H
#define LH_DELIVERY_H

#include "config.h"
#include "store.h"

struct delivery_engine;

/* Registers the commit hook, loads the first page of pending deliveries of each
 * subscription with any and starts the threads.
 * Returns owned, stop with delivery_stop. */
enum lh_err delivery_start(struct store *st, const struct config *cfg,
                           struct delivery_engine **out);
/* Stops starting attempts, lets in-flight ones finish for up to the grace period (the
 * rest stay pending in the store and are sent after restart), records outcomes, joins.
 * Accepts NULL. */
void delivery_stop(struct delivery_engine *d);
#endif
