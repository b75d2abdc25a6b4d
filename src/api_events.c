/* api_events.c: where events come from (API.md 5): bills and leads from integrators
 * (/client/...), and what lab staff do (/lab/..., admin key). Validation lives here; the
 * rules and the commit with events and deliveries live in domain.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "api.h"
#include "domain.h"

static const char *public_url(struct call *c)
{
	return c->app->public_url;
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

static int one_of(const char *v, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (strcmp(v, *allowed) == 0)
			return 1;
	return 0;
}

static const char *str(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An enumerated string field: 400 naming the allowed values. */
static int check_enum(struct call *c, const json_t *o, const char *key, const char *path,
                      const char *const *allowed, const char *list)
{
	const char *v = str(o, key);
	if (v && !one_of(v, allowed))
		return api_fail(c, LH_EINVAL, "invalid_value", path, "'%s' must be one of %s", path,
		                list);
	return 0;
}

static const char *const genders[] = {"male", "female", "other", NULL};
static const char *const age_types[] = {"year", "month", "day", NULL};

/* The parties an entity carries: each must be the account's, of the right kind; a
 * party-scoped account must send at least one. */
static int resolve_parties(struct call *c, const struct account *acct, const json_t *b,
                           struct parties *out)
{
	static const struct {
		const char *field;
		enum party_kind kind;
		size_t off;
	} slots[] = {
	    {"corporateUser", PARTY_CORPORATE_USER, offsetof(struct parties, corporate_user)},
	    {"referredOrganization", PARTY_ORGANIZATION, offsetof(struct parties, referred_org)},
	    {"referredHospitalOrganization", PARTY_ORGANIZATION,
	     offsetof(struct parties, referred_hospital_org)},
	};
	int any = 0;
	memset(out, 0, sizeof *out);
	for (size_t i = 0; i < 3; i++) {
		const char *id = str(b, slots[i].field);
		struct party p;
		if (!id || !*id)
			continue;
		enum lh_err e =
		    strlen(id) < ID_CAP
		        ? c->app->store->ops->party_get(c->app->store, acct->client_id, id, &p)
		        : LH_ENOTFOUND;
		if (e == LH_OK && p.kind != slots[i].kind)
			e = LH_ENOTFOUND;
		if (e == LH_ENOTFOUND)
			return api_fail(c, e, "party_not_found", slots[i].field,
			                "no %s with this id in the account",
			                slots[i].kind == PARTY_CORPORATE_USER ? "corporate user"
			                                                      : "organization");
		if (e != LH_OK)
			return api_fail_internal(c, e, "load party");
		memcpy((char *)out + slots[i].off, p.party_id, ID_CAP);
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

#define BILL_FIELDS                                                                                \
	{"labID", F_STRING, 1, 64, 0}, {"patient_details", F_OBJECT, 1, 0, 0},                     \
	    {"integrator_id", F_STRING, 1, NAME_CAP - 1, 0},                                       \
	    {"lead_source", F_STRING, 0, NAME_CAP - 1, 0},                                         \
	    {"mapped_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},                                   \
	    {"unmapped_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},                                 \
	    {"mapped_packages", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},                                \
	    {"unmapped_packages", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},                              \
	    {"unmapped_packages_with_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},                   \
	    {"barCode", F_STRING, 0, NAME_CAP - 1, 0}, {"corporateUser", F_STRING, 0, 64, 0},      \
	    {"referredOrganization", F_STRING, 0, 64, 0},                                          \
	{                                                                                          \
		"referredHospitalOrganization", F_STRING, 0, 64, 0                                 \
	}

static const struct field_spec bill_fields[] = {BILL_FIELDS};
static const struct field_spec lab_bill_fields[] = {BILL_FIELDS, {"clientID", F_STRING, 1, 64, 0}};

static const struct field_spec patient_fields[] = {
    {"first_name", F_STRING, 1, NAME_CAP - 1, 0},
    {"last_name", F_STRING, 0, NAME_CAP - 1, 0},
    {"gender", F_STRING, 1, 16, 0},
    {"age", F_INTEGER, 1, 0, 0},
    {"age_type", F_STRING, 1, 16, 0},
};

/* A test or package reference: a string, or an integer written as one. */
static int ref_text(const json_t *v, char *out, size_t cap)
{
	if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < cap &&
	    strlen(json_string_value(v)) == json_string_length(v)) {
		snprintf(out, cap, "%s", json_string_value(v));
		return 0;
	}
	if (json_is_integer(v)) {
		snprintf(out, cap, "%lld", (long long)json_integer_value(v));
		return 0;
	}
	return -1;
}

struct report_list {
	struct report *r;
	size_t n, cap;
};

static int add_report(struct call *c, struct report_list *rl, const char *name, const char *package)
{
	if (rl->n >= DOMAIN_MAX_REPORTS)
		return api_fail(c, LH_EINVAL, "too_many_tests", NULL,
		                "a bill may hold at most %d tests", DOMAIN_MAX_REPORTS);
	if (UTIL_GROW(rl->r, rl->cap, rl->n + 1, 4))
		return api_fail_internal(c, LH_ENOMEM, "add report");
	struct report *r = &rl->r[rl->n];
	memset(r, 0, sizeof *r);
	if (util_new_id("rep_", r->report_id) != LH_OK)
		return api_fail_internal(c, LH_EIO, "new report id");
	r->seq = (int)rl->n;
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->package, sizeof r->package, "%s", package ? package : "");
	rl->n++;
	return 0;
}

/* Turns the five test and package lists into reports: one per test; a package contributes
 * its tests, or one report when it lists none. */
static int collect_reports(struct call *c, const json_t *b, struct report_list *rl)
{
	static const char *const lists[] = {"mapped_tests", "unmapped_tests", "mapped_packages",
	                                    "unmapped_packages", "unmapped_packages_with_tests"};
	char path[96], name[NAME_CAP];
	for (size_t li = 0; li < 5; li++) {
		const json_t *arr = json_object_get(b, lists[li]), *v;
		size_t i;
		json_array_foreach(arr, i, v)
		{
			snprintf(path, sizeof path, "%s[%zu]", lists[li], i);
			if (li == 1 || li == 3) { /* plain names */
				if (ref_text(v, name, sizeof name) || !json_is_string(v))
					return api_fail(
					    c, LH_EINVAL, "invalid_value", path,
					    "'%s' must be a non-empty string of at most %d bytes",
					    path, NAME_CAP - 1);
				if (add_report(c, rl, name, li == 3 ? name : NULL))
					return -1;
				continue;
			}
			if (!json_is_object(v))
				return api_fail(c, LH_EINVAL, "invalid_type", path,
				                "'%s' must be an object", path);
			if (li == 4) {
				static const struct field_spec pk[] = {
				    {"package_name", F_STRING, 1, NAME_CAP - 1, 0},
				    {"tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0}};
				struct verr ve;
				const json_t *t;
				size_t k;
				if (validate_object(v, pk, 2, &ve)) {
					char f[160];
					snprintf(f, sizeof f, "%s.%s", path, ve.field);
					return api_fail(c, ve.err, ve.code, f, "%s: %s", path,
					                ve.message);
				}
				const char *pkg = str(v, "package_name");
				if (json_array_size(json_object_get(v, "tests")) == 0 &&
				    add_report(c, rl, pkg, pkg))
					return -1;
				json_array_foreach(json_object_get(v, "tests"), k, t)
				{
					if (!json_is_string(t) || ref_text(t, name, sizeof name))
						return api_fail(
						    c, LH_EINVAL, "invalid_value", path,
						    "'%s.tests[%zu]' must be a non-empty string",
						    path, k);
					if (add_report(c, rl, name, pkg))
						return -1;
				}
				continue;
			}
			/* mapped_tests: {flabs_id | id, name?}; mapped_packages: {id, name?} */
			const char *keys[] = {"flabs_id", "id", "name"};
			const char *key;
			json_t *x;
			json_object_foreach((json_t *)v, key, x)
			{
				int known = 0;
				for (int k = li == 0 ? 0 : 1; k < 3; k++)
					known |= strcmp(key, keys[k]) == 0;
				if (!known)
					return api_fail(c, LH_EINVAL, "unknown_field", path,
					                "unknown field '%.40s' in '%s'", key, path);
			}
			const json_t *ref = li == 0 && json_object_get(v, "flabs_id")
			                        ? json_object_get(v, "flabs_id")
			                        : json_object_get(v, "id");
			char id[NAME_CAP];
			if (!ref || ref_text(ref, id, sizeof id))
				return api_fail(c, LH_EINVAL,
				                ref ? "invalid_value" : "missing_field", path,
				                "'%s' needs %s (a string or integer)", path,
				                li == 0 ? "'flabs_id' or 'id'" : "'id'");
			const char *nm = str(v, "name");
			if (json_object_get(v, "name") && (!nm || !*nm || strlen(nm) >= NAME_CAP))
				return api_fail(c, LH_EINVAL, "invalid_value", path,
				                "'%s.name' must be a non-empty string", path);
			if (add_report(c, rl, nm ? nm : id, li == 2 ? id : NULL))
				return -1;
		}
	}
	if (rl->n == 0)
		return api_fail(
		    c, LH_EINVAL, "missing_tests", "mapped_tests",
		    "send at least one test or package (mapped_tests, unmapped_tests, mapped_packages, unmapped_packages or unmapped_packages_with_tests)");
	return 0;
}

/* A bill waiting for its commit. */
struct bill_create {
	struct bill bill;
	struct report *reports;
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
	free(bc);
}

/* Validates a bill body for acct and creates it. */
static void create_bill(struct call *c, const struct account *acct, json_t *b)
{
	struct bill_create *bc = NULL;
	struct bill *bill;
	struct report_list rl = {NULL, 0, 0};
	struct lab lab;
	struct verr ve;
	const json_t *pd = json_object_get(b, "patient_details");

	if (validate_object(pd, patient_fields, COUNTOF(patient_fields), &ve)) {
		char f[96];
		snprintf(f, sizeof f, "patient_details.%s", ve.field);
		api_fail(c, ve.err, ve.code, f, "patient_details: %s", ve.message);
		return;
	}
	json_int_t age = json_integer_value(json_object_get(pd, "age"));
	if (age < 0 || age > 200) {
		api_fail(c, LH_EINVAL, "invalid_value", "patient_details.age",
		         "'patient_details.age' must be between 0 and 200");
		return;
	}
	if (check_enum(c, pd, "gender", "patient_details.gender", genders, "male, female, other") ||
	    check_enum(c, pd, "age_type", "patient_details.age_type", age_types,
	               "year, month, day"))
		return;
	bc = calloc(1, sizeof *bc);
	if (!bc) {
		api_fail_internal(c, LH_ENOMEM, "create bill");
		goto out;
	}
	bill = &bc->bill;
	if (collect_reports(c, b, &rl) || load_lab(c, acct, str(b, "labID"), "labID", &lab) ||
	    resolve_parties(c, acct, b, &bill->parties))
		goto out;
	char *patient = json_dumps(pd, JSON_COMPACT);
	if (!patient || strlen(patient) >= sizeof bill->patient) {
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
	snprintf(bill->integrator_id, sizeof bill->integrator_id, "%s", str(b, "integrator_id"));
	snprintf(bill->lead_source, sizeof bill->lead_source, "%s",
	         str(b, "lead_source") ? str(b, "lead_source") : "");
	snprintf(bill->bar_code, sizeof bill->bar_code, "%s",
	         str(b, "barCode") ? str(b, "barCode") : "");
	bill->status = BILL_PENDING;
	bill->created_at = bill->updated_at = util_now();
	for (size_t i = 0; i < rl.n; i++)
		memcpy(rl.r[i].bill_id, bill->bill_id, ID_CAP);
	enum lh_err e = domain_bill_prepare(&bc->job, public_url(c), bill, rl.r, rl.n);
	if (e != LH_OK) {
		domain_bill_release(&bc->job);
		api_fail_internal(c, e, "create bill");
		goto out;
	}
	bc->reports = rl.r;
	rl.r = NULL;
	/* The answer is sent by bill_created once the bill is durable; bc is its. */
	api_submit(c, domain_bill_create_tx, &bc->job, bill_created, bc);
	bc = NULL;
out:
	free(rl.r);
	free(bc);
}

void api_billing_create(struct call *c)
{
	json_t *b = api_body(c, bill_fields, COUNTOF(bill_fields));
	if (b)
		create_bill(c, &c->acct, b);
	json_decref(b);
}

void api_lab_bill_create(struct call *c)
{
	struct account acct;
	json_t *b = api_body(c, lab_bill_fields, COUNTOF(lab_bill_fields));
	if (!b)
		return;
	enum lh_err e = c->app->store->ops->account_get(c->app->store, str(b, "clientID"), &acct);
	if (e == LH_ENOTFOUND)
		api_fail(c, e, "account_not_found", "clientID", "no account with this clientID");
	else if (e != LH_OK)
		api_fail_internal(c, e, "load account");
	else
		create_bill(c, &acct, b);
	json_decref(b);
}

void api_bill_get(struct call *c)
{
	struct bill b;
	struct report *r = NULL;
	size_t n = 0;
	enum lh_err e =
	    c->app->store->ops->bill_get(c->app->store, c->acct.client_id, c->arg[0], &b, &r, &n);
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
	api_ok(c, "ok", json_pack("{s:o}", "bill", j));
	free(r);
}

/* ---- leads ---- */

static const struct field_spec lead_fields[] = {
    {"branchID", F_STRING, 1, 64, 0},
    {"integratorID", F_STRING, 1, NAME_CAP - 1, 0},
    {"first_name", F_STRING, 1, NAME_CAP - 1, 0},
    {"last_name", F_STRING, 0, NAME_CAP - 1, 0},
    {"contact", F_STRING, 1, 32, 0},
    {"email", F_STRING, 0, EMAIL_CAP - 1, 0},
    {"gender", F_STRING, 0, 16, 0},
    {"age", F_INTEGER, 1, 0, 0},
    {"age_type", F_STRING, 1, 16, 0},
    {"address", F_STRING, 0, 1000, 0},
    {"pincode", F_STRING, 0, 12, 0},
    {"source", F_STRING, 0, NAME_CAP - 1, 0},
    {"priority", F_STRING, 0, 16, 0},
    {"tests", F_ARRAY, 0, 100, 0},
    {"packages", F_ARRAY, 0, 100, 0},
    {"phase", F_STRING, 0, 16, 0},
    {"bookingType", F_STRING, 0, 64, 0},
    {"scheduledAt", F_STRING, 0, 40, 0},
    {"corporateUser", F_STRING, 0, 64, 0},
    {"referredOrganization", F_STRING, 0, 64, 0},
    {"referredHospitalOrganization", F_STRING, 0, 64, 0},
};

static int email_ok(const char *e)
{
	const char *at = strchr(e, '@');
	if (!at || at == e || strchr(at + 1, '@') || !strchr(at + 1, '.') || at[1] == '.' ||
	    e[strlen(e) - 1] == '.')
		return 0;
	for (const char *p = e; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return 0;
	return 1;
}

/* bookingType and scheduledAt of a booking (lead create with phase booking, convert). */
static int booking_fields(struct call *c, const json_t *b, struct booking *bk)
{
	const char *type = str(b, "bookingType"), *when = str(b, "scheduledAt");
	int64_t t;
	if (!type || !*type)
		return api_fail(c, LH_EINVAL, "missing_field", "bookingType",
		                "'bookingType' is required for a booking");
	if (!when || !*when)
		return api_fail(c, LH_EINVAL, "missing_field", "scheduledAt",
		                "'scheduledAt' is required for a booking");
	if (util_parse_time(when, &t) != 0 || t < 0 || t > 253402300799LL)
		return api_fail(
		    c, LH_EINVAL, "invalid_value", "scheduledAt",
		    "'scheduledAt' must be an RFC 3339 time such as 2026-01-20T10:30:00Z");
	memset(bk, 0, sizeof *bk);
	if (util_new_id("bkg_", bk->booking_id) != LH_OK)
		return api_fail_internal(c, LH_EIO, "new booking id");
	snprintf(bk->booking_type, sizeof bk->booking_type, "%s", type);
	util_rfc3339(t, bk->scheduled_at);
	bk->created_at = util_now();
	return 0;
}

static int string_list(struct call *c, const json_t *b, const char *key)
{
	const json_t *v;
	size_t i;
	json_array_foreach(json_object_get(b, key), i, v)
	{
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) >= NAME_CAP) {
			char path[64];
			snprintf(path, sizeof path, "%s[%zu]", key, i);
			return api_fail(c, LH_EINVAL, "invalid_value", path,
			                "'%s' must be a non-empty string", path);
		}
	}
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

void api_lead_create(struct call *c)
{
	static const char *const phases[] = {"lead", "booking", NULL};
	static const char *const priorities[] = {"urgent", "high", "medium", "low", NULL};
	struct domain_lead_change *j = NULL;
	struct lead *l;
	struct booking *bk;
	struct lab lab;
	json_t *data = NULL;
	json_t *b = api_body(c, lead_fields, COUNTOF(lead_fields));
	if (!b)
		return;
	const char *contact = str(b, "contact"), *email = str(b, "email");
	if (strlen(contact) != 10 || strspn(contact, "0123456789") != 10) {
		api_fail(c, LH_EINVAL, "invalid_value", "contact",
		         "'contact' must be exactly 10 digits");
		goto out;
	}
	if (email && *email && !email_ok(email)) {
		api_fail(c, LH_EINVAL, "invalid_value", "email", "'email' is not an email address");
		goto out;
	}
	json_int_t age = json_integer_value(json_object_get(b, "age"));
	if (age < 0 || age > 200) {
		api_fail(c, LH_EINVAL, "invalid_value", "age", "'age' must be between 0 and 200");
		goto out;
	}
	const char *pin = str(b, "pincode");
	if (pin && strspn(pin, "0123456789") != strlen(pin)) {
		api_fail(c, LH_EINVAL, "invalid_value", "pincode", "'pincode' must be digits");
		goto out;
	}
	if (check_enum(c, b, "phase", "phase", phases, "lead, booking") ||
	    check_enum(c, b, "gender", "gender", genders, "male, female, other") ||
	    check_enum(c, b, "age_type", "age_type", age_types, "year, month, day") ||
	    check_enum(c, b, "priority", "priority", priorities, "urgent, high, medium, low") ||
	    string_list(c, b, "tests") || string_list(c, b, "packages"))
		goto out;
	if (!(j = calloc(1, sizeof *j))) {
		api_fail_internal(c, LH_ENOMEM, "create lead");
		goto out;
	}
	l = &j->lead;
	bk = &j->bk;
	int booking = str(b, "phase") && strcmp(str(b, "phase"), "booking") == 0;
	if (booking && booking_fields(c, b, bk))
		goto out;
	if (load_lab(c, &c->acct, str(b, "branchID"), "branchID", &lab) ||
	    resolve_parties(c, &c->acct, b, &l->parties))
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
	char *text = json_dumps(data, JSON_COMPACT);
	if (!text || strlen(text) >= sizeof l->data) {
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
	snprintf(l->client_id, sizeof l->client_id, "%s", c->acct.client_id);
	snprintf(l->lab_id, sizeof l->lab_id, "%s", lab.lab_id);
	snprintf(l->integrator_id, sizeof l->integrator_id, "%s", str(b, "integratorID"));
	snprintf(l->contact, sizeof l->contact, "%s", contact);
	for (size_t i = 0; email && email[i] && i + 1 < sizeof l->email; i++)
		l->email[i] = (char)tolower((unsigned char)email[i]);
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
	api_submit(c, domain_lead_create_tx, j, lead_created, j);
	j = NULL; /* lead_created's now */
out:
	json_decref(data);
	free(j);
	json_decref(b);
}

/* ---- lab side (admin key) ---- */

static void report_completed(struct call *c, void *arg, enum lh_err e)
{
	struct domain_bill_change *j = arg;
	if (change_done(c, e, &j->out, "complete report"))
		api_ok(c,
		       j->out.changed ? "Report completed"
		                      : "Report was already completed; nothing changed",
		       json_pack("{s:s, s:s, s:s, s:b}", "billID", j->bill.bill_id, "reportID",
		                 j->report_id, "billStatus",
		                 domain_bill_status_name(j->bill.status), "changed",
		                 j->out.changed));
	free(j);
}

static void bill_deleted(struct call *c, void *arg, enum lh_err e)
{
	struct domain_bill_change *j = arg;
	if (change_done(c, e, &j->out, "delete bill"))
		api_ok(c, "Bill deleted", json_pack("{s:s}", "billID", j->bill_id));
	free(j);
}

/* A change to a bill of any account, answered once it is durable (no thread held). */
static void change_bill(struct call *c, store_tx_fn fn, api_finish_fn done, const char *report)
{
	struct domain_bill_change *j = malloc(sizeof *j);
	if (!j) {
		api_fail_internal(c, LH_ENOMEM, "change bill");
		return;
	}
	domain_bill_change_init(j, public_url(c), NULL, c->arg[0], report);
	api_submit(c, fn, j, done, j);
}

void api_lab_report_complete(struct call *c)
{
	change_bill(c, domain_report_complete_tx, report_completed, c->arg[1]);
}

void api_lab_bill_delete(struct call *c)
{
	change_bill(c, domain_bill_delete_tx, bill_deleted, NULL);
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
	static const struct field_spec spec[] = {
	    {"bookingType", F_STRING, 1, 64, 0},
	    {"scheduledAt", F_STRING, 1, 40, 0},
	};
	struct domain_lead_change *j = NULL;
	json_t *b = api_body(c, spec, COUNTOF(spec));
	if (!b)
		return;
	if (!(j = calloc(1, sizeof *j)))
		api_fail_internal(c, LH_ENOMEM, "convert lead");
	else if (booking_fields(c, b, &j->bk) == 0) {
		snprintf(j->lead_id, sizeof j->lead_id, "%s", c->arg[0]);
		api_submit(c, domain_lead_convert_tx, j, lead_converted, j);
		j = NULL; /* lead_converted's now */
	}
	free(j);
	json_decref(b);
}
