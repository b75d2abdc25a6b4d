/* fuzz_url.c: libFuzzer target for URLs and hosts: endpoint URL validation (validate.c) and
 * the address and CIDR parsers with the blocked-range policy (addr.c). The first byte picks
 * the parser; the rest is its text. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "addr.h"
#include "store.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_endpoint(const char *s)
{
	static struct cidr allow[2];
	static int init;
	struct verr err;

	if (!init) {
		addr_parse_cidr("127.0.0.0/8", &allow[0]);
		addr_parse_cidr("::1/128", &allow[1]);
		init = 1;
	}
	for (size_t n = 0; n <= 2; n += 2) {
		memset(&err, 0, sizeof err);
		if (validate_endpoint(s, "endpoint", allow, n, &err) == 0) {
			assert(strlen(s) < ENDPOINT_CAP);
			assert(strncasecmp(s, "https://", 8) == 0);
			assert(!strchr(s, '#'));
			for (const unsigned char *p = (const unsigned char *)s; *p; p++)
				assert(*p > 0x20 && *p < 0x7f);
		} else {
			assert(err.err != LH_OK && err.code[0] && err.message[0]);
		}
	}
}

static void check_cidr(const char *s)
{
	struct cidr c, back;
	char text[INET6_ADDRSTRLEN + 8];

	if (addr_parse_cidr(s, &c) != 0)
		return;
	assert(c.family == AF_INET || c.family == AF_INET6);
	assert(c.prefix >= 0 && c.prefix <= (c.family == AF_INET ? 32 : 128));
	/* What was parsed prints back to a CIDR that parses to the same thing. */
	assert(inet_ntop(c.family, c.addr, text, sizeof text));
	snprintf(text + strlen(text), sizeof text - strlen(text), "/%d", c.prefix);
	assert(addr_parse_cidr(text, &back) == 0);
	assert(memcmp(&c, &back, sizeof c) == 0);
}

static void check_literal(const char *s)
{
	static struct cidr all[2];
	static int init;
	struct ip_addr a, back;
	char text[INET6_ADDRSTRLEN];

	if (!init) {
		addr_parse_cidr("0.0.0.0/0", &all[0]);
		addr_parse_cidr("::/0", &all[1]);
		init = 1;
	}
	const char *why = addr_host_blocked_reason(s, NULL, 0);
	assert(addr_host_blocked_reason(s, all, 2) == NULL); /* allow-all admits everything */
	if (addr_parse_literal(s, &a) != 0)
		return;
	assert(a.family == AF_INET || a.family == AF_INET6);
	assert(why == addr_blocked_reason(&a, NULL, 0));
	assert(addr_blocked_reason(&a, all, 2) == NULL);
	assert(inet_ntop(a.family, a.addr, text, sizeof text));
	assert(addr_parse_literal(text, &back) == 0);
	assert(memcmp(&a, &back, sizeof a) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4 * ENDPOINT_CAP)
		return 0;
	char *s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0:
		check_endpoint(s);
		break;
	case 1:
		check_cidr(s);
		break;
	default:
		check_literal(s);
		break;
	}
	free(s);
	return 0;
}
