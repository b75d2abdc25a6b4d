/* fuzz_subscribe.c: libFuzzer target for the body validation of
 * POST /client/events/subscribe: parse, check every field, and, when it passes, assert the
 * invariants the handler relies on. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "events.h"
#include "fuzz_check.h"
#include "store.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cidr allow[1];
	static int init;
	struct verr err;
	struct sub_request r;
	json_t *obj = NULL;

	if (!init) {
		addr_parse_cidr("127.0.0.0/8", &allow[0]);
		init = 1;
	}
	memset(&err, 0, sizeof err);
	if (validate_parse_object((const char *)data, size, &obj, &err) == 0) {
		/* Both policies: with and without the test allow-list. */
		for (size_t n = 0; n < 2; n++) {
			memset(&err, 0, sizeof err);
			if (validate_subscribe(obj, allow, n, &r, &err) == 0) {
				assert(r.lab_id && *r.lab_id && strlen(r.lab_id) <= 64);
				assert(r.events != 0 && (r.events & ~EV_ALL_MASK) == 0);
				assert(r.endpoint && strlen(r.endpoint) < ENDPOINT_CAP);
				assert(strncasecmp(r.endpoint, "https://", 8) == 0);
				assert(!(r.corporate_user && r.organization));
				assert(!r.auth_token || strlen(r.auth_token) < AUTHTOKEN_CAP);
			} else {
				struct verr again;
				memset(&again, 0, sizeof again);
				assert(validate_subscribe(obj, allow, n, &r, &again) != 0);
				assert(memcmp(&err, &again, sizeof err) == 0); /* the same answer */
				fuzz_check_refused(obj, &err, "");
			}
		}
		json_decref(obj);
	} else {
		/* Not JSON, or a string holding a NUL (named by its path). */
		assert((err.err == LH_EJSON && err.code[0]) ||
		       (err.err == LH_EINVAL && strcmp(err.code, "invalid_value") == 0 &&
		        err.field[0]));
	}
	return 0;
}
