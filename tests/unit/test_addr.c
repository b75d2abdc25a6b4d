/* test_addr.c: addr.h: the endpoint address policy of API.md 7.5 (every blocked range, the
 * legacy IPv4 spellings, localhost names, IPv4-in-IPv6 forms), the allow-list, and CIDR
 * parsing. Table-driven; single-threaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "addr.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct host_case {
	const char *host;
	int literal;        /* addr_parse_literal accepts it */
	const char *reason; /* expected with an empty allow-list; NULL = allowed */
};

static const struct host_case host_cases[] = {
    /* IPv4 ranges */
    {"127.0.0.1", 1, "loopback"},
    {"127.255.255.254", 1, "loopback"},
    {"10.1.2.3", 1, "private"},
    {"172.16.0.1", 1, "private"},
    {"172.31.255.255", 1, "private"},
    {"172.15.255.255", 1, NULL}, /* just below 172.16.0.0/12 */
    {"172.32.0.1", 1, NULL},     /* just above */
    {"192.168.1.1", 1, "private"},
    {"169.254.169.254", 1, "link_local"},
    {"100.64.0.1", 1, "cgnat"},
    {"100.127.255.255", 1, "cgnat"},
    {"100.63.255.255", 1, NULL},
    {"100.128.0.0", 1, NULL},
    {"0.0.0.0", 1, "unspecified"},
    {"0.1.2.3", 1, "unspecified"},
    {"224.0.0.1", 1, "multicast"},
    {"239.255.255.250", 1, "multicast"},
    {"240.0.0.1", 1, "reserved"},
    /* 240.0.0.0/4 covers the limited broadcast address before the broadcast rule does */
    {"255.255.255.255", 1, "reserved"},
    {"192.0.0.8", 1, "reserved"},
    {"192.0.2.1", 1, "documentation"},
    {"198.51.100.7", 1, "documentation"},
    {"203.0.113.9", 1, "documentation"},
    {"198.18.0.1", 1, "benchmarking"},
    {"198.19.255.255", 1, "benchmarking"},
    {"8.8.8.8", 1, NULL},
    {"1.1.1.1", 1, NULL},
    {"11.0.0.1", 1, NULL},
    {"126.255.255.255", 1, NULL},
    {"128.0.0.0", 1, NULL},
    /* IPv6 ranges, with and without brackets */
    {"[::1]", 1, "loopback"},
    {"::1", 1, "loopback"},
    {"0:0:0:0:0:0:0:1", 1, "loopback"},
    {"[::]", 1, "unspecified"},
    {"[::ffff:127.0.0.1]", 1, "ipv4_mapped"},
    {"::ffff:8.8.8.8", 1, "ipv4_mapped"},
    {"::ffff:7f00:1", 1, "ipv4_mapped"},
    {"::127.0.0.1", 1, "ipv4_compatible"},
    {"::8.8.8.8", 1, "ipv4_compatible"},
    {"64:ff9b::808:808", 1, "nat64"},
    {"64:ff9b:1::1", 1, "nat64"},
    {"100::1", 1, "discard"},
    {"2001::1", 1, "teredo"},
    {"2001:0:4136:e378::1", 1, "teredo"},
    {"2002:7f00:1::1", 1, "6to4"},
    {"fe80::1", 1, "link_local"},
    {"[febf::1]", 1, "link_local"},
    {"fec0::1", 1, "site_local"},
    {"fc00::1", 1, "unique_local"},
    {"fd12:3456::1", 1, "unique_local"},
    {"ff02::1", 1, "multicast"},
    {"2001:db8::1", 1, "documentation"},
    {"2606:4700::1111", 1, NULL},
    {"[2606:4700:4700::1111]", 1, NULL},
    {"2001:4860:4860::8888", 1, NULL}, /* 2001:4860::/32 is not teredo's 2001::/32 */
    {"2003::1", 1, NULL},
    /* IANA's special-purpose registries: what is not globally reachable is blocked, what
     * is (the anycast and AS112 exceptions inside blocked ranges) is not */
    {"192.0.0.9", 1, NULL},  /* PCP anycast */
    {"192.0.0.10", 1, NULL}, /* TURN anycast */
    {"192.0.0.11", 1, "reserved"},
    {"192.0.0.170", 1, "reserved"},
    {"100:0:0:1::1", 1, "dummy"},
    {"100:0:0:2::1", 1, "reserved"},
    {"2001:1::1", 1, NULL},
    {"2001:1::3", 1, NULL},
    {"2001:1::4", 1, "ietf_protocol"},
    {"2001:2::1", 1, "benchmarking"},
    {"2001:2:0:ffff::1", 1, "benchmarking"},
    {"2001:2:1::1", 1, "ietf_protocol"},
    {"2001:3::1", 1, NULL},     /* AMT */
    {"2001:4:112::1", 1, NULL}, /* AS112-v6 */
    {"2001:4:113::1", 1, "ietf_protocol"},
    {"2001:10::1", 1, "orchid"}, /* deprecated ORCHID */
    {"2001:1f::1", 1, "orchid"},
    {"2001:20::1", 1, NULL}, /* ORCHIDv2 */
    {"2001:30::1", 1, NULL}, /* DRIP DETs */
    {"2001:40::1", 1, "ietf_protocol"},
    {"2001:1ff:ffff::1", 1, "ietf_protocol"},
    {"2001:200::1", 1, NULL},       /* just past 2001::/23 */
    {"2002:808:808::1", 1, "6to4"}, /* blocked whatever IPv4 it embeds */
    {"2002:a00:1::1", 1, "6to4"},
    {"64:ff9b::7f00:1", 1, "nat64"},
    {"3fff::1", 1, "documentation"},
    {"3fff:fff:ffff::1", 1, "documentation"},
    {"3fff:1000::1", 1, NULL},
    {"5f00::1", 1, "srv6_sid"},
    {"5f00:ffff::1", 1, "srv6_sid"},
    {"2620:4f:8000::1", 1, NULL}, /* AS112 direct delegation */
    /* outside 2000::/3 (global unicast) IPv6 is unassigned */
    {"1::1", 1, "reserved"},
    {"4000::1", 1, "reserved"},
    {"e000::1", 1, "reserved"},
    /* legacy IPv4 spellings a resolver would accept */
    {"127.1", 1, "loopback"},
    {"127.0.1", 1, "loopback"},
    {"0x7f000001", 1, "loopback"},
    {"0x7f.1", 1, "loopback"},
    {"2130706433", 1, "loopback"},
    {"017700000001", 1, "loopback"},
    {"0177.0.0.1", 1, "loopback"},
    {"10", 1, "unspecified"}, /* 0.0.0.10 */
    {"0xa.1", 1, "private"},
    {"134744072", 1, NULL}, /* 8.8.8.8 */
    /* localhost names (RFC 6761) are loopback whatever they resolve to */
    {"localhost", 0, "loopback"},
    {"LOCALHOST.", 0, "loopback"},
    {"LocalHost", 0, "loopback"},
    {"localhost..", 0, "loopback"},
    {"foo.localhost", 0, "loopback"},
    {"a.b.LOCALHOST.", 0, "loopback"},
    /* found by fuzz_url: inet_aton read this as 147.0.0.1 (it stops at a space) */
    {"147.0.0.1 x.localhost", 0, "loopback"},
    /* other names pass here; the resolved address is checked at delivery */
    {"example.com", 0, NULL},
    {"localhost.example.com", 0, NULL},
    {"notlocalhost", 0, NULL},
    {"127.0.0.1.nip.io", 0, NULL},
    {"256.0.0.1", 0, NULL},
    {"1.2.3.4.5", 0, NULL},
    /* a literal with trailing dots is still that address */
    {"127.0.0.1.", 0, "loopback"},
    {"0x7f.1.", 0, "loopback"},
    {"10.0.0.1.", 0, "private"},
};

static void test_host_policy(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(host_cases); i++) {
		const struct host_case *c = &host_cases[i];
		struct ip_addr a;
		int rc = addr_parse_literal(c->host, &a);

		if ((rc == 0) != c->literal)
			fail_msg("'%s': addr_parse_literal rc %d, want %s", c->host, rc,
			         c->literal ? "a literal" : "not a literal");
		if (c->literal) {
			const char *r = addr_blocked_reason(&a, NULL, 0);
			if ((r == NULL) != (c->reason == NULL) || (r && strcmp(r, c->reason) != 0))
				fail_msg("addr_blocked_reason('%s') = %s, want %s", c->host,
				         r ? r : "NULL", c->reason ? c->reason : "NULL");
		}
		const char *hr = addr_host_blocked_reason(c->host, NULL, 0);
		if ((hr == NULL) != (c->reason == NULL) || (hr && strcmp(hr, c->reason) != 0))
			fail_msg("addr_host_blocked_reason('%s') = %s, want %s", c->host,
			         hr ? hr : "NULL", c->reason ? c->reason : "NULL");
	}
}

static void test_parse_literal_values(void **state)
{
	struct ip_addr a;
	static const unsigned char v6_1[16] = {[15] = 1};
	static const unsigned char mapped[16] = {[10] = 0xff, [11] = 0xff, 127, 0, 0, 1};
	(void)state;

	/* Every legacy form lands on the same four bytes. */
	static const char *const loop[] = {"127.0.0.1",  "127.1",        "0x7f000001",
	                                   "2130706433", "017700000001", "0x7F.0.0.1"};
	for (size_t i = 0; i < N_ELEMS(loop); i++) {
		memset(&a, 0xee, sizeof a);
		assert_int_equal(addr_parse_literal(loop[i], &a), 0);
		assert_int_equal(a.family, AF_INET);
		if (memcmp(a.addr, "\x7f\x00\x00\x01", 4) != 0)
			fail_msg("'%s' parsed to %u.%u.%u.%u", loop[i], a.addr[0], a.addr[1],
			         a.addr[2], a.addr[3]);
	}
	assert_int_equal(addr_parse_literal("[::1]", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_memory_equal(a.addr, v6_1, 16);
	assert_int_equal(addr_parse_literal("::ffff:127.0.0.1", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_memory_equal(a.addr, mapped, 16);
}

static void test_parse_literal_rejects(void **state)
{
	static const char *const bad[] = {
	    "fe80::1%eth0", /* zone ids are not literals (validate_endpoint refuses '%') */
	    "[fe80::1%eth0]",
	    "[fe80::1%25eth0]",
	    "",
	    "[]",
	    "[::1",
	    "::1]",
	    "[[::1]]",
	    "[127.0.0.1",
	    ":::1",
	    "1::2::3",
	    "example.com",
	    "localhost",
	    "12345::",
	    "0x",
	    "127.0.0.0.1",
	    "999.1.1.1",
	    "0xfffffffff",
	    "4294967296",
	    "08.0.0.1", /* 08 is not octal */
	    "::1 ",
	    "127.0.0.1 x", /* inet_aton ignores what follows a space */
	    "8.8.8.8\tx",
	    "127.0.0.1\n",
	    " 127.0.0.1",
	    "01234567890123456789012345678901234567890123456789012345678901234567",
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		struct ip_addr a;
		memset(&a, 0x5a, sizeof a);
		int rc = addr_parse_literal(bad[i], &a);
		if (rc != -1)
			fail_msg("addr_parse_literal('%s') = %d, want -1", bad[i], rc);
		for (size_t k = 0; k < sizeof a.addr; k++)
			assert_int_equal(a.addr[k], 0x5a); /* out written only on success */
	}
}

/* ---- allow-list ---- */

struct allow_case {
	const char *host;
	const char *reason; /* NULL = admitted */
};

static void run_allow(const char *const *cidrs, size_t ncidr, const struct allow_case *cases,
                      size_t ncases)
{
	struct cidr allow[4];

	assert_true(ncidr <= N_ELEMS(allow));
	for (size_t i = 0; i < ncidr; i++)
		if (addr_parse_cidr(cidrs[i], &allow[i]) != 0)
			fail_msg("allow-list entry '%s' did not parse", cidrs[i]);
	for (size_t i = 0; i < ncases; i++) {
		const char *r = addr_host_blocked_reason(cases[i].host, allow, ncidr);
		if ((r == NULL) != (cases[i].reason == NULL) ||
		    (r && strcmp(r, cases[i].reason) != 0))
			fail_msg("allow %s%s: '%s' = %s, want %s", cidrs[0],
			         ncidr > 1 ? ",..." : "", cases[i].host, r ? r : "NULL",
			         cases[i].reason ? cases[i].reason : "NULL");
		struct ip_addr a;
		if (addr_parse_literal(cases[i].host, &a) == 0) {
			r = addr_blocked_reason(&a, allow, ncidr);
			if ((r == NULL) != (cases[i].reason == NULL))
				fail_msg("allow %s: addr_blocked_reason('%s') = %s", cidrs[0],
				         cases[i].host, r ? r : "NULL");
		}
	}
}

static void test_allow_v4_loopback(void **state)
{
	static const char *const cidrs[] = {"127.0.0.0/8"};
	static const struct allow_case cases[] = {
	    {"127.0.0.1", NULL},
	    {"127.255.255.254", NULL},
	    {"127.1", NULL},
	    {"[::ffff:127.0.0.1]", NULL}, /* the mapped form of an admitted v4 address */
	    {"localhost", NULL},
	    {"foo.localhost.", NULL},
	    {"10.0.0.1", "private"},
	    {"128.0.0.1", NULL},                  /* never blocked anyway */
	    {"[::1]", "loopback"},                /* a v4 range does not admit v6 loopback */
	    {"[::ffff:10.0.0.1]", "ipv4_mapped"}, /* mapped, but outside the range */
	    {"::127.0.0.1", "ipv4_compatible"},   /* only the mapped form is unwrapped */
	    {"64:ff9b::7f00:1", "nat64"},
	};
	(void)state;
	run_allow(cidrs, N_ELEMS(cidrs), cases, N_ELEMS(cases));
}

static void test_allow_v6_loopback(void **state)
{
	static const char *const cidrs[] = {"::1/128"};
	static const struct allow_case cases[] = {
	    {"[::1]", NULL},
	    {"::1", NULL},
	    {"127.0.0.1", "loopback"},
	    {"localhost", "loopback"}, /* localhost is checked as 127.0.0.1 */
	    {"::2", "ipv4_compatible"},
	    {"fe80::1", "link_local"},
	};
	(void)state;
	run_allow(cidrs, N_ELEMS(cidrs), cases, N_ELEMS(cases));
}

static void test_allow_several(void **state)
{
	static const char *const cidrs[] = {"10.0.0.0/8", "192.168.1.0/24", "172.16.0.0/13",
	                                    "fd00::/8"};
	static const struct allow_case cases[] = {
	    {"10.9.9.9", NULL},        {"192.168.1.7", NULL}, {"192.168.2.1", "private"},
	    {"172.23.255.255", NULL}, /* inside /13 (partial-byte prefix) */
	    {"172.24.0.1", "private"}, {"fd12::1", NULL},     {"fc00::1", "unique_local"},
	    {"127.0.0.1", "loopback"},
	};
	(void)state;
	run_allow(cidrs, N_ELEMS(cidrs), cases, N_ELEMS(cases));
}

static void test_allow_count_is_honoured(void **state)
{
	struct cidr allow[2];
	(void)state;

	assert_int_equal(addr_parse_cidr("10.0.0.0/8", &allow[0]), 0);
	assert_int_equal(addr_parse_cidr("127.0.0.0/8", &allow[1]), 0);
	/* Only the first n entries count. */
	assert_string_equal(addr_host_blocked_reason("127.0.0.1", allow, 1), "loopback");
	assert_null(addr_host_blocked_reason("127.0.0.1", allow, 2));
	assert_string_equal(addr_host_blocked_reason("10.0.0.1", allow, 0), "private");
	assert_null(addr_host_blocked_reason("10.0.0.1", allow, 1));
	/* 0.0.0.0/0 admits every v4 address, and no v6 one. */
	assert_int_equal(addr_parse_cidr("0.0.0.0/0", &allow[0]), 0);
	assert_null(addr_host_blocked_reason("169.254.169.254", allow, 1));
	assert_null(addr_host_blocked_reason("255.255.255.255", allow, 1));
	assert_string_equal(addr_host_blocked_reason("fe80::1", allow, 1), "link_local");
}

static void test_unsupported_family(void **state)
{
	struct ip_addr a;
	(void)state;

	memset(&a, 0, sizeof a);
	a.family = AF_UNIX;
	assert_non_null(addr_blocked_reason(&a, NULL, 0));
}

/* ---- CIDR parsing ---- */

struct cidr_case {
	const char *in;
	int ok;
	int family;
	int prefix;
	const char *addr; /* textual form of the stored address */
};

/* X-Forwarded-For behind trusted proxies (10.0.0.0/8 and ::1 here). */
static void test_forwarded_client(void **state)
{
	static const struct {
		const char *peer, *xff, *want;
		int trusted;
	} cases[] = {
	    {"203.0.113.9", "198.51.100.1", "203.0.113.9", 0}, /* not a proxy: ignored */
	    {"10.0.0.2", NULL, "10.0.0.2", 1},
	    {"10.0.0.2", "198.51.100.1", "198.51.100.1", 1},
	    {"10.0.0.2", "1.1.1.1, 198.51.100.1", "198.51.100.1", 1}, /* the left one is forged */
	    {"10.0.0.2", "198.51.100.1,10.0.0.7", "198.51.100.1", 1}, /* two proxies */
	    {"10.0.0.2", " 198.51.100.1 ,\t10.0.0.7 ", "198.51.100.1", 1},
	    {"10.0.0.2", "10.0.0.8, 10.0.0.7", "10.0.0.8", 1}, /* all proxies */
	    {"10.0.0.2", "junk, 10.0.0.7", "10.0.0.7", 1},     /* walk stops */
	    {"10.0.0.2", "198.51.100.1, junk", "10.0.0.2", 1},
	    {"10.0.0.2", "", "10.0.0.2", 1},
	    {"10.0.0.2", ",,,", "10.0.0.2", 1},
	    {"::1", "2001:db8::5", "2001:db8::5", 1},
	    {"::1", "[2001:db8::6]", "2001:db8::6", 1},
	    {"10.0.0.2", "198.51.100.1:4000", "10.0.0.2", 1}, /* ports are not addresses */
	};
	struct cidr trusted[2];
	(void)state;
	assert_int_equal(addr_parse_cidr("10.0.0.0/8", &trusted[0]), 0);
	assert_int_equal(addr_parse_cidr("::1", &trusted[1]), 0);
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		struct ip_addr peer, got;
		char text[64];
		assert_int_equal(addr_parse_literal(cases[i].peer, &peer), 0);
		int t = addr_forwarded_client(cases[i].xff, &peer, trusted, 2, &got);
		inet_ntop(got.family, got.addr, text, sizeof text);
		if (strcmp(text, cases[i].want) != 0 || t != cases[i].trusted)
			fail_msg("case %zu (%s via %s): got %s (%d), want %s", i, cases[i].xff,
			         cases[i].peer, text, t, cases[i].want);
	}
}

static void test_parse_cidr(void **state)
{
	static const struct cidr_case cases[] = {
	    {"10.0.0.0/8", 1, AF_INET, 8, "10.0.0.0"},
	    {"::1/128", 1, AF_INET6, 128, "::1"},
	    {"1.2.3.4", 1, AF_INET, 32, "1.2.3.4"},
	    {"::", 1, AF_INET6, 128, "::"},
	    {"0.0.0.0/0", 1, AF_INET, 0, "0.0.0.0"},
	    {"::/0", 1, AF_INET6, 0, "::"},
	    {"fe80::/10", 1, AF_INET6, 10, "fe80::"},
	    {"172.16.0.0/12", 1, AF_INET, 12, "172.16.0.0"},
	    {"10.0.0.0/32", 1, AF_INET, 32, "10.0.0.0"},
	    {"::ffff:127.0.0.1/128", 1, AF_INET6, 128, "::ffff:127.0.0.1"},
	    {"10.0.0.0/33", 0, 0, 0, NULL},
	    {"::/129", 0, 0, 0, NULL},
	    {"abc", 0, 0, 0, NULL},
	    {"", 0, 0, 0, NULL},
	    {"10.0.0.0/", 0, 0, 0, NULL},
	    {"10.0.0.0/-1", 0, 0, 0, NULL},
	    {"10.0.0.0/8x", 0, 0, 0, NULL},
	    {"10.0.0.0/+8", 0, 0, 0, NULL},
	    {"10.0.0.0/ 8", 0, 0, 0, NULL},
	    {"10.0.0.0/8/8", 0, 0, 0, NULL},
	    {"10.0.0.0/0008", 0, 0, 0, NULL},
	    {"10.0.0.0/99999999999999999999", 0, 0, 0, NULL},
	    {"/8", 0, 0, 0, NULL},
	    {"10.0.0/8", 0, 0, 0, NULL}, /* CIDRs take only the dotted-quad form */
	    {"127.1/8", 0, 0, 0, NULL},
	    {"0x7f000001/8", 0, 0, 0, NULL},
	    {"[::1]/128", 0, 0, 0, NULL},
	    {"fe80::1%eth0/64", 0, 0, 0, NULL},
	    {"10.0.0.0 /8", 0, 0, 0, NULL},
	    {"0123456789012345678901234567890123456789012345678901234567890123456789/8", 0, 0, 0,
	     NULL},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct cidr_case *c = &cases[i];
		struct cidr out;
		char text[64];

		memset(&out, 0x5a, sizeof out);
		int rc = addr_parse_cidr(c->in, &out);
		if (!c->ok) {
			if (rc != -1)
				fail_msg("'%s': accepted, want -1", c->in);
			assert_int_equal(out.prefix, 0x5a5a5a5a); /* untouched */
			continue;
		}
		if (rc != 0)
			fail_msg("'%s': rc %d, want 0", c->in, rc);
		assert_int_equal(out.family, c->family);
		if (out.prefix != c->prefix)
			fail_msg("'%s': prefix %d, want %d", c->in, out.prefix, c->prefix);
		assert_non_null(inet_ntop(out.family, out.addr, text, sizeof text));
		if (strcmp(text, c->addr) != 0)
			fail_msg("'%s': address %s, want %s", c->in, text, c->addr);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_host_policy),
	    cmocka_unit_test(test_parse_literal_values),
	    cmocka_unit_test(test_parse_literal_rejects),
	    cmocka_unit_test(test_allow_v4_loopback),
	    cmocka_unit_test(test_allow_v6_loopback),
	    cmocka_unit_test(test_allow_several),
	    cmocka_unit_test(test_allow_count_is_honoured),
	    cmocka_unit_test(test_unsupported_family),
	    cmocka_unit_test(test_forwarded_client),
	    cmocka_unit_test(test_parse_cidr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
