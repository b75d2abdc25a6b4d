/* fuzz_catalog.c: libFuzzer target for the catalog bodies of the admin API: the bulk import
 * (POST /admin/labs/{labID}/catalog, validate_catalog_import) and, when the first byte is
 * odd, one package named by its path (PUT .../packages/{id}, validate_catalog_item).
 *
 * Oracles: an accepted body gives items with ids of the path-id shape, non-empty names
 * within their cap, prices in minor units from 0 to CATALOG_PRICE_MAX, no id twice per kind,
 * and members that belong to a package of the body and name valid, distinct test ids; a
 * refused one names a field and owns nothing; the same input answers the same. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_check.h"
#include "store.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run(const json_t *obj, int one, struct catalog_request *r, struct verr *err)
{
	memset(r, 0, sizeof *r);
	memset(err, 0, sizeof *err);
	if (!one)
		return validate_catalog_import(obj, r, err);
	int rc = validate_catalog_item(obj, CATALOG_PACKAGE, "P-1", "", r, err);
	if (rc)
		validate_catalog_free(r);
	return rc;
}

static void check_id(const char *id)
{
	size_t n = strnlen(id, ID_CAP);
	assert(n > 0 && n < ID_CAP);
	assert(strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n);
}

static void check_accepted(const struct catalog_request *r)
{
	assert(r->n >= 1 && r->n <= CATALOG_IMPORT_MAX);
	for (size_t i = 0; i < r->n; i++) {
		const struct catalog_item *it = &r->items[i];
		check_id(it->id);
		fuzz_check_text(it->name, sizeof it->name, 1);
		assert(it->price >= 0 && it->price <= CATALOG_PRICE_MAX);
		assert(it->kind == CATALOG_TEST || it->kind == CATALOG_PACKAGE);
		for (size_t k = 0; k < i; k++)
			assert(r->items[k].kind != it->kind || strcmp(r->items[k].id, it->id) != 0);
	}
	for (size_t m = 0; m < r->nmembers; m++) {
		const struct catalog_member *cm = &r->members[m];
		int owner = 0;
		check_id(cm->test_id);
		for (size_t i = 0; i < r->n; i++)
			owner |= r->items[i].kind == CATALOG_PACKAGE &&
			         strcmp(r->items[i].id, cm->package_id) == 0;
		assert(owner);
		for (size_t k = 0; k < m; k++)
			assert(strcmp(r->members[k].package_id, cm->package_id) != 0 ||
			       strcmp(r->members[k].test_id, cm->test_id) != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct catalog_request r, again;
	struct verr err, err2;
	json_t *obj = NULL;

	if (size < 1)
		return 0;
	int one = data[0] & 1;
	memset(&err, 0, sizeof err);
	if (validate_parse_object((const char *)data + 1, size - 1, &obj, &err) != 0) {
		assert((err.err == LH_EJSON || err.err == LH_EINVAL) && err.code[0] &&
		       err.message[0]);
		return 0;
	}
	int rc = run(obj, one, &r, &err);
	int rc2 = run(obj, one, &again, &err2);
	assert(rc == rc2);
	if (rc == 0) {
		check_accepted(&r);
		assert(again.n == r.n && again.nmembers == r.nmembers &&
		       memcmp(again.items, r.items, r.n * sizeof *r.items) == 0);
		validate_catalog_free(&again);
		validate_catalog_free(&r);
	} else {
		assert(err.err == LH_EINVAL || err.err == LH_ENOMEM);
		assert(memcmp(&err, &err2, sizeof err) == 0);
		assert(err.code[0] && err.message[0]);
		assert(!r.items && !r.members);
	}
	json_decref(obj);
	return 0;
}
