/* fuzz_check.h: oracles shared by the body fuzz targets (header only: each target is one
 * translation unit with the replay driver or libFuzzer). */
#ifndef LH_FUZZ_CHECK_H
#define LH_FUZZ_CHECK_H

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include <jansson.h>

#include "validate.h"

/* s is NUL-terminated within cap, non-empty when required, and valid UTF-8. */
static inline void fuzz_check_text(const char *s, size_t cap, int required)
{
	assert(s);
	size_t n = strnlen(s, cap);
	assert(n < cap);
	assert(!required || n > 0);
	json_t *j = json_stringn(s, n); /* jansson checks UTF-8 */
	assert(j);
	json_decref(j);
}

/* Each party id named is non-empty, within the field's 64 bytes, and from its own field. */
static inline void fuzz_check_parties(const json_t *obj, const struct party_refs *refs)
{
	for (size_t i = 0; i < VALIDATE_PARTY_SLOTS; i++) {
		const char *id = refs->id[i];
		const json_t *v = json_object_get(obj, validate_party_slots[i].field);
		assert(!id || (*id && strlen(id) <= 64 && json_is_string(v) &&
		               strcmp(json_string_value(v), id) == 0));
	}
}

/* Some key of obj reads as field[0..n) in an answer: its bytes, unprintable ones as '?',
 * whole or cut at the 60 bytes validate_object shows of an unknown key. */
static inline int fuzz_key_named(const json_t *obj, const char *field, size_t n)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		size_t i = 0;
		while (i < n && k[i] && field[i] == ((k[i] >= 0x20 && k[i] < 0x7f) ? k[i] : '?'))
			i++;
		if (i == n && (!k[i] || i >= 60))
			return 1;
	}
	return 0;
}

/* A refusal names a field the body holds (the key itself, or the key a path such as
 * "tests[2]" or "patient_details.age" starts with), a required one it lacks, the
 * documented one when no test is sent (missing), or none where none is at fault. */
static inline void fuzz_check_refused(const json_t *obj, const struct verr *err,
                                      const char *missing)
{
	const char *f = err->field;
	assert(err->err != LH_OK && err->code[0] && err->message[0]);
	assert(memchr(f, '\0', sizeof err->field));
	if (!f[0]) {
		assert(strcmp(err->code, "too_many_tests") == 0 ||
		       strcmp(err->code, "out_of_memory") == 0 ||
		       (strcmp(err->code, "unknown_field") == 0 && json_object_get(obj, "")));
		return;
	}
	if (strcmp(err->code, "missing_tests") == 0) {
		assert(strcmp(f, missing) == 0);
		return;
	}
	if (strcmp(err->code, "missing_field") == 0 && !strpbrk(f, "[.")) {
		const json_t *v = json_object_get(obj, f);
		assert(!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0));
		return;
	}
	assert(fuzz_key_named(obj, f, strlen(f)) || fuzz_key_named(obj, f, strcspn(f, "[.")));
}

#endif
