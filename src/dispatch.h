/* dispatch.h: the delivery engine: signed, ordered, at-least-once HTTPS delivery.
 *
 * One dispatcher thread runs a libcurl multi handle. Deliveries arrive from the store's
 * commit hook the moment their transaction is durable (no polling), from the store in pages
 * per subscription (a bounded window shared fairly among subscriptions; the rest waits on
 * disk), and from retry/recover requests. They queue in lanes, one per (subscription,
 * entity): only a lane's head is ever in flight, so each subscription sees an entity's
 * events in order while other lanes go on; subscriptions take turns for free slots. A
 * recorder thread writes outcomes in batches through the store's group commit; a delivery
 * is marked delivered only after its 2xx. dispatch_enqueue is thread-safe; everything else
 * belongs to the dispatcher thread.
 */
#ifndef LH_DISPATCH_H
#define LH_DISPATCH_H

#include "config.h"
#include "store.h"

struct dispatcher;

/* Registers the commit hook, loads the first page of pending deliveries of each
 * subscription with any and starts the threads.
 * Returns owned, stop with dispatch_stop. */
enum lh_err dispatch_start(struct store *st, const struct config *cfg, struct dispatcher **out);
/* Stops starting attempts, lets in-flight ones finish for up to the grace period (the
 * rest stay pending in the store and are sent after restart), records outcomes, joins.
 * Accepts NULL. */
void dispatch_stop(struct dispatcher *d);
/* Hands pending deliveries to the engine (due at their next_at_ms), with their payloads
 * (taken over; NULL ones are read when sent). Thread-safe. */
void dispatch_enqueue(struct dispatcher *d, const struct delivery *dl, size_t n);
/* Tells the dispatcher a subscription changed (it notices within a second anyway). */
void dispatch_wake(struct dispatcher *d);

#endif
