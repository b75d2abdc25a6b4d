/* fuzz_range.c: libFuzzer target for util_range_parse, the parser of the Range header a
 * client sends for a report document. The first 4 bytes pick the document's size (up to
 * 16 MiB), the rest is the header value. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t doc = 0, first = 7, last = 7;
	if (size < 4)
		return 0;
	for (int i = 0; i < 4; i++)
		doc = doc << 8 | data[i];
	doc &= (1u << 24) - 1;
	char *h = malloc(size - 4 + 1);
	if (!h)
		return 0;
	memcpy(h, data + 4, size - 4);
	h[size - 4] = '\0';
	int r = util_range_parse(h, doc, &first, &last);
	assert(r >= -1 && r <= 1);
	if (r == 1) /* a satisfiable range lies inside the document */
		assert(first <= last && last < doc);
	else
		assert(first == 7 && last == 7); /* untouched */
	free(h);
	return 0;
}
