/* fuzz_lead.c: libFuzzer target for the lead bodies: POST /client/crm/lead/create (parse,
 * the field table, validate_lead) and, with the first byte odd, POST
 * /lab/leads/{id}/convert (the booking table and validate_booking).
 *
 * Oracles: an accepted lead has a 10-digit contact, an email with one '@' and visible
 * ASCII only, fields within the caps of the records the handler copies them into (valid
 * UTF-8), and a booking time in 0..9999-12-31 exactly when its phase is "booking"; a
 * refused one names a field that is in the body or a required one it lacks; the same input
 * answers the same. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_check.h"
#include "store.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
	int rc;
	struct verr err;
	struct lead_request lr;
};

static void run(const json_t *obj, int convert, struct result *r)
{
	const struct field_table *t = convert ? &validate_booking_table : &validate_lead_table;
	memset(r, 0, sizeof *r);
	r->rc = validate_object(obj, t->spec, t->n, &r->err);
	if (r->rc == 0)
		r->rc = convert ? validate_booking(obj, &r->lr.bk, &r->err)
		                : validate_lead(obj, &r->lr, &r->err);
}

static void check_booking(const struct booking_request *bk)
{
	fuzz_check_text(bk->type, NAME_CAP, 1);
	assert(strlen(bk->type) <= 64);
	assert(bk->scheduled_at >= 0 && bk->scheduled_at <= 253402300799LL);
}

static void check_lead(const json_t *obj, const struct lead_request *l)
{
	assert(strlen(l->contact) == 10 && strspn(l->contact, "0123456789") == 10);
	fuzz_check_text(l->email, EMAIL_CAP, 0);
	if (*l->email) {
		const char *at = strchr(l->email, '@');
		assert(at && at != l->email && !strchr(at + 1, '@') && strchr(at + 1, '.'));
		for (const char *p = l->email; *p; p++)
			assert((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
	}
	fuzz_check_text(l->integrator_id, NAME_CAP, 1);
	assert(l->branch_id && *l->branch_id && strlen(l->branch_id) <= 64);
	json_int_t age = json_integer_value(json_object_get(obj, "age"));
	assert(age >= 0 && age <= 200);
	const char *phase = json_string_value(json_object_get(obj, "phase"));
	assert(l->booking == (phase && strcmp(phase, "booking") == 0));
	if (l->booking)
		check_booking(&l->bk);
	fuzz_check_parties(obj, &l->parties);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result a, b;
	struct verr err;
	json_t *obj = NULL;

	if (size < 1)
		return 0;
	int convert = data[0] & 1;
	memset(&err, 0, sizeof err);
	if (validate_parse_object((const char *)data + 1, size - 1, &obj, &err) != 0) {
		assert((err.err == LH_EJSON || err.err == LH_EINVAL) && err.code[0] &&
		       err.message[0]);
		return 0;
	}
	run(obj, convert, &a);
	run(obj, convert, &b);
	/* Same input, same answer. */
	assert(a.rc == b.rc && memcmp(&a.err, &b.err, sizeof a.err) == 0);
	assert(a.lr.contact == b.lr.contact && a.lr.email == b.lr.email &&
	       a.lr.booking == b.lr.booking && a.lr.bk.type == b.lr.bk.type &&
	       a.lr.bk.scheduled_at == b.lr.bk.scheduled_at &&
	       memcmp(&a.lr.parties, &b.lr.parties, sizeof a.lr.parties) == 0);
	if (a.rc == 0) {
		if (convert)
			check_booking(&a.lr.bk);
		else
			check_lead(obj, &a.lr);
	} else {
		assert(a.err.err == LH_EINVAL);
		fuzz_check_refused(obj, &a.err, "");
	}
	json_decref(obj);
	return 0;
}
