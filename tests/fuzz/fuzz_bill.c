/* fuzz_bill.c: libFuzzer target for the bill bodies of POST /client/billing/create and
 * POST /lab/bills: parse, the field table, then validate_bill (patient details, the five
 * test and package lists turned into reports). The first byte picks the route's table.
 *
 * Oracles: an accepted bill has 1..DOMAIN_MAX_REPORTS reports whose names and packages are
 * non-empty (names), within their caps and valid UTF-8, numbered in order, and fields the
 * handler copies fit where it copies them; a refused one names a field that is in the
 * body (or the documented one for a missing list); the same input answers the same. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "domain.h"
#include "fuzz_check.h"
#include "store.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run(const json_t *obj, const struct field_table *t, struct bill_request *br,
               struct verr *err)
{
	memset(err, 0, sizeof *err);
	if (validate_object(obj, t->spec, t->n, err))
		return -1;
	return validate_bill(obj, br, err);
}

static void check_accepted(const json_t *obj, const struct bill_request *br)
{
	assert(br->n_reports >= 1 && br->n_reports <= DOMAIN_MAX_REPORTS);
	for (size_t i = 0; i < br->n_reports; i++) {
		const struct report *r = &br->reports[i];
		assert(r->seq == (int)i);
		fuzz_check_text(r->name, sizeof r->name, 1);
		fuzz_check_text(r->package, sizeof r->package, 0);
		assert(!r->report_id[0] && !r->bill_id[0]); /* the handler's to fill */
	}
	assert(json_is_object(br->patient));
	assert(br->lab_id && *br->lab_id && strlen(br->lab_id) < ID_CAP * 2);
	fuzz_check_text(br->integrator_id, NAME_CAP, 1);
	fuzz_check_text(br->lead_source, NAME_CAP, 0);
	fuzz_check_text(br->bar_code, NAME_CAP, 0);
	json_int_t age = json_integer_value(json_object_get(br->patient, "age"));
	assert(age >= 0 && age <= 200);
	fuzz_check_parties(obj, &br->parties);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bill_request br, again;
	struct verr err, err2;
	json_t *obj = NULL;

	if (size < 1)
		return 0;
	const struct field_table *t = data[0] & 1 ? &validate_lab_bill_table : &validate_bill_table;
	memset(&err, 0, sizeof err);
	if (validate_parse_object((const char *)data + 1, size - 1, &obj, &err) != 0) {
		assert((err.err == LH_EJSON || err.err == LH_EINVAL) && err.code[0] &&
		       err.message[0]);
		return 0;
	}
	int rc = run(obj, t, &br, &err);
	int rc2 = run(obj, t, &again, &err2);
	assert(rc == rc2);
	if (rc == 0) {
		check_accepted(obj, &br);
		assert(again.n_reports == br.n_reports &&
		       memcmp(again.reports, br.reports, br.n_reports * sizeof *br.reports) == 0);
		free(again.reports);
		free(again.refs);
		free(br.reports);
		free(br.refs);
	} else {
		assert(err.err == LH_EINVAL || err.err == LH_ENOMEM);
		assert(memcmp(&err, &err2, sizeof err) == 0);
		fuzz_check_refused(obj, &err, "mapped_tests");
	}
	json_decref(obj);
	return 0;
}
