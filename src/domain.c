/* domain.c: see domain.h. The *_tx functions are store jobs: the API fills their argument
 * (a domain_* struct, prepared on its own thread) and submits it, and the store's writer runs
 * them inside its batch transaction, where they apply the rules and write the change, its
 * event and its delivery rows. domain_test_event is the one that submits by itself.
 */
#define _POSIX_C_SOURCE 200809L
#include "domain.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "events.h"
#include "jtext.h"
#include "log.h"
#include "sign.h"
#include "validate.h"

static const char *const bill_status_names[] = {"pending", "completed", "deleted"};

const char *domain_bill_status_name(enum bill_status s)
{
	return (unsigned)s < 3 ? bill_status_names[s] : "unknown";
}

static enum lh_err refuse(struct domain_outcome *o, enum lh_err e, const char *code,
                          const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum lh_err refuse(struct domain_outcome *o, enum lh_err e, const char *code,
                          const char *field, const char *fmt, ...)
{
	va_list ap;
	o->code = code;
	o->field = field;
	va_start(ap, fmt);
	vsnprintf(o->message, sizeof o->message, fmt, ap);
	va_end(ap);
	return e;
}

static void add_parties(json_t *o, const struct parties *p)
{
	if (p->corporate_user[0])
		json_object_set_new(o, "corporateUser", json_string(p->corporate_user));
	if (p->referred_org[0])
		json_object_set_new(o, "referredOrganization", json_string(p->referred_org));
	if (p->referred_hospital_org[0])
		json_object_set_new(o, "referredHospitalOrganization",
		                    json_string(p->referred_hospital_org));
}

/* The most an event's JSON text may grow to: a bill of DOMAIN_MAX_REPORTS reports with
 * the longest names, every byte escaped, is under 4 MiB. */
#define EVENT_TEXT_MAX ((size_t)8 << 20)

/* The bill as its events and GET /lab/bills/{id} show it (billID, integratorID, billData
 * and the parties), with the object left open for the caller's fields. */
static void bill_fields(struct jtext *t, const struct bill *b, const struct report *r, size_t n)
{
	const struct parties *p = &b->parties;
	jtext_open(t, '{');
	jtext_kv(t, "billID", b->bill_id);
	jtext_kv(t, "integratorID", b->integrator_id);
	jtext_key(t, "billData");
	jtext_open(t, '{');
	jtext_kv(t, "status", domain_bill_status_name(b->status));
	jtext_key(t, "testData");
	jtext_open(t, '[');
	for (size_t i = 0; i < n; i++) {
		jtext_open(t, '{');
		jtext_kv(t, "_id", r[i].report_id);
		jtext_kv(t, "name", r[i].name);
		jtext_kv(t, "status", r[i].status == REPORT_COMPLETED ? "completed" : "pending");
		jtext_close(t, '}');
	}
	jtext_close(t, ']');
	jtext_close(t, '}');
	if (p->corporate_user[0])
		jtext_kv(t, "corporateUser", p->corporate_user);
	if (p->referred_org[0])
		jtext_kv(t, "referredOrganization", p->referred_org);
	if (p->referred_hospital_org[0])
		jtext_kv(t, "referredHospitalOrganization", p->referred_hospital_org);
}

json_t *domain_bill_json(const struct bill *b, const struct report *r, size_t n)
{
	struct jtext t;
	jtext_init(&t, EVENT_TEXT_MAX);
	bill_fields(&t, b, r, n);
	jtext_close(&t, '}');
	char *text = jtext_take(&t);
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	return o;
}

/* JSON text of d (taken), owned; NULL when d is NULL or out of memory. */
static char *text_of(json_t *d)
{
	char *text = jtext_dump(d, 0, EVENT_TEXT_MAX);
	json_decref(d);
	return text;
}

/* Makes an event about an entity: a new id, now, and its payload, the envelope of API.md 6
 * around data (JSON text, taken; NULL: out of memory). Free ev->payload. */
static enum lh_err event_make(struct event *ev, const char *client_id, const char *lab_id,
                              enum event_type type, const char *entity_id, char *data)
{
	enum lh_err e;
	struct jtext t;

	memset(ev, 0, sizeof *ev);
	if (!data)
		return LH_ENOMEM;
	if ((e = util_new_id("evt_", ev->event_id)) != LH_OK) {
		free(data);
		return e;
	}
	snprintf(ev->client_id, sizeof ev->client_id, "%s", client_id);
	snprintf(ev->lab_id, sizeof ev->lab_id, "%s", lab_id);
	snprintf(ev->entity_id, sizeof ev->entity_id, "%s", entity_id);
	ev->type = (int)type;
	ev->created_at = util_now();
	jtext_init(&t, EVENT_TEXT_MAX);
	jtext_open(&t, '{');
	jtext_kv(&t, "eventID", ev->event_id);
	jtext_kv(&t, "labID", ev->lab_id);
	jtext_kv(&t, "eventType", event_name(type));
	jtext_key(&t, "eventTime");
	jtext_int(&t, ev->created_at);
	jtext_key(&t, "data");
	jtext_raw(&t, data, strlen(data));
	jtext_close(&t, '}');
	free(data);
	ev->payload = jtext_take(&t);
	return ev->payload ? LH_OK : LH_ENOMEM;
}

/* Writes a made event with its deliveries (to the subscriptions of its lab and parties,
 * or only to only_sub). */
static enum lh_err event_write(struct store_tx *tx, const struct event *ev, const struct parties *p,
                               const char *only_sub, struct domain_outcome *out)
{
	const char *party_ids[3] = {p->corporate_user, p->referred_org, p->referred_hospital_org};
	/* No count asked for: the store may then answer the event later in the batch. */
	enum lh_err e = tx->ops->event_insert(tx, ev, party_ids, 3, only_sub, NULL);
	if (e == LH_OK)
		memcpy(out->event_id, ev->event_id, ID_CAP);
	return e;
}

/* Writes one event about an entity with its deliveries; takes ownership of data (JSON
 * text; NULL: out of memory). */
static enum lh_err emit_to(struct store_tx *tx, const char *client_id, const char *lab_id,
                           enum event_type type, const char *entity_id, const struct parties *p,
                           char *data, const char *only_sub, struct domain_outcome *out)
{
	struct event ev;
	enum lh_err e = event_make(&ev, client_id, lab_id, type, entity_id, data);
	if (e == LH_OK)
		e = event_write(tx, &ev, p, only_sub, out);
	free((char *)ev.payload);
	return e;
}

static enum lh_err emit(struct store_tx *tx, const char *client_id, const char *lab_id,
                        enum event_type type, const char *entity_id, const struct parties *p,
                        char *data, struct domain_outcome *out)
{
	return emit_to(tx, client_id, lab_id, type, entity_id, p, data, NULL, out);
}

void domain_report_link(const struct domain_links *l, const char *bill_id, const char *report_id,
                        int64_t now, char *out, size_t cap)
{
	char sig[SIG_LINK_HEX];
	int64_t expires = now + l->ttl_s;
	if (sig_report_link(l->key, bill_id, report_id, expires, sig) != 0)
		sig[0] = '\0'; /* a link that fails its check, rather than none */
	snprintf(out, cap, "%s/reports/%s/%s?expires=%lld&sig=%s", l->public_url, bill_id,
	         report_id, (long long)expires, sig);
}

enum link_check domain_report_link_check(const struct domain_links *l, const char *bill_id,
                                         const char *report_id, const char *expires,
                                         const char *sig, int64_t now, int64_t *expires_at)
{
	char want[SIG_LINK_HEX];
	size_t n = expires ? strlen(expires) : 0;
	if (!sig || strlen(sig) != SIG_LINK_HEX - 1 || n == 0 || n > 18 ||
	    strspn(expires, "0123456789") != n)
		return LINK_BAD_SIGNATURE;
	int64_t exp = strtoll(expires, NULL, 10);
	if (sig_report_link(l->key, bill_id, report_id, exp, want) != 0 ||
	    !util_ct_equal(want, sig, SIG_LINK_HEX - 1))
		return LINK_BAD_SIGNATURE;
	*expires_at = exp;
	return now > exp ? LINK_EXPIRED : LINK_OK;
}

/* The data of a bill event, JSON text (owned; NULL: out of memory). link: the report whose
 * reportURL it carries (NULL: none); with its reportID too when with_id (report.completed),
 * and its document's description when doc is set. */
static char *bill_event_data(const struct domain_links *l, const struct bill *b,
                             const struct report *r, size_t n, const struct report *link,
                             int with_id, const struct report_doc *doc)
{
	struct jtext t;
	char url[1024], sha[65];
	jtext_init(&t, EVENT_TEXT_MAX);
	bill_fields(&t, b, r, n);
	if (link) {
		domain_report_link(l, b->bill_id, link->report_id, util_now(), url, sizeof url);
		if (with_id)
			jtext_kv(&t, "reportID", link->report_id);
		jtext_kv(&t, "reportURL", url);
	}
	if (doc) {
		util_hex(doc->sha256, 32, sha);
		jtext_key(&t, "document");
		jtext_open(&t, '{');
		jtext_kv(&t, "contentType", doc->content_type);
		jtext_key(&t, "size");
		jtext_int(&t, (int64_t)doc->size);
		jtext_kv(&t, "sha256", sha);
		jtext_key(&t, "version");
		jtext_int(&t, (int64_t)doc->version);
		jtext_close(&t, '}');
	}
	jtext_close(&t, '}');
	return jtext_take(&t);
}

/* ---- bills ---- */

struct bill_job {
	const struct domain_links *links;
	const char *client_id; /* NULL: any account */
	const char *bill_id, *report_id;
	const struct domain_doc *doc;
	struct domain_bill_change *change; /* where the document's outcome goes */
	struct bill *bill;
	struct domain_outcome *out;
};

enum lh_err domain_bill_prepare(struct domain_bill_new *j, const struct domain_links *links,
                                const struct bill *b, const struct report *reports,
                                const struct bill_ref *refs, size_t n)
{
	memset(j, 0, sizeof *j);
	j->links = links;
	j->bill = b;
	j->reports = reports;
	j->refs = refs;
	j->n = n;
	j->out.changed = 1;
	/* Everything bill.created carries is known now: its payload is built here, on the
	 * caller's thread, rather than inside the writer's transaction. */
	return event_make(&j->ev, b->client_id, b->lab_id, EV_BILL_CREATED, b->bill_id,
	                  bill_event_data(links, b, reports, n, NULL, 0, NULL));
}

/* Appends a copy of r named name (of package) to a growing list of reports. */
static enum lh_err push_report(struct report **arr, size_t *n, size_t *cap, const struct report *r,
                               const char *name, const char *package)
{
	if (UTIL_GROW(*arr, *cap, *n + 1, 8))
		return LH_ENOMEM;
	struct report *o = &(*arr)[(*n)++];
	*o = *r;
	snprintf(o->name, sizeof o->name, "%s", name);
	snprintf(o->package, sizeof o->package, "%s", package);
	return LH_OK;
}

/* The reports of one catalog reference (see domain.h), appended to out. */
static enum lh_err catalog_reports(struct store_tx *tx, struct domain_bill_new *j,
                                   const struct report *r, const struct bill_ref *f,
                                   struct report **out, size_t *n, size_t *cap)
{
	enum catalog_kind kind = (enum catalog_kind)f->kind;
	struct catalog_item it;
	struct catalog_member *m = NULL;
	size_t nm = 0;
	enum lh_err e = strlen(f->id) < ID_CAP
	                    ? tx->ops->catalog_get(tx, j->bill->lab_id, kind, f->id, &it,
	                                           kind == CATALOG_PACKAGE ? &m : NULL, &nm)
	                    : LH_ENOTFOUND;
	if (e != LH_OK)
		return e; /* LH_ENOTFOUND: catalog_apply decides */
	if (nm == 0)
		e = push_report(out, n, cap, r, it.name, kind == CATALOG_PACKAGE ? it.id : "");
	for (size_t k = 0; e == LH_OK && k < nm; k++) {
		struct report t = *r;
		/* The first test keeps the report id made for the package. */
		if (k > 0 && (e = util_new_id("rep_", t.report_id)) != LH_OK)
			break;
		e = push_report(out, n, cap, &t, m[k].name, it.id);
	}
	free(m);
	return e;
}

/* An id the catalog does not hold: refused if the lab has a catalog now, else *none = 1
 * (it was emptied since the caller looked: the bill keeps its ids as sent). */
static enum lh_err catalog_miss(struct store_tx *tx, struct domain_outcome *o, const char *lab_id,
                                int kind, const char *field, const char *id, int *none)
{
	int any = 0;
	enum lh_err e = tx->ops->catalog_any(tx, lab_id, &any);
	if (e != LH_OK)
		return e;
	*none = !any;
	if (!any)
		return LH_OK;
	return refuse(o, LH_EINVAL, "unknown_catalog_item", field,
	              "%s: unknown %s '%.64s' in the lab's catalog", field,
	              kind == CATALOG_TEST ? "test" : "package", id);
}

/* Applies the lab's catalog to the bill's reports (see domain.h): when it changes them,
 * j->reports becomes j->own and bill.created is made again with them. The caller leaves
 * refs NULL for a lab it saw without a catalog: one query fewer in the writer for every
 * bill of such a lab. */
static enum lh_err catalog_apply(struct store_tx *tx, struct domain_bill_new *j)
{
	struct report *out = NULL;
	size_t n = 0, cap = 0;
	int none = 0;
	enum lh_err e = LH_OK;
	for (size_t i = 0; j->refs && e == LH_OK && i < j->n; i++) {
		const struct report *r = &j->reports[i];
		const struct bill_ref *f = &j->refs[i];
		e = f->kind < 0 ? push_report(&out, &n, &cap, r, r->name, r->package)
		                : catalog_reports(tx, j, r, f, &out, &n, &cap);
		if (e == LH_ENOTFOUND &&
		    (e = catalog_miss(tx, &j->out, j->bill->lab_id, f->kind, f->field, f->id,
		                      &none)) == LH_OK &&
		    none) {
			free(out);
			return LH_OK;
		}
	}
	if (!j->refs)
		return LH_OK;
	if (e == LH_OK && n > DOMAIN_MAX_REPORTS)
		e = refuse(&j->out, LH_EINVAL, "too_many_tests", "mapped_packages",
		           "with its packages' tests the bill would hold %zu tests; at most %d", n,
		           DOMAIN_MAX_REPORTS);
	if (e != LH_OK) {
		free(out);
		return e;
	}
	for (size_t i = 0; i < n; i++)
		out[i].seq = (int)i;
	free(j->own);
	j->own = out;
	j->reports = out;
	j->n = n;
	j->refs = NULL; /* they described the reports as sent */
	free((char *)j->ev.payload);
	return event_make(&j->ev, j->bill->client_id, j->bill->lab_id, EV_BILL_CREATED,
	                  j->bill->bill_id,
	                  bill_event_data(j->links, j->bill, out, n, NULL, 0, NULL));
}

enum lh_err domain_bill_create_tx(struct store_tx *tx, void *arg)
{
	struct domain_bill_new *j = arg;
	/* It may run again after a rollback (STORE_JOB_RERUN): what the catalog made is kept
	 * (refs are gone then). */
	enum lh_err e = catalog_apply(tx, j);
	if (e != LH_OK)
		return e;
	e = tx->ops->bill_insert(tx, j->bill, j->reports, j->n);
	if (e == LH_ECONFLICT)
		return refuse(&j->out, e, "duplicate_bar_code", "barCode",
		              "barCode '%.64s' is already used by another bill of this lab",
		              j->bill->bar_code);
	if (e != LH_OK)
		return e;
	return event_write(tx, &j->ev, &j->bill->parties, NULL, &j->out);
}

void domain_bill_release(struct domain_bill_new *j)
{
	if (!j)
		return;
	free((char *)j->ev.payload);
	j->ev.payload = NULL;
	free(j->own);
	j->own = NULL;
}

/* Loads the bill for a change; refuses unknown, foreign and deleted bills. */
static enum lh_err load_live_bill(struct store_tx *tx, struct bill_job *j, struct report **r,
                                  size_t *n)
{
	enum lh_err e = tx->ops->bill_load(tx, j->bill_id, j->bill, r, n);
	if (e == LH_OK && j->client_id && strcmp(j->bill->client_id, j->client_id) != 0) {
		free(*r);
		*r = NULL;
		e = LH_ENOTFOUND;
	}
	if (e == LH_ENOTFOUND)
		return refuse(j->out, e, "bill_not_found", NULL, "no bill with this id");
	if (e != LH_OK)
		return e;
	if (j->bill->status == BILL_DELETED) {
		free(*r);
		*r = NULL;
		return refuse(j->out, LH_ECONFLICT, "bill_deleted", NULL,
		              "the bill was deleted and takes no more changes");
	}
	return LH_OK;
}

/* Stores j's document unless the report has these very bytes already. */
static enum lh_err doc_store(struct store_tx *tx, struct bill_job *j, int64_t now)
{
	struct domain_bill_change *c = j->change;
	struct report_doc cur;
	enum lh_err e = tx->ops->doc_meta(tx, j->bill_id, j->report_id, &cur);
	if (e != LH_OK && e != LH_ENOTFOUND)
		return e;
	int had = e == LH_OK;
	if (had && memcmp(cur.sha256, j->doc->sha256, 32) == 0) {
		c->has_doc = 1;
		c->stored = cur;
		return LH_OK;
	}
	int64_t version = had ? cur.version + 1 : 1;
	memset(&cur, 0, sizeof cur);
	snprintf(cur.bill_id, sizeof cur.bill_id, "%s", j->bill_id);
	snprintf(cur.report_id, sizeof cur.report_id, "%s", j->report_id);
	snprintf(cur.content_type, sizeof cur.content_type, "%s", j->doc->content_type);
	cur.size = (int64_t)j->doc->len;
	memcpy(cur.sha256, j->doc->sha256, 32);
	cur.version = version;
	cur.updated_at = now;
	if ((e = tx->ops->doc_put(tx, &cur, j->doc->data, j->doc->len)) != LH_OK)
		return e;
	c->has_doc = c->doc_changed = 1;
	c->stored = cur;
	return LH_OK;
}

static enum lh_err job_report_complete(struct store_tx *tx, void *arg)
{
	struct bill_job *j = arg;
	struct report *r = NULL, *done = NULL;
	size_t n = 0, remaining = 0;
	int64_t now = util_now();
	enum lh_err e = load_live_bill(tx, j, &r, &n);
	if (e != LH_OK)
		return e;
	for (size_t i = 0; i < n; i++)
		if (strcmp(r[i].report_id, j->report_id) == 0)
			done = &r[i];
	if (!done) {
		e = refuse(j->out, LH_ENOTFOUND, "report_not_found", NULL,
		           "the bill has no report with this id");
		goto out;
	}
	if (j->doc && (e = doc_store(tx, j, now)) != LH_OK)
		goto out;
	int first = done->status != REPORT_COMPLETED;
	if (!first && !j->change->doc_changed) {
		j->out->changed = 0; /* completing twice (with the same document) is a no-op */
		goto out;
	}
	if (first) {
		done->status = REPORT_COMPLETED;
		done->completed_at = now;
		if ((e = tx->ops->report_update(tx, done)) != LH_OK)
			goto out;
		for (size_t i = 0; i < n; i++)
			remaining += r[i].status != REPORT_COMPLETED;
		if (remaining == 0) {
			j->bill->status = BILL_COMPLETED;
			j->bill->updated_at = now;
			if ((e = tx->ops->bill_update(tx, j->bill)) != LH_OK)
				goto out;
		}
	}
	j->out->changed = 1;
	e = emit(tx, j->bill->client_id, j->bill->lab_id, EV_REPORT_COMPLETED, j->bill->bill_id,
	         &j->bill->parties,
	         bill_event_data(j->links, j->bill, r, n, done, 1,
	                         j->change->has_doc ? &j->change->stored : NULL),
	         j->out);
	/* The writer runs jobs one at a time, so only the job that completes the last report
	 * sees remaining == 0: bill.completed is emitted exactly once (a replaced document
	 * later is not a first completion). */
	if (e == LH_OK && first && remaining == 0)
		e = emit(tx, j->bill->client_id, j->bill->lab_id, EV_BILL_COMPLETED,
		         j->bill->bill_id, &j->bill->parties,
		         bill_event_data(j->links, j->bill, r, n, done, 0, NULL), j->out);
out:
	free(r);
	return e;
}

void domain_bill_change_init(struct domain_bill_change *c, const struct domain_links *links,
                             const char *client_id, const char *bill_id, const char *report_id)
{
	memset(c, 0, sizeof *c);
	c->links = links;
	snprintf(c->client_id, sizeof c->client_id, "%s", client_id ? client_id : "");
	snprintf(c->bill_id, sizeof c->bill_id, "%s", bill_id);
	snprintf(c->report_id, sizeof c->report_id, "%s", report_id ? report_id : "");
}

/* The job's view of a change: what the job functions take. */
static struct bill_job bill_job_of(struct domain_bill_change *c)
{
	return (struct bill_job){.links = c->links,
	                         .client_id = c->client_id[0] ? c->client_id : NULL,
	                         .bill_id = c->bill_id,
	                         .report_id = c->report_id,
	                         .doc = c->doc,
	                         .change = c,
	                         .bill = &c->bill,
	                         .out = &c->out};
}

enum lh_err domain_report_complete_tx(struct store_tx *tx, void *arg)
{
	struct bill_job j = bill_job_of(arg);
	return job_report_complete(tx, &j);
}

static enum lh_err job_bill_delete(struct store_tx *tx, void *arg)
{
	struct bill_job *j = arg;
	struct report *r = NULL;
	size_t n = 0;
	enum lh_err e = load_live_bill(tx, j, &r, &n);
	if (e != LH_OK)
		return e;
	j->bill->status = BILL_DELETED;
	j->bill->updated_at = util_now();
	e = tx->ops->bill_update(tx, j->bill);
	if (e == LH_OK)
		e = emit(tx, j->bill->client_id, j->bill->lab_id, EV_BILL_DELETED, j->bill->bill_id,
		         &j->bill->parties, bill_event_data(j->links, j->bill, r, n, NULL, 0, NULL),
		         j->out);
	free(r);
	return e;
}

enum lh_err domain_bill_delete_tx(struct store_tx *tx, void *arg)
{
	struct bill_job j = bill_job_of(arg);
	j.out->changed = 1;
	return job_bill_delete(tx, &j);
}

/* ---- leads and bookings ---- */

struct lead_job {
	struct lead *lead;
	struct booking *bk;
	const char *lead_id;
	int catalog; /* the caller saw a catalog in the lead's lab */
	struct domain_outcome *out;
};

static json_t *booking_data(const struct booking *bk, int with_lead)
{
	json_t *d =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "bookingID", bk->booking_id, "integratorID",
	              bk->integrator_id, "bookingType", bk->booking_type, "scheduledAt",
	              bk->scheduled_at, "bookingStatus", "Scheduled", "paymentStatus", "Pending");
	if (d && with_lead)
		json_object_set_new(d, "leadID", json_string(bk->lead_id));
	if (d)
		add_parties(d, &bk->parties);
	return d;
}

/* A lead's tests and packages in a lab with a catalog (see domain.h): each must be an id of
 * the catalog; d (the lead's fields) gets testDetails and packageDetails, [{_id, name}]. */
static enum lh_err lead_catalog(struct store_tx *tx, struct lead_job *j, json_t *d)
{
	static const struct {
		const char *list, *details;
		enum catalog_kind kind;
	} lists[] = {{"tests", "testDetails", CATALOG_TEST},
	             {"packages", "packageDetails", CATALOG_PACKAGE}};
	enum lh_err e;
	if (!j->catalog)
		return LH_OK;
	for (size_t k = 0; k < COUNTOF(lists); k++) {
		json_t *arr = json_object_get(d, lists[k].list), *v, *details = json_array();
		size_t i;
		json_object_set_new(d, lists[k].details, details);
		json_array_foreach(arr, i, v)
		{
			struct catalog_item it;
			const char *id = json_string_value(v);
			e = id && strlen(id) < ID_CAP
			        ? tx->ops->catalog_get(tx, j->lead->lab_id, lists[k].kind, id, &it,
			                               NULL, NULL)
			        : LH_ENOTFOUND;
			if (e == LH_ENOTFOUND) {
				char *f = j->out->field_buf;
				int none = 0;
				snprintf(f, sizeof j->out->field_buf, "%s[%zu]", lists[k].list, i);
				e = catalog_miss(tx, j->out, j->lead->lab_id, lists[k].kind, f,
				                 id ? id : "", &none);
				if (e == LH_OK && none) { /* emptied since: free text, as sent */
					json_object_del(d, "testDetails");
					json_object_del(d, "packageDetails");
				}
				return e;
			}
			if (e != LH_OK)
				return e;
			json_array_append_new(
			    details, json_pack("{s:s, s:s}", "_id", it.id, "name", it.name));
		}
	}
	return LH_OK;
}

static enum lh_err job_lead_create(struct store_tx *tx, void *arg)
{
	struct lead_job *j = arg;
	struct lead *l = j->lead;
	int dup = 0;
	enum lh_err e = tx->ops->lead_dup(tx, l->lab_id, l->day, l->contact, l->email, &dup);
	if (e != LH_OK)
		return e;
	if (dup)
		return refuse(
		    j->out, LH_ECONFLICT, "duplicate_lead", "contact",
		    "a lead with this contact or email was already created in this lab today");
	json_t *d = json_loads(l->data, 0, NULL);
	if (!d)
		return LH_ENOMEM;
	if ((e = lead_catalog(tx, j, d)) != LH_OK || (e = tx->ops->lead_insert(tx, l)) != LH_OK) {
		json_decref(d);
		return e;
	}
	if (l->phase == PHASE_BOOKING) {
		json_decref(d);
		if ((e = tx->ops->booking_insert(tx, j->bk)) != LH_OK)
			return e;
		return emit(tx, l->client_id, l->lab_id, EV_BOOKING_CREATED, l->lead_id,
		            &l->parties, text_of(booking_data(j->bk, 0)), j->out);
	}
	json_object_set_new(d, "leadID", json_string(l->lead_id));
	json_object_set_new(d, "integratorID", json_string(l->integrator_id));
	json_object_set_new(d, "phase", json_string("lead"));
	add_parties(d, &l->parties);
	return emit(tx, l->client_id, l->lab_id, EV_LEAD_CREATED, l->lead_id, &l->parties,
	            text_of(d), j->out);
}

enum lh_err domain_lead_create_tx(struct store_tx *tx, void *arg)
{
	struct domain_lead_change *c = arg;
	struct lead_job j = {.lead = &c->lead, .bk = &c->bk, .catalog = c->catalog, .out = &c->out};
	c->out.changed = 1;
	return job_lead_create(tx, &j);
}

static enum lh_err job_lead_convert(struct store_tx *tx, void *arg)
{
	struct lead_job *j = arg;
	struct lead l;
	struct booking *bk = j->bk;
	enum lh_err e = tx->ops->lead_load(tx, j->lead_id, &l);
	if (e == LH_ENOTFOUND)
		return refuse(j->out, e, "lead_not_found", NULL, "no lead with this id");
	if (e != LH_OK)
		return e;
	if (l.booking_id[0])
		return refuse(j->out, LH_ECONFLICT, "lead_already_booked", NULL,
		              "the lead was already converted to booking %s", l.booking_id);
	snprintf(bk->lead_id, sizeof bk->lead_id, "%s", l.lead_id);
	snprintf(bk->client_id, sizeof bk->client_id, "%s", l.client_id);
	snprintf(bk->lab_id, sizeof bk->lab_id, "%s", l.lab_id);
	snprintf(bk->integrator_id, sizeof bk->integrator_id, "%s", l.integrator_id);
	bk->parties = l.parties;
	if ((e = tx->ops->booking_insert(tx, bk)) != LH_OK ||
	    (e = tx->ops->lead_set_booking(tx, l.lead_id, bk->booking_id)) != LH_OK)
		return e;
	return emit(tx, l.client_id, l.lab_id, EV_BOOKING_CREATED, l.lead_id, &l.parties,
	            text_of(booking_data(bk, 1)), j->out);
}

enum lh_err domain_lead_convert_tx(struct store_tx *tx, void *arg)
{
	struct domain_lead_change *c = arg;
	struct lead_job j = {.bk = &c->bk, .lead_id = c->lead_id, .out = &c->out};
	c->out.changed = 1;
	return job_lead_convert(tx, &j);
}

/* Whether a lab has a catalog, remembered for CATALOG_SEEN_MS: asked by every bill that
 * names catalog ids, and a store query per bill cost PostgreSQL nodes a pool connection
 * each. A change made through this process forgets the lab at once (exact on SQLite); one
 * made on another node is seen within CATALOG_SEEN_MS. Direct-mapped by the lab id's
 * hash; the store is part of the key (tests open several). */
#define CATALOG_SEEN_SLOTS 256
#define CATALOG_SEEN_MS    1000
struct catalog_seen {
	const struct store *st;
	char lab_id[ID_CAP];
	int has;
	int64_t until_us;
};
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct catalog_seen seen[CATALOG_SEEN_SLOTS];
static uint64_t seen_gen; /* bumped by every change: an answer read across one is not kept */

static size_t seen_slot(const char *lab_id)
{
	return (size_t)(util_fnv1a(UTIL_FNV_BASIS, lab_id) % CATALOG_SEEN_SLOTS);
}

enum lh_err domain_has_catalog(struct store *st, const char *lab_id, int *has)
{
	struct catalog_item *one = NULL;
	size_t n = 0, at = seen_slot(lab_id);
	int64_t now = util_mono_us();
	pthread_mutex_lock(&seen_mu);
	struct catalog_seen c = seen[at];
	uint64_t gen = seen_gen;
	pthread_mutex_unlock(&seen_mu);
	if (c.st == st && now < c.until_us && strcmp(c.lab_id, lab_id) == 0) {
		*has = c.has;
		return LH_OK;
	}
	enum lh_err e = st->ops->catalog_list(st, lab_id, CATALOG_ANY, "", 0, 0, 1, &one, &n, NULL);
	free(one);
	if (e != LH_OK)
		return e;
	*has = n > 0;
	c.st = st;
	snprintf(c.lab_id, sizeof c.lab_id, "%s", lab_id);
	c.has = *has;
	c.until_us = now + CATALOG_SEEN_MS * 1000;
	pthread_mutex_lock(&seen_mu);
	if (gen == seen_gen)
		seen[at] = c;
	pthread_mutex_unlock(&seen_mu);
	return LH_OK;
}

void domain_catalog_changed(const char *lab_id)
{
	size_t at = seen_slot(lab_id);
	pthread_mutex_lock(&seen_mu);
	seen_gen++;
	if (strcmp(seen[at].lab_id, lab_id) == 0)
		seen[at].until_us = 0;
	pthread_mutex_unlock(&seen_mu);
}

/* ---- test events ---- */

struct test_job {
	const struct subscription *sub;
	struct domain_outcome *out;
};

static enum lh_err job_test_event(struct store_tx *tx, void *arg)
{
	struct test_job *j = arg;
	struct parties none;
	memset(&none, 0, sizeof none);
	json_t *d = json_pack("{s:s, s:s}", "subscriptionID", j->sub->id, "message",
	                      "This is a test event from labhook.");
	/* Each test event is its own entity, so one still retrying does not hold the next. */
	char entity[ID_CAP];
	enum lh_err e = util_new_id("test_", entity);
	if (e != LH_OK) {
		json_decref(d);
		return e;
	}
	return emit_to(tx, j->sub->client_id, j->sub->lab_id, EV_WEBHOOK_TEST, entity, &none,
	               text_of(d), j->sub->id, j->out);
}

enum lh_err domain_test_event(struct store *st, const struct subscription *sub,
                              char event_id[ID_CAP], struct domain_outcome *out)
{
	struct test_job j = {.sub = sub, .out = out};
	out->changed = 1;
	enum lh_err e = st->ops->submit(st, job_test_event, &j);
	if (e == LH_OK)
		memcpy(event_id, out->event_id, ID_CAP);
	return e;
}
