/* fuzz_retry_after.c: libFuzzer target for util_parse_retry_after, the parser of the
 * Retry-After header an endpoint sends with 429/503. The input is the raw header value as
 * libcurl hands it over (bytes, not NUL-terminated, CR LF included). */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const int64_t now = 1768905000; /* 2026-01-20T10:30:00Z */
	int out = -42;

	if (util_parse_retry_after((const char *)data, size, now, 86400, &out) == 0) {
		assert(out >= 0 && out <= 86400);
		/* delay-seconds: exactly the number, up to the cap */
		size_t i = 0, digits = 0;
		int64_t v = 0;
		while (i < size && (data[i] == ' ' || data[i] == '\t'))
			i++;
		for (; i < size && data[i] >= '0' && data[i] <= '9'; i++, digits++)
			v = v > 86400 ? v : v * 10 + (data[i] - '0');
		while (i < size &&
		       (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
			i++;
		if (digits && i == size)
			assert(out == (v > 86400 ? 86400 : v));
	} else {
		assert(out == -42); /* untouched on failure */
	}
	return 0;
}
