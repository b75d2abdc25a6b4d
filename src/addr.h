/* addr.h: the address policy for webhook endpoints (API.md 7.5) and CIDR parsing.
 *
 * An address is blocked when IANA's special-purpose registries say it is not globally
 * reachable (loopback, private, link-local, CGNAT, reserved, documentation, ...), when it
 * is multicast or IPv6 outside 2000::/3, or in any form that embeds an IPv4 address in
 * IPv6 (mapped, compatible, NAT64, 6to4, Teredo), unless an allow-list CIDR admits it. The
 * same check runs on literal hosts at registration and on resolved addresses at delivery
 * time.
 * Pure functions; thread-safe.
 */
#ifndef LH_ADDR_H
#define LH_ADDR_H

#include <stddef.h>

struct cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
};

struct ip_addr {
	int family;
	unsigned char addr[16]; /* 4 bytes used for AF_INET */
};

/* Parses "a.b.c.d/n", "x::y/n" or a bare address (full-length prefix); 0 on success. */
int addr_parse_cidr(const char *s, struct cidr *out);
/* Parses a literal host: dotted IPv4 in any inet_aton form, or IPv6 with or without
 * brackets (no zone id). 0 if s is a literal address, -1 otherwise. */
int addr_parse_literal(const char *s, struct ip_addr *out);
/* NULL if the address may be contacted, else the name of the blocked range (e.g.
 * "loopback"). An address admitted by any of the n allow-list entries is never blocked. */
const char *addr_blocked_reason(const struct ip_addr *a, const struct cidr *allow, size_t n);
/* Policy for a URL host as written: literal addresses and localhost names are checked,
 * other names pass (they are checked when resolved). Same return as addr_blocked_reason. */
const char *addr_host_blocked_reason(const char *host, const struct cidr *allow, size_t n);

/* 1 if a is inside any of the n ranges (an IPv4-mapped IPv6 address also as IPv4). */
int addr_in_list(const struct ip_addr *a, const struct cidr *list, size_t n);
/* The client's address behind reverse proxies: when peer (the connection's address) is in
 * trusted, the rightmost X-Forwarded-For entry (xff, may be NULL) that is not a trusted
 * proxy, walking left over trusted ones; an entry that is not an address stops the walk.
 * Else peer. Returns 1 if peer is a trusted proxy, else 0; *out is always written. */
int addr_forwarded_client(const char *xff, const struct ip_addr *peer, const struct cidr *trusted,
                          size_t n, struct ip_addr *out);

#endif
