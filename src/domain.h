/* domain.h: the rules of bills, reports, leads and bookings (API.md 5, 6), each change
 * committed through the store's group commit together with its event and one delivery row
 * per matching subscription.
 *
 * Every change runs as a job inside the store's single writer transaction, so rules that
 * read then write (the last report completes the bill; a deleted bill takes no changes; the
 * same-day lead rule) see a consistent state and cannot race. Payloads are built once per
 * event and stored with it. Each change is a job for the store's submit (the caller waits)
 * or submit_async (told when it is durable).
 */
#ifndef LH_DOMAIN_H
#define LH_DOMAIN_H

#include <stddef.h>

#include "store.h"

#define DOMAIN_MAX_REPORTS 500

/* What a reportURL is made of (API.md 9): <public_url>/reports/<bill>/<report>?expires=<unix>
 * &sig=<hex HMAC-SHA256 with key over the ids and the expiry> (sig_report_link). Built once
 * at start-up; read-only afterwards. */
struct domain_links {
	const char *public_url; /* no trailing slash */
	unsigned char key[32];  /* from the store's meta: every node signs alike */
	int64_t ttl_s;          /* report-link-ttl */
};

/* The link of one report, valid until now + ttl, into out. */
void domain_report_link(const struct domain_links *l, const char *bill_id, const char *report_id,
                        int64_t now, char *out, size_t cap);
/* Checks a link's query values (either may be NULL) at now. */
enum link_check { LINK_OK = 0, LINK_BAD_SIGNATURE, LINK_EXPIRED };
enum link_check domain_report_link_check(const struct domain_links *l, const char *bill_id,
                                         const char *report_id, const char *expires,
                                         const char *sig, int64_t now, int64_t *expires_at);

/* A report document handed to domain_report_complete_tx (the bytes are borrowed until the
 * job has run; sha256 is computed by the caller, on its own thread). */
struct domain_doc {
	const void *data;
	size_t len;
	char content_type[REPORT_CTYPE_CAP];
	unsigned char sha256[32];
};

/* Why a change was refused, for the caller's error message. */
struct domain_outcome {
	const char *code;   /* snake_case error code on failure */
	const char *field;  /* field at fault, or NULL */
	char field_buf[48]; /* where field points when it was built for this outcome */
	char message[256];
	char event_id[ID_CAP]; /* the last event written */
	int changed;           /* 0 when the request was a no-op (completing a completed report) */
};

/* Creating a bill with its reports (bill.created), in two steps so that a caller can wait
 * for the commit without holding a thread: domain_bill_prepare builds the job, its event
 * payload included, on the caller's thread; the store's submit or submit_async then runs
 * domain_bill_create_tx on it (refused with LH_ECONFLICT on a bar code already used in the
 * lab, j->out saying why). b, reports and refs (one per report, what each was made from;
 * NULL: all free text, or the caller found the lab's catalog empty) are borrowed until
 * then. domain_bill_release frees what prepare and
 * the job made, whatever happened. domain_bill_create_tx may be run again after a rollback
 * (submit it with STORE_JOB_RERUN).
 * The catalog rule: when the lab's catalog holds any item, every catalog id of the bill
 * (mapped_tests, mapped_packages) must name one of its items, else LH_EINVAL naming the
 * field (unknown_catalog_item); a test's report takes the catalog's name, and a package
 * gives one report per test it holds, named after each (one named after the package when it
 * holds none). A lab with an empty catalog keeps the ids as sent. The items are read
 * inside the bill's transaction, so a bill sees the catalog as one state; whether the lab
 * has a catalog at all the caller looks up before (domain_has_catalog), so that labs
 * without one cost the writer nothing, and an id missed inside is refused only if the
 * catalog is still there. */
struct bill_ref; /* validate.h */
struct domain_bill_new {
	const struct domain_links *links; /* live as long as the service */
	const struct bill *bill;
	const struct report *reports;
	const struct bill_ref *refs;
	size_t n;
	struct report *own; /* the reports the catalog made, when it did (owned) */
	struct event ev;    /* bill.created, payload owned */
	struct domain_outcome out;
};
enum lh_err domain_bill_prepare(struct domain_bill_new *j, const struct domain_links *links,
                                const struct bill *b, const struct report *reports,
                                const struct bill_ref *refs, size_t n);
enum lh_err domain_bill_create_tx(struct store_tx *tx, void *j);
void domain_bill_release(struct domain_bill_new *j);
/* A change to an existing bill, run by the store's writer (submit or submit_async):
 * domain_report_complete_tx completes report_id (report.completed) and, when it is the
 * last, the bill (bill.completed, exactly once); completing a completed report changes
 * nothing (out.changed 0). domain_bill_delete_tx marks the bill deleted (bill.deleted;
 * LH_ECONFLICT if it already is). client_id "": any account's bill (the lab side).
 * domain_bill_change_init fills it; bill is the bill as the change left it.
 * With doc set, completing also stores the document: a new one, or one whose sha256 differs
 * from the stored one, replaces it (version + 1) and emits report.completed again even if
 * the report was completed already (never bill.completed again); the same bytes again
 * change nothing (out.changed 0). has_doc and stored then describe the report's document,
 * and doc_changed says whether this change stored it. */
struct domain_bill_change {
	const struct domain_links *links; /* lives as long as the service */
	char client_id[ID_CAP];
	char bill_id[ID_CAP];
	char report_id[ID_CAP];
	const struct domain_doc *doc; /* NULL: no document */
	struct bill bill;
	int has_doc, doc_changed;
	struct report_doc stored;
	struct domain_outcome out;
};
void domain_bill_change_init(struct domain_bill_change *c, const struct domain_links *links,
                             const char *client_id, const char *bill_id, const char *report_id);
enum lh_err domain_report_complete_tx(struct store_tx *tx, void *change);
enum lh_err domain_bill_delete_tx(struct store_tx *tx, void *change);

/* Leads and bookings, run by the store's writer (submit or submit_async).
 * domain_lead_create_tx creates `lead` (lead.created), or with lead.phase PHASE_BOOKING
 * also the booking `bk` (booking.created); LH_ECONFLICT on the same contact or email in the
 * same lab on the same UTC day. domain_lead_convert_tx converts the lead `lead_id` into the
 * booking `bk` (its booking fields set; booking.created); LH_ECONFLICT if already booked.
 * With `catalog` set (the caller saw a catalog in the lab), each of the lead's `tests` and
 * `packages` must be a catalog id (else LH_EINVAL naming it), and lead.created carries
 * testDetails and packageDetails: [{_id, name}] from the catalog. */
struct domain_lead_change {
	struct lead lead;
	struct booking bk;
	int catalog; /* the lead names tests or packages and its lab had a catalog */
	char lead_id[ID_CAP];
	struct domain_outcome out;
};
enum lh_err domain_lead_create_tx(struct store_tx *tx, void *change);
enum lh_err domain_lead_convert_tx(struct store_tx *tx, void *change);

/* *has = 1 if lab_id's catalog holds any item (read outside any job: see above). The
 * answer is remembered for a second; domain_catalog_changed(lab_id) forgets it, and is
 * called after every change this process makes to a lab's catalog, so on one node a
 * catalog's first item rules the next bill, on several within a second. Thread-safe. */
enum lh_err domain_has_catalog(struct store *st, const char *lab_id, int *has);
void domain_catalog_changed(const char *lab_id);

/* Queues a webhook.test event to that one subscription; its id into event_id. */
enum lh_err domain_test_event(struct store *st, const struct subscription *sub,
                              char event_id[ID_CAP], struct domain_outcome *out);

/* JSON of a bill as GET /client/bills shows it and as event payloads carry it. Returns
 * owned, json_decref. */
struct json_t;
struct json_t *domain_bill_json(const struct bill *b, const struct report *r, size_t n);
const char *domain_bill_status_name(enum bill_status s);

#endif
