/* fuzz_body.c: libFuzzer target for request bodies: the JSON object parser with its
 * duplicate-key rule, the field-table check every handler runs (validate_object), and the
 * field validators the handlers apply after it (events, endpoint, authToken, times).
 *
 * The first 8 bytes describe a field table (one byte per field: type, required, nullable,
 * cap), so one target covers every handler's table shape; the rest is the body. When the
 * check passes, the target asserts what the handlers rely on. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "events.h"
#include "fuzz_check.h"
#include "store.h"
#include "util.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSPEC 8

static const char *const names[NSPEC] = {"labID", "events", "endpoint", "authToken",
                                         "since", "age",    "patient",  "tests"};
static const size_t caps[8] = {0, 1, 16, 64, 255, 1000, AUTHTOKEN_CAP - 1, ENDPOINT_CAP - 1};

static int type_ok(const json_t *v, enum ftype t)
{
	static const int types[] = {JSON_STRING, JSON_ARRAY, JSON_OBJECT, JSON_INTEGER};
	if (t == F_NUMBER)
		return json_is_number(v);
	if (t == F_BOOL)
		return json_is_boolean(v);
	return json_typeof(v) == (json_type)types[t];
}

/* What validate_object promised: the handlers read fields without checking again. */
static void check_passed(const json_t *obj, const struct field_spec *spec)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v)
	{
		size_t i = 0;
		while (i < NSPEC && strcmp(key, spec[i].name) != 0)
			i++;
		assert(i < NSPEC); /* no unknown field */
	}
	for (size_t i = 0; i < NSPEC; i++) {
		v = json_object_get(obj, spec[i].name);
		if (!v) {
			assert(!spec[i].required);
			continue;
		}
		if (json_is_null(v)) {
			assert(spec[i].nullable);
			continue;
		}
		assert(type_ok(v, spec[i].type));
		if (spec[i].type == F_STRING) {
			size_t len = json_string_length(v);
			assert(strlen(json_string_value(v)) == len);
			assert(!spec[i].max || len <= spec[i].max);
			assert(!spec[i].required || len > 0);
		}
		if (spec[i].type == F_ARRAY)
			assert(!spec[i].max || json_array_size(v) <= spec[i].max);
	}
}

/* The validators handlers run on fields that passed the table. */
static void check_fields(const json_t *obj)
{
	struct verr err;
	unsigned mask;
	int64_t t;
	const json_t *v;

	memset(&err, 0, sizeof err);
	if (json_is_array(v = json_object_get(obj, "events"))) {
		if (validate_events(v, "events", &mask, &err) == 0)
			assert(mask && (mask & ~EV_ALL_MASK) == 0);
		else
			assert(err.code[0] && err.message[0]);
	}
	if (json_is_string(v = json_object_get(obj, "endpoint")) &&
	    strlen(json_string_value(v)) == json_string_length(v)) {
		if (validate_endpoint(json_string_value(v), "endpoint", NULL, 0, &err) != 0)
			assert(err.code[0] && err.message[0]);
	}
	if (json_is_string(v = json_object_get(obj, "authToken"))) {
		if (validate_auth_token(json_string_value(v), "authToken", &err) == 0)
			assert(!strpbrk(json_string_value(v), " \r\n\t"));
	}
	if (json_is_string(v = json_object_get(obj, "since")))
		(void)util_parse_time(json_string_value(v), &t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct field_spec spec[NSPEC];
	struct verr err;
	json_t *obj = NULL;

	if (size < NSPEC)
		return 0;
	for (size_t i = 0; i < NSPEC; i++) {
		uint8_t b = data[i];
		spec[i] = (struct field_spec){names[i], (enum ftype)((b & 7) % 6), (b >> 3) & 1,
		                              caps[(b >> 5) & 7], (b >> 4) & 1};
	}
	data += NSPEC;
	size -= NSPEC;
	memset(&err, 0, sizeof err);
	if (validate_parse_object((const char *)data, size, &obj, &err) != 0) {
		/* Not JSON (invalid_json), or a value the parser refuses by its path. */
		assert((err.err == LH_EJSON || err.err == LH_EINVAL) && err.code[0] &&
		       err.message[0]);
		return 0;
	}
	assert(json_is_object(obj));
	memset(&err, 0, sizeof err);
	if (validate_object(obj, spec, NSPEC, &err) == 0) {
		check_passed(obj, spec);
		check_fields(obj);
	} else {
		/* A field of the body or of the table, except an unknown key that is itself
		 * empty ({"": 1}); and the same answer again. */
		struct verr again;
		memset(&again, 0, sizeof again);
		assert(err.err == LH_EINVAL);
		fuzz_check_refused(obj, &err, "");
		assert(validate_object(obj, spec, NSPEC, &again) != 0);
		assert(memcmp(&err, &again, sizeof err) == 0);
	}
	json_decref(obj);
	return 0;
}
