/* api_events.c: where events come from (API.md 5): bills and leads from integrators
 * (/client/...), and what lab staff do (/lab/..., admin key). What a body must hold is
 * checked in validate.c (pure, fuzzed); here come the checks that need the store (lab,
 * parties, account), the ids, and the answers. The rules and the commit with events and
 * deliveries live in domain.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "accounts.h"
#include "api.h"
#include "domain.h"
#include "jtext.h"

static const struct domain_links *links(struct call *c)
{
	return &c->app->links;
}

/* Responds for a refused or failed domain change. */
static void domain_fail(struct call *c, enum lh_err e, const struct domain_outcome *o,
                        const char *what)
{
	if (o->code)
		api_fail(c, e, o->code, o->field, "%s", o->message);
	else
		api_fail_internal(c, e, what);
}

/* A deferred change is done (api_submit): answers its failure and returns 0, or returns 1
 * when the caller is to answer its success. c NULL (the client left): nothing to answer. */
static int change_done(struct call *c, enum lh_err e, const struct domain_outcome *o,
                       const char *what)
{
	if (c && e != LH_OK)
		domain_fail(c, e, o, what);
	return c && e == LH_OK;
}

static const char *str(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The parties an entity carries: each must be the account's, of the right kind; a
 * party-scoped account must send at least one. */
static int resolve_parties(struct call *c, const struct account *acct,
                           const struct party_refs *refs, struct parties *out)
{
	int any = 0;
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < VALIDATE_PARTY_SLOTS; i++) {
		const struct party_slot *slot = &validate_party_slots[i];
		const char *id = refs->id[i];
		struct party p;
		if (!id)
			continue;
		enum lh_err e =
		    strlen(id) < ID_CAP
		        ? c->app->store->ops->party_get(c->app->store, acct->client_id, id, &p)
		        : LH_ENOTFOUND;
		if (e == LH_OK && p.kind != slot->kind)
			e = LH_ENOTFOUND;
		if (e == LH_ENOTFOUND)
			return api_fail(c, e, "party_not_found", slot->field,
			                "no %s with this id in the account",
			                slot->kind == PARTY_CORPORATE_USER ? "corporate user"
			                                                   : "organization");
		if (e != LH_OK)
			return api_fail_internal(c, e, "load party");
		memcpy((char *)out + slot->off, p.party_id, ID_CAP);
		any = 1;
	}
	if (!any && acct->mode == MODE_PARTY_SCOPED)
		return api_fail(
		    c, LH_EINVAL, "party_required", "corporateUser",
		    "this is a party-scoped account: send corporateUser, referredOrganization or referredHospitalOrganization");
	return 0;
}

static int load_lab(struct call *c, const struct account *acct, const char *lab_id,
                    const char *field, struct lab *lab)
{
	enum lh_err e = c->app->store->ops->lab_get(c->app->store, acct->client_id, lab_id, lab);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "lab_not_found", field, "no lab with this id in the account");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load lab");
	return 0;
}

/* ---- bills ---- */

/* A bill waiting for its commit. */
struct bill_create {
	struct bill bill;
	struct report *reports;
	struct bill_ref *refs;
	struct domain_bill_new job;
};

static void bill_created(struct call *c, void *arg, enum lh_err e)
{
	struct bill_create *bc = arg;
	const struct bill *bill = &bc->bill;
	if (change_done(c, e, &bc->job.out, "create bill"))
		api_ok(c, "Bill created successfully",
		       json_pack("{s:s, s:s, s:s}", "integrator_id", bill->integrator_id,
		                 "preBookingID", bill->pre_booking_id, "billID", bill->bill_id));
	domain_bill_release(&bc->job);
	free(bc->reports);
	free(bc->refs);
	free(bc);
}

/* Whether the lab has a catalog, for a bill or lead that names ids: *has (-1 on failure,
 * after answering). */
static int lab_catalog(struct call *c, const char *lab_id, int *has)
{
	enum lh_err e = domain_has_catalog(c->app->store, lab_id, has);
	if (e != LH_OK)
		return api_fail_internal(c, e, "load catalog");
	return 0;
}

/* A bill's catalog ids are looked up only in a lab with a catalog (see domain.h): for any
 * other bill, or one without catalog ids, br's refs are dropped. */
static int catalog_check(struct call *c, const char *lab_id, struct bill_request *br)
{
	int mapped = 0, has = 0;
	for (size_t i = 0; i < br->n_reports; i++)
		mapped |= br->refs[i].kind >= 0;
	if (mapped && lab_catalog(c, lab_id, &has))
		return -1;
	if (!has) { /* nothing to look up */
		free(br->refs);
		br->refs = NULL;
	}
	return 0;
}

/* Validates a bill body for acct and creates it. */
static void create_bill(struct call *c, const struct account *acct, json_t *b)
{
	struct bill_create *bc = NULL;
	struct bill *bill;
	struct bill_request br = {0};
	struct lab lab;
	struct verr ve;

	if (validate_bill(b, &br, &ve)) {
		api_fail_verr(c, &ve);
		return;
	}
	bc = calloc(1, sizeof *bc);
	if (!bc) {
		api_fail_internal(c, LH_ENOMEM, "create bill");
		goto out;
	}
	bill = &bc->bill;
	for (size_t i = 0; i < br.n_reports; i++) {
		if (util_new_id("rep_", br.reports[i].report_id) != LH_OK) {
			api_fail_internal(c, LH_EIO, "new report id");
			goto out;
		}
	}
	if (load_lab(c, acct, br.lab_id, "labID", &lab) ||
	    resolve_parties(c, acct, &br.parties, &bill->parties) ||
	    catalog_check(c, lab.lab_id, &br))
		goto out;
	char *patient = jtext_dump(br.patient, 0, sizeof bill->patient - 1);
	if (!patient) {
		free(patient);
		api_fail(c, LH_EINVAL, "too_long", "patient_details",
		         "'patient_details' is too large");
		goto out;
	}
	memcpy(bill->patient, patient, strlen(patient) + 1);
	free(patient);
	if (util_new_id("bill_", bill->bill_id) != LH_OK ||
	    util_new_id("pb_", bill->pre_booking_id) != LH_OK) {
		api_fail_internal(c, LH_EIO, "new bill id");
		goto out;
	}
	snprintf(bill->client_id, sizeof bill->client_id, "%s", acct->client_id);
	snprintf(bill->lab_id, sizeof bill->lab_id, "%s", lab.lab_id);
	snprintf(bill->integrator_id, sizeof bill->integrator_id, "%s", br.integrator_id);
	snprintf(bill->lead_source, sizeof bill->lead_source, "%s", br.lead_source);
	snprintf(bill->bar_code, sizeof bill->bar_code, "%s", br.bar_code);
	bill->status = BILL_PENDING;
	bill->created_at = bill->updated_at = util_now();
	for (size_t i = 0; i < br.n_reports; i++)
		memcpy(br.reports[i].bill_id, bill->bill_id, ID_CAP);
	enum lh_err e =
	    domain_bill_prepare(&bc->job, links(c), bill, br.reports, br.refs, br.n_reports);
	if (e != LH_OK) {
		domain_bill_release(&bc->job);
		api_fail_internal(c, e, "create bill");
		goto out;
	}
	bc->reports = br.reports;
	bc->refs = br.refs;
	br.reports = NULL;
	br.refs = NULL;
	/* The answer is sent by bill_created once the bill is durable; bc is its. */
	api_submit(c, domain_bill_create_tx, &bc->job, STORE_JOB_RERUN, bill_created, bc);
	bc = NULL;
out:
	free(br.reports);
	free(br.refs);
	free(bc);
}

void api_billing_create(struct call *c)
{
	json_t *b = api_body(c, validate_bill_table.spec, validate_bill_table.n);
	if (b)
		create_bill(c, &c->acct, b);
	json_decref(b);
}

/* Loads the account body b's clientID names into *acct; -1 after answering if none. */
static int lab_account(struct call *c, json_t *b, struct account *acct)
{
	enum lh_err e = c->app->store->ops->account_get(c->app->store, str(b, "clientID"), acct);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "account_not_found", "clientID",
		                "no account with this clientID");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load account");
	return 0;
}

void api_lab_bill_create(struct call *c)
{
	struct account acct;
	json_t *b = api_body(c, validate_lab_bill_table.spec, validate_lab_bill_table.n);
	if (b && lab_account(c, b, &acct) == 0)
		create_bill(c, &acct, b);
	json_decref(b);
}

/* Answers with bill c->arg[0] of client_id (NULL: of any account, and the answer names
 * the account). */
static void send_bill(struct call *c, const char *client_id)
{
	struct bill b;
	struct report *r = NULL;
	size_t n = 0;
	enum lh_err e =
	    c->app->store->ops->bill_get(c->app->store, client_id, c->arg[0], &b, &r, &n);
	if (e == LH_ENOTFOUND) {
		api_fail(c, e, "bill_not_found", NULL, "no bill with this id");
		return;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "load bill");
		return;
	}
	json_t *j = domain_bill_json(&b, r, n);
	json_object_set_new(j, "labID", json_string(b.lab_id));
	json_object_set_new(j, "preBookingID", json_string(b.pre_booking_id));
	json_object_set_new(j, "patient_details", json_loads(b.patient, 0, NULL));
	if (b.bar_code[0])
		json_object_set_new(j, "barCode", json_string(b.bar_code));
	json_object_set_new(j, "createdAt", api_time(b.created_at));
	json_object_set_new(j, "updatedAt", api_time(b.updated_at));
	if (!client_id)
		json_object_set_new(j, "clientID", json_string(b.client_id));
	api_ok(c, "ok", json_pack("{s:o}", "bill", j));
	free(r);
}

void api_bill_get(struct call *c)
{
	send_bill(c, c->acct.client_id);
}

void api_lab_bill_get(struct call *c)
{
	send_bill(c, NULL);
}

/* ---- leads ---- */

/* A booking of bk's type and time, with a new id. */
static int new_booking(struct call *c, const struct booking_request *br, struct booking *bk)
{
	memset(bk, 0, sizeof *bk);
	if (util_new_id("bkg_", bk->booking_id) != LH_OK)
		return api_fail_internal(c, LH_EIO, "new booking id");
	snprintf(bk->booking_type, sizeof bk->booking_type, "%s", br->type);
	util_rfc3339(br->scheduled_at, bk->scheduled_at);
	bk->created_at = util_now();
	return 0;
}

static void lead_created(struct call *c, void *arg, enum lh_err e)
{
	struct domain_lead_change *j = arg;
	int booking = j->lead.phase == PHASE_BOOKING;
	if (change_done(c, e, &j->out, "create lead")) {
		json_t *f = json_pack("{s:s, s:s}", "leadID", j->lead.lead_id, "phase",
		                      booking ? "booking" : "lead");
		if (booking)
			json_object_set_new(f, "bookingID", json_string(j->bk.booking_id));
		api_ok(c, booking ? "Booking created successfully" : "Lead created successfully",
		       f);
	}
	free(j);
}

/* Creates the lead body b asks for acct's account (borrowed: both). */
static void create_lead(struct call *c, const struct account *acct, json_t *b)
{
	struct domain_lead_change *j = NULL;
	struct lead *l;
	struct booking *bk;
	struct lab lab;
	struct lead_request lr;
	struct verr ve;
	json_t *data = NULL;
	if (validate_lead(b, &lr, &ve)) {
		api_fail_verr(c, &ve);
		goto out;
	}
	if (!(j = calloc(1, sizeof *j))) {
		api_fail_internal(c, LH_ENOMEM, "create lead");
		goto out;
	}
	l = &j->lead;
	bk = &j->bk;
	int booking = lr.booking;
	if (booking && new_booking(c, &lr.bk, bk))
		goto out;
	if (load_lab(c, acct, lr.branch_id, "branchID", &lab) ||
	    resolve_parties(c, acct, &lr.parties, &l->parties))
		goto out;
	if ((json_array_size(json_object_get(b, "tests")) ||
	     json_array_size(json_object_get(b, "packages"))) &&
	    lab_catalog(c, lab.lab_id, &j->catalog))
		goto out;
	/* The lead's own fields, as lead.created carries them. */
	static const char *const keep[] = {
	    "first_name", "last_name", "contact", "email",    "gender", "age",     "age_type",
	    "address",    "pincode",   "source",  "priority", "tests",  "packages"};
	data = json_object();
	for (size_t i = 0; i < COUNTOF(keep); i++) {
		json_t *v = json_object_get(b, keep[i]);
		if (v)
			json_object_set(data, keep[i], v);
	}
	char *text = jtext_dump(data, 0, sizeof l->data - 1);
	if (!text) {
		free(text);
		api_fail(c, LH_EINVAL, "too_long", NULL, "the lead is too large");
		goto out;
	}
	memcpy(l->data, text, strlen(text) + 1);
	free(text);
	if (util_new_id("lead_", l->lead_id) != LH_OK) {
		api_fail_internal(c, LH_EIO, "new lead id");
		goto out;
	}
	snprintf(l->client_id, sizeof l->client_id, "%s", acct->client_id);
	snprintf(l->lab_id, sizeof l->lab_id, "%s", lab.lab_id);
	snprintf(l->integrator_id, sizeof l->integrator_id, "%s", lr.integrator_id);
	snprintf(l->contact, sizeof l->contact, "%s", lr.contact);
	for (size_t i = 0; lr.email[i] && i + 1 < sizeof l->email; i++)
		l->email[i] = (char)tolower((unsigned char)lr.email[i]);
	l->created_at = util_now();
	char day[32];
	util_rfc3339(l->created_at, day);
	snprintf(l->day, sizeof l->day, "%.10s", day);
	l->phase = booking ? PHASE_BOOKING : PHASE_LEAD;
	if (booking) {
		snprintf(bk->client_id, sizeof bk->client_id, "%s", l->client_id);
		snprintf(bk->lab_id, sizeof bk->lab_id, "%s", l->lab_id);
		snprintf(bk->lead_id, sizeof bk->lead_id, "%s", l->lead_id);
		snprintf(bk->integrator_id, sizeof bk->integrator_id, "%s", l->integrator_id);
		bk->parties = l->parties;
		snprintf(l->booking_id, sizeof l->booking_id, "%s", bk->booking_id);
	}
	api_submit(c, domain_lead_create_tx, j, 0, lead_created, j);
	j = NULL; /* lead_created's now */
out:
	json_decref(data);
	free(j);
}

void api_lead_create(struct call *c)
{
	json_t *b = api_body(c, validate_lead_table.spec, validate_lead_table.n);
	if (b)
		create_lead(c, &c->acct, b);
	json_decref(b);
}

void api_lab_lead_create(struct call *c)
{
	struct account acct;
	json_t *b = api_body(c, validate_lab_lead_table.spec, validate_lab_lead_table.n);
	if (b && lab_account(c, b, &acct) == 0)
		create_lead(c, &acct, b);
	json_decref(b);
}

/* ---- lab side (admin key) ---- */

static void report_completed(struct call *c, void *arg, enum lh_err e)
{
	struct domain_bill_change *j = arg;
	if (change_done(c, e, &j->out, "complete report")) {
		json_t *f =
		    json_pack("{s:s, s:s, s:s, s:b}", "billID", j->bill.bill_id, "reportID",
		              j->report_id, "billStatus", domain_bill_status_name(j->bill.status),
		              "changed", j->out.changed);
		if (f && j->has_doc) {
			char sha[65];
			util_hex(j->stored.sha256, 32, sha);
			json_object_set_new(f, "document",
			                    json_pack("{s:s, s:I, s:s, s:I, s:b}", "contentType",
			                              j->stored.content_type, "size",
			                              (json_int_t)j->stored.size, "sha256", sha,
			                              "version", (json_int_t)j->stored.version,
			                              "changed", j->doc_changed));
		}
		api_ok(c,
		       j->out.changed ? "Report completed"
		       : j->has_doc
		           ? "Report was already completed with this document; nothing changed"
		           : "Report was already completed; nothing changed",
		       f);
	}
	free(j);
}

static void bill_deleted(struct call *c, void *arg, enum lh_err e)
{
	struct domain_bill_change *j = arg;
	if (change_done(c, e, &j->out, "delete bill"))
		api_ok(c, "Bill deleted", json_pack("{s:s}", "billID", j->bill_id));
	free(j);
}

/* A change to a bill of any account, answered once it is durable (no thread held). j has
 * room for a document after the change itself (see complete_job). */
static void change_bill(struct call *c, store_tx_fn fn, api_finish_fn done, const char *report,
                        const struct domain_doc *doc)
{
	struct complete_job {
		struct domain_bill_change ch; /* first: done() frees the job through it */
		struct domain_doc doc;
	} *j = malloc(sizeof *j);
	if (!j) {
		api_fail_internal(c, LH_ENOMEM, "change bill");
		return;
	}
	domain_bill_change_init(&j->ch, links(c), NULL, c->arg[0], report);
	if (doc) {
		j->doc = *doc;
		j->ch.doc = &j->doc; /* its bytes are the request body's, kept until done() */
	}
	api_submit(c, fn, &j->ch, 0, done, &j->ch);
}

/* Whether a Content-Type names media type `type` (parameters and case aside). */
static int media_is(const char *ct, const char *type)
{
	size_t n = strlen(type);
	if (!ct)
		return 0;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

void api_lab_report_complete(struct call *c)
{
	const struct http_req *rq = c->rq;
	const char *ct = http_header(rq, "Content-Type");
	struct domain_doc doc;
	if (media_is(ct, "application/pdf")) {
		if (rq->body_len < 5 || memcmp(rq->body, "%PDF-", 5) != 0) {
			api_fail(c, LH_EINVAL, "invalid_document", NULL,
			         "the body is not a PDF document (a PDF starts with '%%PDF-')");
			return;
		}
		memset(&doc, 0, sizeof doc);
		doc.data = rq->body;
		doc.len = rq->body_len;
		snprintf(doc.content_type, sizeof doc.content_type, "application/pdf");
		util_sha256(rq->body, rq->body_len, doc.sha256);
		change_bill(c, domain_report_complete_tx, report_completed, c->arg[1], &doc);
		return;
	}
	/* Without a document: no body, or JSON (ignored), as before documents existed. */
	if (rq->body_len > 0 && ct && !media_is(ct, "application/json")) {
		api_fail(c, LH_EMEDIA, "unsupported_media_type", NULL,
		         "a report document is sent as 'Content-Type: application/pdf'; without a"
		         " document send no body (or JSON)");
		return;
	}
	change_bill(c, domain_report_complete_tx, report_completed, c->arg[1], NULL);
}

void api_lab_bill_delete(struct call *c)
{
	change_bill(c, domain_bill_delete_tx, bill_deleted, NULL, NULL);
}

static void lead_converted(struct call *c, void *arg, enum lh_err e)
{
	struct domain_lead_change *j = arg;
	if (change_done(c, e, &j->out, "convert lead"))
		api_ok(
		    c, "Lead converted to a booking",
		    json_pack("{s:s, s:s}", "leadID", j->lead_id, "bookingID", j->bk.booking_id));
	free(j);
}

void api_lab_lead_convert(struct call *c)
{
	struct domain_lead_change *j = NULL;
	struct booking_request br;
	struct verr ve;
	json_t *b = api_body(c, validate_booking_table.spec, validate_booking_table.n);
	if (!b)
		return;
	if (!(j = calloc(1, sizeof *j)))
		api_fail_internal(c, LH_ENOMEM, "convert lead");
	else if (validate_booking(b, &br, &ve))
		api_fail_verr(c, &ve);
	else if (new_booking(c, &br, &j->bk) == 0) {
		snprintf(j->lead_id, sizeof j->lead_id, "%s", c->arg[0]);
		api_submit(c, domain_lead_convert_tx, j, 0, lead_converted, j);
		j = NULL; /* lead_converted's now */
	}
	free(j);
	json_decref(b);
}
