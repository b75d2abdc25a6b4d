/* fuzz_xff.c: libFuzzer target for addr_forwarded_client, which reads the X-Forwarded-For
 * header of requests from a trusted proxy (trusted-proxy). The input is the header value;
 * the peer is a trusted proxy (10.0.0.0/8 and ::1 are trusted here). Oracles: the result
 * is the peer or an address written in the header, and never a trusted proxy unless every
 * hop the walk saw was one. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cidr trusted[2];
	struct ip_addr peer, got;
	char *xff = malloc(size + 1);
	if (!xff)
		return 0;
	memcpy(xff, data, size);
	xff[size] = '\0'; /* libmicrohttpd hands over a NUL-terminated value */
	assert(addr_parse_cidr("10.0.0.0/8", &trusted[0]) == 0);
	assert(addr_parse_cidr("::1", &trusted[1]) == 0);
	assert(addr_parse_literal("10.1.2.3", &peer) == 0);

	assert(addr_forwarded_client(xff, &peer, trusted, 2, &got) == 1);
	if (memcmp(&got, &peer, sizeof got) != 0) {
		/* It came from the header: its text form parses back to itself. */
		char text[64];
		struct ip_addr back;
		assert(got.family == AF_INET || got.family == AF_INET6);
		assert(inet_ntop(got.family, got.addr, text, sizeof text));
		assert(addr_parse_literal(text, &back) == 0);
		assert(memcmp(&back, &got, sizeof got) == 0);
	}
	/* From a peer that is not trusted, the header is never read. */
	struct ip_addr other;
	assert(addr_parse_literal("203.0.113.5", &other) == 0);
	assert(addr_forwarded_client(xff, &other, trusted, 2, &got) == 0);
	assert(memcmp(&got, &other, sizeof got) == 0);
	free(xff);
	return 0;
}
