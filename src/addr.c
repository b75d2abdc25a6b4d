/* addr.c: see addr.h. The range tables are the whole policy; keep them in step with docs. */
#define _DEFAULT_SOURCE
#include "addr.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* A range and why it is refused; reason NULL marks a globally reachable exception inside a
 * refused range. The first entry that holds an address decides, so exceptions and smaller
 * ranges come before the ranges around them. Sources: IANA's IPv4 and IPv6 Special-Purpose
 * Address Registries (every entry whose "Globally Reachable" is not True), multicast, and
 * for IPv6 everything outside 2000::/3, which IANA has not assigned. */
struct range {
	const char *cidr;
	const char *reason;
};

static const struct range v4_blocked[] = {
    {"0.0.0.0/8", "unspecified"},
    {"10.0.0.0/8", "private"},
    {"100.64.0.0/10", "cgnat"},
    {"127.0.0.0/8", "loopback"},
    {"169.254.0.0/16", "link_local"},
    {"172.16.0.0/12", "private"},
    {"192.0.0.9/32", NULL},
    {"192.0.0.10/32", NULL}, /* PCP, TURN anycast */
    {"192.0.0.0/24", "reserved"},
    {"192.0.2.0/24", "documentation"},
    {"192.88.99.0/24", "reserved"},
    {"192.168.0.0/16", "private"},
    {"198.18.0.0/15", "benchmarking"},
    {"198.51.100.0/24", "documentation"},
    {"203.0.113.0/24", "documentation"},
    {"224.0.0.0/4", "multicast"},
    {"240.0.0.0/4", "reserved"},
};

/* IPv4 inside IPv6 (mapped, compatible, translated, NAT64, 6to4, Teredo) is refused
 * whatever IPv4 address it holds: a gateway would reach it for us, unchecked. */
static const struct range v6_blocked[] = {
    {"::/128", "unspecified"},
    {"::1/128", "loopback"},
    {"::ffff:0:0/96", "ipv4_mapped"},
    {"::/96", "ipv4_compatible"},
    {"::ffff:0:0:0/96", "ipv4_translated"},
    {"64:ff9b::/96", "nat64"},
    {"64:ff9b:1::/48", "nat64"},
    {"100::/64", "discard"},
    {"100:0:0:1::/64", "dummy"},
    /* 2001::/23, IETF protocol assignments, and the exceptions in it */
    {"2001::/32", "teredo"},
    {"2001:1::1/128", NULL}, /* PCP anycast */
    {"2001:1::2/128", NULL}, /* TURN anycast */
    {"2001:1::3/128", NULL}, /* DNS-SD SRP anycast */
    {"2001:2::/48", "benchmarking"},
    {"2001:3::/32", NULL},     /* AMT */
    {"2001:4:112::/48", NULL}, /* AS112-v6 */
    {"2001:10::/28", "orchid"},
    {"2001:20::/28", NULL}, /* ORCHIDv2 */
    {"2001:30::/28", NULL}, /* Drone Remote ID */
    {"2001::/23", "ietf_protocol"},
    {"2001:db8::/32", "documentation"},
    {"2002::/16", "6to4"},
    {"3fff::/20", "documentation"},
    {"5f00::/16", "srv6_sid"},
    {"2000::/3", NULL}, /* the rest of global unicast */
    {"fc00::/7", "unique_local"},
    {"fe80::/10", "link_local"},
    {"fec0::/10", "site_local"},
    {"ff00::/8", "multicast"},
    {"::/0", "reserved"},
};

int addr_parse_cidr(const char *s, struct cidr *out)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	struct cidr c;
	int maxp;

	if (alen == 0 || alen >= sizeof buf)
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	memset(&c, 0, sizeof c);
	if (inet_pton(AF_INET, buf, c.addr) == 1) {
		c.family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
		c.family = AF_INET6;
		maxp = 128;
	} else {
		return -1;
	}
	c.prefix = maxp;
	if (slash) {
		char *end;
		const char *p = slash + 1;
		if (*p < '0' || *p > '9')
			return -1;
		long v = strtol(p, &end, 10);
		if (*end != '\0' || v < 0 || v > maxp || end - p > 3)
			return -1;
		c.prefix = (int)v;
	}
	*out = c;
	return 0;
}

int addr_parse_literal(const char *s, struct ip_addr *out)
{
	char buf[64];
	size_t n = strlen(s);
	struct ip_addr a;
	struct in_addr v4;

	memset(&a, 0, sizeof a);
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (strchr(buf, ':')) {
		if (inet_pton(AF_INET6, buf, a.addr) != 1)
			return -1;
		a.family = AF_INET6;
	} else {
		/* inet_aton takes every legacy form a resolver would ("127.1", "0x7f.1",
		 * "2130706433"), so none of them slips past as a "name". But it also stops at
		 * whitespace and ignores the rest ("127.0.0.1 x"): only its own characters. */
		if (strspn(buf, "0123456789abcdefABCDEFxX.") != n || inet_aton(buf, &v4) == 0)
			return -1;
		memcpy(a.addr, &v4.s_addr, 4);
		a.family = AF_INET;
	}
	*out = a;
	return 0;
}

static int cidr_contains(const struct cidr *c, const struct ip_addr *a)
{
	int full = c->prefix / 8, rem = c->prefix % 8;

	if (c->family != a->family)
		return 0;
	if (memcmp(c->addr, a->addr, (size_t)full) != 0)
		return 0;
	if (rem == 0)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rem));
	return (c->addr[full] & mask) == (a->addr[full] & mask);
}

/* The reason of the first range holding a, or NULL (allowed). */
static const char *match_table(const struct range *t, size_t n, const struct ip_addr *a)
{
	for (size_t i = 0; i < n; i++) {
		struct cidr c;
		int parsed = addr_parse_cidr(t[i].cidr, &c) == 0;
		assert(parsed);
		if (parsed && cidr_contains(&c, a))
			return t[i].reason;
	}
	return NULL;
}

int addr_in_list(const struct ip_addr *a, const struct cidr *allow, size_t n)
{
	struct ip_addr v4;
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	int is_mapped = a->family == AF_INET6 && memcmp(a->addr, mapped, 12) == 0;

	memset(&v4, 0, sizeof v4);
	if (is_mapped) {
		v4.family = AF_INET;
		memcpy(v4.addr, a->addr + 12, 4);
	}
	for (size_t i = 0; i < n; i++)
		if (cidr_contains(&allow[i], a) || (is_mapped && cidr_contains(&allow[i], &v4)))
			return 1;
	return 0;
}

const char *addr_blocked_reason(const struct ip_addr *a, const struct cidr *allow, size_t n)
{
	const char *r;

	if (a->family == AF_INET)
		r = match_table(v4_blocked, sizeof v4_blocked / sizeof v4_blocked[0], a);
	else if (a->family == AF_INET6)
		r = match_table(v6_blocked, sizeof v6_blocked / sizeof v6_blocked[0], a);
	else
		return "unsupported_family";
	if (a->family == AF_INET && !r && a->addr[0] == 255 && a->addr[1] == 255 &&
	    a->addr[2] == 255 && a->addr[3] == 255)
		r = "broadcast";
	if (r && addr_in_list(a, allow, n))
		return NULL;
	return r;
}

const char *addr_host_blocked_reason(const char *host, const struct cidr *allow, size_t n)
{
	struct ip_addr a;
	size_t len = strlen(host);

	while (len > 0 && host[len - 1] == '.')
		len--; /* "localhost." is localhost */
	if ((len == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (len > 10 && strncasecmp(host + len - 10, ".localhost", 10) == 0)) {
		/* RFC 6761: localhost names always resolve to loopback. */
		memset(&a, 0, sizeof a);
		a.family = AF_INET;
		a.addr[0] = 127;
		a.addr[3] = 1;
		return addr_blocked_reason(&a, allow, n);
	}
	/* "127.0.0.1." is 127.0.0.1 to a resolver: check the host without its trailing dots. */
	char trimmed[256];
	if (len >= sizeof trimmed)
		return NULL;
	memcpy(trimmed, host, len);
	trimmed[len] = '\0';
	if (addr_parse_literal(trimmed, &a) != 0)
		return NULL;
	return addr_blocked_reason(&a, allow, n);
}

int addr_forwarded_client(const char *xff, const struct ip_addr *peer, const struct cidr *trusted,
                          size_t n, struct ip_addr *out)
{
	struct ip_addr a = *peer;
	if (!addr_in_list(&a, trusted, n)) {
		*out = a;
		return 0;
	}
	if (!xff)
		xff = "";
	/* From the right: each hop appended the address it received from; the first one not
	 * of a trusted proxy is the client's. Anything left of it was written by the client. */
	const char *end = xff + strlen(xff);
	while (end > xff && addr_in_list(&a, trusted, n)) {
		const char *start = end;
		while (start > xff && start[-1] != ',')
			start--;
		const char *b = start, *e = end;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		char buf[64];
		struct ip_addr hop;
		if (e - b <= 0 || (size_t)(e - b) >= sizeof buf)
			break;
		memcpy(buf, b, (size_t)(e - b));
		buf[e - b] = '\0';
		if (addr_parse_literal(buf, &hop) != 0)
			break; /* not an address: the hop we trust is as far as we can see */
		a = hop;
		end = start > xff ? start - 1 : xff;
	}
	*out = a;
	return 1;
}
