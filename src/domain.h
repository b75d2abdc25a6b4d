/* domain.h: the rules of bills, reports, leads and bookings (API.md 5, 6), each change
 * committed through the store's group commit together with its event and one delivery row
 * per matching subscription.
 *
 * Every change runs as a job inside the store's single writer transaction, so rules that
 * read then write (the last report completes the bill; a deleted bill takes no changes; the
 * same-day lead rule) see a consistent state and cannot race. Payloads are built once per
 * event and stored with it. Thread-safe: callers block until their change is durable
 * (bill creation can also be waited for asynchronously).
 */
#ifndef LH_DOMAIN_H
#define LH_DOMAIN_H

#include <stddef.h>

#include "store.h"

#define DOMAIN_MAX_REPORTS 500

/* Why a change was refused, for the caller's error message. */
struct domain_outcome {
	const char *code;  /* snake_case error code on failure */
	const char *field; /* field at fault, or NULL */
	char message[256];
	size_t deliveries;     /* delivery rows written on success */
	char event_id[ID_CAP]; /* the last event written */
	int changed;           /* 0 when the request was a no-op (completing a completed report) */
};

/* Creating a bill with its reports (bill.created), in two steps so that a caller can wait
 * for the commit without holding a thread: domain_bill_prepare builds the job, its event
 * payload included, on the caller's thread; the store's submit or submit_async then runs
 * domain_bill_create_tx on it (refused with LH_ECONFLICT on a bar code already used in the
 * lab, j->out saying why). b and reports are borrowed until then. domain_bill_release
 * frees what prepare made, whatever happened. */
struct domain_bill_new {
	const struct bill *bill;
	const struct report *reports;
	size_t n;
	struct event ev; /* bill.created, payload owned */
	struct domain_outcome out;
};
enum lh_err domain_bill_prepare(struct domain_bill_new *j, const char *public_url,
                                const struct bill *b, const struct report *reports, size_t n);
enum lh_err domain_bill_create_tx(struct store_tx *tx, void *j);
void domain_bill_release(struct domain_bill_new *j);
/* Completes a report (report.completed) and, when it is the last, the bill
 * (bill.completed, exactly once). client_id NULL: any account's bill (lab side). */
enum lh_err domain_report_complete(struct store *st, const char *public_url, const char *client_id,
                                   const char *bill_id, const char *report_id,
                                   struct bill *bill_out, struct domain_outcome *out);
/* Marks the bill deleted and emits bill.deleted; LH_ECONFLICT if already deleted. */
enum lh_err domain_bill_delete(struct store *st, const char *public_url, const char *client_id,
                               const char *bill_id, struct domain_outcome *out);
/* Creates a lead (lead.created), or a booking when l->phase is PHASE_BOOKING
 * (booking.created; bk holds its booking fields). LH_ECONFLICT on the same contact or
 * email in the same lab on the same UTC day. */
enum lh_err domain_lead_create(struct store *st, struct lead *l, struct booking *bk,
                               struct domain_outcome *out);
/* Converts a lead into a booking (booking.created); LH_ECONFLICT if already booked. */
enum lh_err domain_lead_convert(struct store *st, const char *lead_id, struct booking *bk,
                                struct domain_outcome *out);

/* Queues a webhook.test event to that one subscription; its id into event_id. */
enum lh_err domain_test_event(struct store *st, const struct subscription *sub,
                              char event_id[ID_CAP], struct domain_outcome *out);

/* JSON of a bill as GET /client/bills shows it and as event payloads carry it. Returns
 * owned, json_decref. */
struct json_t;
struct json_t *domain_bill_json(const struct bill *b, const struct report *r, size_t n);
const char *domain_bill_status_name(enum bill_status s);

#endif
