/* events.h: the event types integrators subscribe to (API.md 4.1), as a bit set.
 * Pure data and functions; thread-safe.
 */
#ifndef LH_EVENTS_H
#define LH_EVENTS_H

#include <stddef.h>

enum event_type {
	EV_BILL_CREATED = 0,
	EV_BILL_COMPLETED,
	EV_BILL_DELETED,
	EV_REPORT_COMPLETED,
	EV_LEAD_CREATED,
	EV_BOOKING_CREATED,
	EV__COUNT
};

#define EV_ALL_MASK ((1u << EV__COUNT) - 1)
/* Not subscribable: sent to one subscription by POST .../subscriptions/{id}/test. */
#define EV_WEBHOOK_TEST EV__COUNT

/* "bill.created" -> EV_BILL_CREATED; -1 if not an event name. */
int event_from_name(const char *name);
const char *event_name(enum event_type t);
/* Comma-separated names of the events in mask, into out; returns out. */
char *event_mask_names(unsigned mask, char *out, size_t cap);

#endif
