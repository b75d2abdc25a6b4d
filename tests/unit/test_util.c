/* test_util.c: util.h: identifiers, base64, durations, RFC 3339 times, id syntax and
 * constant-time comparison; jtext.h's JSON text against jansson's. Table-driven; every case names
 * itself in the failure message. Single-threaded; the id tests sleep a few milliseconds to cross
 * clock ticks. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "jtext.h"
#include "util.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Decodes the 48-bit millisecond timestamp from the first 10 ULID characters. */
static int64_t ulid_ms(const char *ulid)
{
	int64_t v = 0;
	for (int i = 0; i < 10; i++) {
		const char *p = strchr(crockford, ulid[i]);
		assert_non_null(p);
		v = v * 32 + (p - crockford);
	}
	return v;
}

/* ---- identifiers ---- */

static void test_new_id_shape(void **state)
{
	static const char *const prefixes[] = {"lab_", "sub_", "evt_", "cu_", "whsec_", ""};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(prefixes); i++) {
		char id[ID_CAP];
		size_t plen = strlen(prefixes[i]);
		int64_t before = util_now_ms();

		memset(id, 'x', sizeof id);
		assert_int_equal(util_new_id(prefixes[i], id), LH_OK);
		int64_t after = util_now_ms();
		if (strlen(id) != plen + 26)
			fail_msg("prefix '%s': id '%s' has length %zu, want %zu", prefixes[i], id,
			         strlen(id), plen + 26);
		assert_memory_equal(id, prefixes[i], plen);
		for (size_t k = plen; k < plen + 26; k++)
			if (!strchr(crockford, id[k]) || id[k] == '\0')
				fail_msg("prefix '%s': id '%s' has non-Crockford char '%c'",
				         prefixes[i], id, id[k]);
		/* 128 bits in 26 digits: the first digit carries only the top 3 bits. */
		assert_true(id[plen] >= '0' && id[plen] <= '7');
		int64_t ms = ulid_ms(id + plen);
		assert_true(ms >= before && ms <= after);
		assert_int_equal(util_id_time_ms(id), ms);
		if (plen > 0)
			assert_true(util_id_valid(id, prefixes[i]));
	}
}

static void test_id_time_of_what_is_not_an_id(void **state)
{
	(void)state;
	assert_int_equal(util_id_time_ms(""), -1);
	assert_int_equal(util_id_time_ms("evt_0123"), -1);
	assert_int_equal(util_id_time_ms("evt_01ARZ3NDEU00000000000000"), -1); /* 'U' */
	/* 01ARZ3NDEK in Crockford base32 (0 1 10 24 31 3 21 13 14 19): 1469922850259 ms. */
	assert_int_equal(util_id_time_ms("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"), 1469922850259LL);
}

static void test_new_id_prefix_too_long(void **state)
{
	char id[ID_CAP];
	char prefix[40];
	(void)state;

	memset(prefix, 'p', sizeof prefix - 1);
	prefix[sizeof prefix - 1] = '\0';
	assert_int_equal(util_new_id(prefix, id), LH_EINVAL);
	/* The longest prefix that still fits the buffer with the NUL. */
	prefix[ID_CAP - 27] = '\0';
	assert_int_equal(util_new_id(prefix, id), LH_OK);
	assert_int_equal(strlen(id), ID_CAP - 1);
}

static void test_new_id_time_order(void **state)
{
	char prev[ID_CAP], cur[ID_CAP];
	(void)state;

	assert_int_equal(util_new_id("evt_", prev), LH_OK);
	for (int i = 0; i < 20; i++) {
		sleep_ms(2);
		assert_int_equal(util_new_id("evt_", cur), LH_OK);
		if (strcmp(prev, cur) >= 0)
			fail_msg("round %d: id '%s' made later does not sort after '%s'", i, cur,
			         prev);
		assert_true(ulid_ms(cur + 4) > ulid_ms(prev + 4));
		memcpy(prev, cur, sizeof cur);
	}
}

static void test_new_id_monotonic(void **state)
{
	char prev[ID_CAP], cur[ID_CAP];
	(void)state;

	/* Many ids share a millisecond here; they must still sort in creation order. */
	assert_int_equal(util_new_id("dlv_", prev), LH_OK);
	for (int i = 0; i < 5000; i++) {
		assert_int_equal(util_new_id("dlv_", cur), LH_OK);
		if (strcmp(prev, cur) >= 0)
			fail_msg("id %d '%s' does not sort after the one before, '%s'", i, cur,
			         prev);
		memcpy(prev, cur, sizeof cur);
	}
}

static int cmp_ids(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void test_new_id_unique(void **state)
{
	enum { N = 1000 };
	char(*ids)[ID_CAP] = calloc(N, ID_CAP);
	(void)state;

	assert_non_null(ids);
	for (int i = 0; i < N; i++)
		assert_int_equal(util_new_id("sub_", ids[i]), LH_OK);
	qsort(ids, N, ID_CAP, cmp_ids);
	for (int i = 1; i < N; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			fail_msg("duplicate id '%s' among %d", ids[i], N);
	free(ids);
}

static void test_random_token(void **state)
{
	char tok[128], tok2[128];
	(void)state;

	assert_int_equal(util_random_token("whsec_", 32, tok, sizeof tok), LH_OK);
	assert_int_equal(strlen(tok), 6 + 43); /* 32 bytes -> 43 base64url chars */
	assert_memory_equal(tok, "whsec_", 6);
	assert_int_equal(strspn(tok + 6, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                 "0123456789-_"),
	                 43);
	assert_int_equal(util_random_token("whsec_", 32, tok2, sizeof tok2), LH_OK);
	assert_string_not_equal(tok, tok2);
	/* Too small a buffer, or more random bytes than supported. */
	assert_int_equal(util_random_token("whsec_", 32, tok, 49), LH_EINVAL);
	assert_int_equal(util_random_token("whsec_", 65, tok, sizeof tok), LH_EINVAL);
}

/* ---- base64 ---- */

struct b64_case {
	const char *raw;
	size_t n;
	const char *std;
	const char *url;
};

static const struct b64_case b64_cases[] = {
    /* RFC 4648 section 10 */
    {"", 0, "", ""},
    {"f", 1, "Zg==", "Zg"},
    {"fo", 2, "Zm8=", "Zm8"},
    {"foo", 3, "Zm9v", "Zm9v"},
    {"foob", 4, "Zm9vYg==", "Zm9vYg"},
    {"fooba", 5, "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", 6, "Zm9vYmFy", "Zm9vYmFy"},
    /* the two alphabets differ in the last two symbols */
    {"\xfb\xff", 2, "+/8=", "-_8"},
    {"\xfb\xff\xbf", 3, "+/+/", "-_-_"},
    {"\x00\x00\x00", 3, "AAAA", "AAAA"},
    {"\xff\xff\xff\xff", 4, "/////w==", "_____w"},
};

static void test_b64_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(b64_cases); i++) {
		const struct b64_case *c = &b64_cases[i];
		char out[64];
		unsigned char dec[64];
		size_t n;

		memset(out, '#', sizeof out);
		n = util_b64_encode(c->raw, c->n, out, sizeof out);
		if (n != strlen(c->std) || strcmp(out, c->std) != 0)
			fail_msg("case %zu: b64 '%s' (%zu), want '%s'", i, out, n, c->std);

		memset(out, '#', sizeof out);
		n = util_b64url_encode(c->raw, c->n, out, sizeof out);
		if (n != strlen(c->url) || strcmp(out, c->url) != 0)
			fail_msg("case %zu: b64url '%s' (%zu), want '%s'", i, out, n, c->url);

		/* Decoding takes the padded form and the unpadded form alike. */
		long d = util_b64_decode(c->std, strlen(c->std), dec, sizeof dec);
		if (d != (long)c->n || memcmp(dec, c->raw, c->n) != 0)
			fail_msg("case %zu: decode '%s' gave %ld bytes, want %zu", i, c->std, d,
			         c->n);
		size_t unpadded = strcspn(c->std, "=");
		d = util_b64_decode(c->std, unpadded, dec, sizeof dec);
		if (d != (long)c->n || memcmp(dec, c->raw, c->n) != 0)
			fail_msg("case %zu: decode unpadded '%.*s' gave %ld bytes, want %zu", i,
			         (int)unpadded, c->std, d, c->n);
	}
}

static void test_b64_encode_cap(void **state)
{
	char out[16];
	(void)state;

	/* "foobar" needs 8 chars + NUL. */
	memset(out, '#', sizeof out);
	assert_int_equal(util_b64_encode("foobar", 6, out, 8), 0);
	assert_int_equal(util_b64_encode("foobar", 6, out, 9), 8);
	assert_string_equal(out, "Zm9vYmFy");
	/* "f" padded needs 4 + NUL; unpadded 2 + NUL. */
	assert_int_equal(util_b64_encode("f", 1, out, 4), 0);
	assert_int_equal(util_b64_encode("f", 1, out, 5), 4);
	assert_int_equal(util_b64url_encode("f", 1, out, 2), 0);
	assert_int_equal(util_b64url_encode("f", 1, out, 3), 2);
	assert_string_equal(out, "Zg");
	assert_int_equal(util_b64url_encode("fo", 2, out, 3), 0);
	assert_int_equal(util_b64url_encode("", 0, out, 0), 0);
}

struct b64_bad {
	const char *in;
	size_t n;
};

static void test_b64_decode_bad(void **state)
{
	static const struct b64_bad bad[] = {
	    {"Z", 1},            /* one leftover symbol carries no whole byte */
	    {"Zm9vY", 5},        /* same after a full quantum */
	    {"Zm9v!", 5},        /* not in the alphabet */
	    {"Zm=9v", 5},        /* padding in the middle */
	    {"Zm 9v", 5},        /* space */
	    {"Zm9v\n", 5},       /* newline */
	    {"-_8", 3},          /* base64url alphabet is not standard base64 */
	    {"Zg\0=", 4},        /* embedded NUL */
	    {"Zm9vYmFy=Zg", 11}, /* padding then more data */
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		unsigned char out[32];
		long d = util_b64_decode(bad[i].in, bad[i].n, out, sizeof out);
		if (d != -1)
			fail_msg("case %zu '%.*s': decoded %ld bytes, want -1", i, (int)bad[i].n,
			         bad[i].in, d);
	}
}

static void test_b64_decode_cap(void **state)
{
	unsigned char out[8];
	(void)state;

	/* "foobar" is 6 bytes: 5 is too few, 6 exactly fits. */
	assert_int_equal(util_b64_decode("Zm9vYmFy", 8, out, 5), -1);
	assert_int_equal(util_b64_decode("Zm9vYmFy", 8, out, 6), 6);
	assert_memory_equal(out, "foobar", 6);
	assert_int_equal(util_b64_decode("Zg==", 4, out, 0), -1);
	/* Length limits the input: the bytes past n are not read. */
	assert_int_equal(util_b64_decode("Zm9v!!!!", 4, out, sizeof out), 3);
	assert_memory_equal(out, "foo", 3);
}

/* ---- durations ---- */

struct dur_case {
	const char *in;
	int ok;
	int64_t ms;
};

static void test_parse_duration(void **state)
{
	static const struct dur_case cases[] = {
	    {"0", 1, 0},
	    {"7", 1, 7000}, /* bare number = seconds */
	    {"5s", 1, 5000},
	    {"250ms", 1, 250},
	    {"0ms", 1, 0},
	    {"2m", 1, 120000},
	    {"1h", 1, 3600000},
	    {"30d", 1, 2592000000LL},
	    {"365d", 1, 31536000000LL},
	    {"", 0, 0},
	    {"5x", 0, 0},
	    {"-1", 0, 0},
	    {"-5s", 0, 0},
	    {"+5s", 0, 0},
	    {"s", 0, 0},
	    {"ms", 0, 0},
	    {"1.5s", 0, 0},
	    {"5 s", 0, 0},
	    {" 5s", 0, 0},
	    {"5s ", 0, 0},
	    {"5ss", 0, 0},
	    {"5S", 0, 0},
	    {"5sm", 0, 0},
	    {"0x10", 0, 0},
	    {"99999999999999999999", 0, 0},  /* strtoll overflow */
	    {"9223372036854775807ms", 0, 0}, /* INT64_MAX: no room for later arithmetic */
	    {"9223372036854775807d", 0, 0},
	    {"106751991167301d", 0, 0}, /* * 86400000 overflows int64 */
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		int64_t out = -42;
		int rc = util_parse_duration_ms(cases[i].in, &out);
		if (cases[i].ok && (rc != 0 || out != cases[i].ms))
			fail_msg("'%s': rc %d out %lld, want %lld", cases[i].in, rc, (long long)out,
			         (long long)cases[i].ms);
		if (!cases[i].ok && (rc != -1 || out != -42))
			fail_msg("'%s': rc %d out %lld, want -1 and out untouched", cases[i].in, rc,
			         (long long)out);
	}
}

/* ---- times ---- */

struct time_case {
	const char *in;
	int ok;
	int64_t t;
};

static void test_parse_time(void **state)
{
	static const struct time_case cases[] = {
	    {"2026-01-20T10:30:00Z", 1, 1768905000},
	    {"2026-01-20t10:30:00z", 1, 1768905000},
	    {"2026-01-20T16:00:00+05:30", 1, 1768905000},
	    {"2026-01-20T02:30:00-08:00", 1, 1768905000},
	    {"2026-01-20T10:30:00+00:00", 1, 1768905000},
	    {"2026-01-20T10:30:00.5Z", 1, 1768905000},
	    {"2026-01-20T10:30:00.123456789Z", 1, 1768905000},
	    {"2026-01-20T16:00:00.25+05:30", 1, 1768905000},
	    {"1970-01-01T00:00:00Z", 1, 0},
	    {"1969-12-31T23:59:59Z", 1, -1},
	    {"2024-02-29T00:00:00Z", 1, 1709164800},
	    {"2000-03-01T00:00:00Z", 1, 951868800},
	    {"2100-01-01T00:00:00Z", 1, 4102444800LL},
	    {"9999-12-31T23:59:59Z", 1, 253402300799LL},
	    {"1768905000", 1, 1768905000},
	    {"0", 1, 0},
	    {"999999999999", 1, 999999999999LL},
	    {"", 0, 0},
	    {"2026-01-20", 0, 0},
	    {"2026-01-20T10:30:00", 0, 0},      /* no zone */
	    {"2026-01-20 10:30:00Z", 0, 0},     /* space instead of T */
	    {"2026-01-20T10:30Z", 0, 0},        /* no seconds */
	    {"2026-1-20T10:30:00Z", 0, 0},      /* short month */
	    {"2026-13-01T00:00:00Z", 0, 0},     /* month 13 */
	    {"2026-00-10T00:00:00Z", 0, 0},     /* month 0 */
	    {"2026-01-00T00:00:00Z", 0, 0},     /* day 0 */
	    {"2026-01-32T00:00:00Z", 0, 0},     /* day 32 */
	    {"2026-01-20T24:00:00Z", 0, 0},     /* hour 24 */
	    {"2026-01-20T10:60:00Z", 0, 0},     /* minute 60 */
	    {"2026-01-20T10:30:61Z", 0, 0},     /* second 61 */
	    {"2026-01-20T10:30:00.Z", 0, 0},    /* empty fraction */
	    {"2026-01-20T10:30:00,5Z", 0, 0},   /* comma fraction */
	    {"2026-01-20T10:30:00+0530", 0, 0}, /* offset without colon */
	    {"2026-01-20T10:30:00+05", 0, 0},   /* offset without minutes */
	    {"2026-01-20T10:30:00+24:00", 0, 0},
	    {"2026-01-20T10:30:00+05:60", 0, 0},
	    {"2026-01-20T10:30:00Zjunk", 0, 0},
	    {"2026-01-20T10:30:00Z ", 0, 0},
	    {" 2026-01-20T10:30:00Z", 0, 0},
	    {"-5", 0, 0},
	    {"+5", 0, 0},
	    {"1e9", 0, 0},
	    {"1234567890123", 0, 0}, /* more than 12 digits */
	    {"now", 0, 0},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		int64_t out = -42;
		int rc = util_parse_time(cases[i].in, &out);
		if (cases[i].ok && (rc != 0 || out != cases[i].t))
			fail_msg("'%s': rc %d out %lld, want %lld", cases[i].in, rc, (long long)out,
			         (long long)cases[i].t);
		if (!cases[i].ok && rc == 0)
			fail_msg("'%s': accepted as %lld, want an error", cases[i].in,
			         (long long)out);
		if (!cases[i].ok && out != -42)
			fail_msg("'%s': out written on failure", cases[i].in);
	}
}

/* now = 2026-01-20T10:30:00Z (1768905000); cap 86400 as the delivery engine uses. */
static void test_parse_retry_after(void **state)
{
	static const struct {
		const char *in;
		size_t len; /* 0: strlen(in) */
		int ok, secs;
	} cases[] = {
	    {"120", 0, 1, 120},
	    {" \t120\r\n", 0, 1, 120},
	    {"0", 0, 1, 0},
	    {"86400", 0, 1, 86400},
	    {"86401", 0, 1, 86400},
	    {"99999999999999999999999999", 0, 1, 86400}, /* no overflow: clamped */
	    {"Tue, 20 Jan 2026 10:32:00 GMT", 0, 1, 120},
	    {" Tue, 20 Jan 2026 10:32:00 GMT\r\n", 0, 1, 120},
	    {"Tue, 20 Jan 2026 10:00:00 GMT", 0, 1, 0},     /* in the past: now */
	    {"Thu, 01 Jan 1970 00:00:00 GMT", 0, 1, 0},     /* the epoch is a date too */
	    {"Sat, 20 Jan 2029 10:30:00 GMT", 0, 1, 86400}, /* far future: the cap */
	    {"", 0, 0, 0},
	    {" \r\n", 0, 0, 0},
	    {"120abc", 0, 0, 0}, /* was read as 120 */
	    {"-5", 0, 0, 0},
	    {"+5", 0, 0, 0},
	    {"1.5", 0, 0, 0},
	    {"soon", 0, 0, 0},
	    {"12\0"
	     "0",
	     4, 0, 0}, /* a NUL inside the value */
	    {"Tue, 20 Jan 2026 10:32:00 GMT                                        x", 0, 0, 0},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		int out = -42;
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
		int rc = util_parse_retry_after(cases[i].in, len, 1768905000, 86400, &out);
		if (cases[i].ok && (rc != 0 || out != cases[i].secs))
			fail_msg("'%s': rc %d out %d, want %d", cases[i].in, rc, out,
			         cases[i].secs);
		if (!cases[i].ok && (rc == 0 || out != -42))
			fail_msg("'%s': rc %d out %d, want an error and out untouched", cases[i].in,
			         rc, out);
	}
}

static void test_rfc3339_round_trip(void **state)
{
	static const int64_t times[] = {
	    0,          1,          59,         86399,        951782400,    951868800,
	    1709164800, 1768905000, 2147483647, 2147483648LL, 4102444800LL, 253402300799LL};
	char buf[32];
	(void)state;

	util_rfc3339(1768905000, buf);
	assert_string_equal(buf, "2026-01-20T10:30:00Z");
	util_rfc3339(0, buf);
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	util_rfc3339(951782400, buf);
	assert_string_equal(buf, "2000-02-29T00:00:00Z");

	for (size_t i = 0; i < N_ELEMS(times); i++) {
		int64_t back = -42;
		memset(buf, '#', sizeof buf);
		util_rfc3339(times[i], buf);
		assert_int_equal(strlen(buf), 20);
		if (util_parse_time(buf, &back) != 0 || back != times[i])
			fail_msg("%lld -> '%s' -> %lld", (long long)times[i], buf, (long long)back);
	}
	/* Now, too: the wall clock formats and parses back to itself. */
	int64_t now = util_now(), back = 0;
	util_rfc3339(now, buf);
	assert_int_equal(util_parse_time(buf, &back), 0);
	assert_int_equal(back, now);
}

/* ---- identifier syntax and constant-time compare ---- */

struct idv_case {
	const char *s;
	const char *prefix;
	int want;
};

static void test_id_valid(void **state)
{
	static const struct idv_case cases[] = {
	    {"lab_01JABCDEFGHJKMNPQRSTVWXYZ0", "lab_", 1},
	    {"lab_x", "lab_", 1},
	    {"lab_a_b_C_9", "lab_", 1},
	    {"lab_", "lab_", 0}, /* nothing after the prefix */
	    {"", "lab_", 0},
	    {"", "", 0},
	    {"sub_01ABC", "lab_", 0}, /* other type */
	    {"LAB_01ABC", "lab_", 0}, /* prefix is case-sensitive */
	    {"lab01ABC", "lab_", 0},
	    {"lab_01-ABC", "lab_", 0},
	    {"lab_01 ABC", "lab_", 0},
	    {"lab_01.ABC", "lab_", 0},
	    {"lab_01/ABC", "lab_", 0},
	    {"lab_01\nABC", "lab_", 0},
	    {"lab_01\xc3\xa9", "lab_", 0}, /* non-ASCII */
	    {"lab_' OR 1=1 --", "lab_", 0},
	    /* 47 characters is the most that fits ID_CAP with its NUL */
	    {"lab_0123456789012345678901234567890123456789012", "lab_", 1},
	    {"lab_01234567890123456789012345678901234567890123", "lab_", 0},
	};
	char id[ID_CAP];
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		int got = util_id_valid(cases[i].s, cases[i].prefix);
		if (got != cases[i].want)
			fail_msg("util_id_valid('%s', '%s') = %d, want %d", cases[i].s,
			         cases[i].prefix, got, cases[i].want);
	}
	assert_int_equal(util_new_id("bkg_", id), LH_OK);
	assert_int_equal(util_id_valid(id, "bkg_"), 1);
	assert_int_equal(util_id_valid(id, "lab_"), 0);
}

static void test_ct_equal(void **state)
{
	unsigned char a[32], b[32];
	(void)state;

	for (size_t i = 0; i < sizeof a; i++)
		a[i] = (unsigned char)(i * 7 + 1);
	memcpy(b, a, sizeof a);
	assert_int_equal(util_ct_equal(a, b, sizeof a), 1);
	assert_int_equal(util_ct_equal(a, b, 0), 1);
	for (size_t i = 0; i < sizeof a; i++) {
		b[i] ^= 0x80;
		if (util_ct_equal(a, b, sizeof a) != 0)
			fail_msg("difference at byte %zu not seen", i);
		b[i] ^= 0x80;
	}
	b[31] ^= 1;
	assert_int_equal(util_ct_equal(a, b, 31), 1); /* only the first n bytes count */
	assert_int_equal(util_ct_equal(a, b, 32), 0);
	assert_int_equal(util_ct_equal("secret", "secreT", 6), 0);
}

static void test_sha256(void **state)
{
	/* FIPS 180-2 "abc" */
	static const unsigned char abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
	                                      0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
	                                      0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
	                                      0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
	unsigned char out[32];
	(void)state;

	util_sha256("abc", 3, out);
	assert_memory_equal(out, abc, 32);
}

struct utf8_case {
	const char *in;
	size_t n;   /* bytes of in */
	size_t cap; /* of the output */
	const char *want;
};

static const struct utf8_case utf8_cases[] = {
    {"plain", 5, 64, "plain"},
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 64,
     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
    {"a\xff"
     "b",
     3, 64,
     "a\xef\xbf\xbd"
     "b"},
    {"a\0b", 3, 64,
     "a\xef\xbf\xbd"
     "b"},                                                           /* NUL */
    {"\xc0\xaf", 2, 64, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
    {"\xed\xa0\x80", 3, 64, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
    {"\xf4\x90\x80\x80", 4, 64, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xe2\x82"
     "x",
     3, 64,
     "\xef\xbf\xbd"
     "x"},                                           /* a cut character mid-text: one U+FFFD */
    {"\x80\xbf", 2, 64, "\xef\xbf\xbd\xef\xbf\xbd"}, /* stray continuation bytes */
    {"ab\xe2\x82", 4, 64, "ab"},                     /* cut by the end of the input: left out */
    {"ab\xf0\x9f\x98", 5, 64, "ab"},
    {"ab\xff", 3, 64, "ab\xef\xbf\xbd"}, /* but an invalid last byte is replaced */
    {"ab\xe2\x82\xac", 5, 5, "ab"},      /* the output ends at a character boundary */
    {"ab\xe2\x82\xac", 5, 6, "ab\xe2\x82\xac"},
    {"a\xff", 2, 4, "a"},
    {"", 0, 4, ""},
};

static void test_utf8_clean(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
		const struct utf8_case *c = &utf8_cases[i];
		char out[64];
		memset(out, 'X', sizeof out);
		size_t n = util_utf8_clean(c->in, c->n, out, c->cap);
		if (n != strlen(c->want) || memcmp(out, c->want, n + 1) != 0)
			fail_msg("case %zu: got %zu bytes '%s', want '%s'", i, n, out, c->want);
	}
}

static void test_range_parse(void **state)
{
	static const struct {
		const char *h;
		uint64_t size;
		int want;
		uint64_t first, last;
	} cases[] = {
	    {NULL, 100, 0, 0, 0},
	    {"bytes=0-9", 100, 1, 0, 9},
	    {"BYTES=0-9", 100, 1, 0, 9},
	    {"bytes=10-", 100, 1, 10, 99},
	    {"bytes=-10", 100, 1, 90, 99},
	    {"bytes=-100", 100, 1, 0, 99},
	    {"bytes=-1000", 100, 1, 0, 99},
	    {"bytes=5-1000", 100, 1, 5, 99},
	    {"bytes=99-99", 100, 1, 99, 99},
	    {"bytes= 1-2 ", 100, 1, 1, 2},
	    {"bytes=100-", 100, -1, 0, 0},
	    {"bytes=100-200", 100, -1, 0, 0},
	    {"bytes=-0", 100, -1, 0, 0},
	    {"bytes=0-0", 0, -1, 0, 0},
	    {"bytes=9-3", 100, 0, 0, 0},     /* malformed: the whole */
	    {"bytes=0-1,5-9", 100, 0, 0, 0}, /* several: the whole */
	    {"bytes=-", 100, 0, 0, 0},
	    {"bytes=", 100, 0, 0, 0},
	    {"bytes=a-b", 100, 0, 0, 0},
	    {"bytes=1-2x", 100, 0, 0, 0},
	    {"items=0-9", 100, 0, 0, 0},
	    {"bytes=0-9999999999999999999999", 100, 0, 0, 0}, /* would overflow */
	    {"bytes=999999999999999999-", 100, -1, 0, 0},
	};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t a = 77, b = 77;
		int got = util_range_parse(cases[i].h, cases[i].size, &a, &b);
		if (got != cases[i].want)
			fail_msg("case %zu (%s): got %d, want %d", i, cases[i].h, got,
			         cases[i].want);
		if (got == 1 && (a != cases[i].first || b != cases[i].last))
			fail_msg("case %zu: [%llu, %llu]", i, (unsigned long long)a,
			         (unsigned long long)b);
		if (got != 1 && (a != 77 || b != 77))
			fail_msg("case %zu: outputs written without a range", i);
	}
}

static void test_grow(void **state)
{
	(void)state;
	int *a = NULL;
	size_t cap = 0;
	assert_int_equal(UTIL_GROW(a, cap, 0, 8), 0); /* nothing needed: nothing allocated */
	assert_null(a);
	assert_int_equal(cap, 0);
	assert_int_equal(UTIL_GROW(a, cap, 1, 8), 0);
	assert_non_null(a);
	assert_int_equal(cap, 8);
	for (int i = 0; i < 8; i++)
		a[i] = i;
	assert_int_equal(UTIL_GROW(a, cap, 9, 8), 0); /* doubles, keeps the contents */
	assert_int_equal(cap, 16);
	for (int i = 0; i < 8; i++)
		assert_int_equal(a[i], i);
	assert_int_equal(UTIL_GROW(a, cap, 100, 8), 0); /* to need at once */
	assert_int_equal(cap, 128);
	int *keep = a;
	assert_int_equal(UTIL_GROW(a, cap, SIZE_MAX / 2, 8), -1); /* overflows: untouched */
	assert_ptr_equal(a, keep);
	assert_int_equal(cap, 128);
	free(a);
}

/* jtext writes what json_dumps(JSON_COMPACT) prints for the same object, every control
 * character, quote, backslash and non-ASCII character included. */
static void test_jtext_as_jansson(void **state)
{
	(void)state;
	char all[128];
	for (int c = 1; c < 128; c++)
		all[c - 1] = (char)c;
	all[127] = '\0';
	const char *const strings[] = {"",
	                               "plain",
	                               "q\"uote",
	                               "back\\slash",
	                               "a/b",
	                               all,
	                               "caf\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\xa7\xaa"};
	for (size_t i = 0; i < N_ELEMS(strings); i++) {
		struct jtext t;
		jtext_init(&t, 4096);
		jtext_open(&t, '{');
		jtext_kv(&t, "s", strings[i]);
		jtext_key(&t, strings[i]);
		jtext_int(&t, -9007199254740993LL);
		jtext_key(&t, "list");
		jtext_open(&t, '[');
		jtext_str(&t, strings[i]);
		jtext_int(&t, 0);
		jtext_open(&t, '{');
		jtext_close(&t, '}');
		jtext_open(&t, '[');
		jtext_close(&t, ']');
		jtext_close(&t, ']');
		jtext_key(&t, "raw");
		jtext_raw(&t, "{\"x\":1}", 7);
		jtext_close(&t, '}');
		char *got = jtext_take(&t);
		assert_non_null(got);
		json_t *o = json_pack("{s:s, s:I, s:[s, i, {}, []], s:{s:i}}", "s", strings[i],
		                      strings[i], (json_int_t)-9007199254740993LL, "list",
		                      strings[i], 0, "raw", "x", 1);
		assert_non_null(o);
		char *want = json_dumps(o, JSON_COMPACT);
		if (strcmp(got, want) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, got, want);
		free(want);
		json_decref(o);
		free(got);
	}
}

/* jtext_dump prints any jansson value as json_dumps does, reals at both precisions used. */
static void test_jtext_dump_as_jansson(void **state)
{
	(void)state;
	const char *const docs[] = {
	    "{}",
	    "[]",
	    "null",
	    "true",
	    "false",
	    "0",
	    "-1",
	    "9223372036854775807",
	    "\"\"",
	    "{\"a\":[1,2.5,{\"b\":null}],\"c\":true,\"d\":false,\"\":\"\\u0001\\u001f\\\"\\\\/\"}",
	    "[0.1, 1e300, -2.5e-300, 100000000000000000000.0, 1.0, 3.0e5, 0.000001, 123456789.123456789,"
	    " 1e-7, -0.0, 5e22, 1.7976931348623157e308]",
	    "{\"nested\":{\"deeper\":{\"deepest\":[[[]],{}]}},\"caf\xc3\xa9\":\"\xe2\x80\xa8\xf0\x9f\xa7\xaa\"}",
	    "{\"z\":1,\"a\":2,\"m\":3}",
	};
	const int precisions[] = {0, 15};
	for (size_t i = 0; i < N_ELEMS(docs); i++) {
		json_error_t err;
		json_t *v = json_loads(docs[i], JSON_DECODE_ANY, &err);
		if (!v)
			fail_msg("case %zu does not parse: %s", i, err.text);
		for (size_t k = 0; k < N_ELEMS(precisions); k++) {
			char *got = jtext_dump(v, precisions[k], 1 << 20);
			char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
			                               JSON_REAL_PRECISION(precisions[k]));
			assert_non_null(got);
			assert_non_null(want);
			if (strcmp(got, want) != 0)
				fail_msg("case %zu precision %d:\n got  %s\n want %s", i,
				         precisions[k], got, want);
			free(got);
			free(want);
		}
		assert_null(jtext_dump(v, 0, 0)); /* over the cap */
		json_decref(v);
	}
	assert_null(jtext_dump(NULL, 0, 100));
	/* A string holding a NUL (json_stringn) is printed whole, as jansson does. */
	json_t *nul = json_stringn("a\0b", 3);
	char *got = jtext_dump(nul, 0, 100);
	char *want = json_dumps(nul, JSON_ENCODE_ANY);
	assert_string_equal(got, want);
	free(got);
	free(want);
	json_decref(nul);
}

/* Past its cap the text fails whole: no truncated JSON. */
static void test_jtext_cap(void **state)
{
	(void)state;
	struct jtext t;
	jtext_init(&t, 10);
	jtext_str(&t, "12345678"); /* 10 bytes with its quotes: fits */
	char *got = jtext_take(&t);
	assert_string_equal(got, "\"12345678\"");
	free(got);
	jtext_init(&t, 10);
	jtext_str(&t, "123456789");
	jtext_raw(&t, "", 0);
	assert_null(jtext_take(&t));
	jtext_init(&t, 10);
	got = jtext_take(&t); /* nothing written: an empty string */
	assert_string_equal(got, "");
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_id_shape),
	    cmocka_unit_test(test_new_id_prefix_too_long),
	    cmocka_unit_test(test_id_time_of_what_is_not_an_id),
	    cmocka_unit_test(test_new_id_time_order),
	    cmocka_unit_test(test_new_id_monotonic),
	    cmocka_unit_test(test_new_id_unique),
	    cmocka_unit_test(test_random_token),
	    cmocka_unit_test(test_b64_vectors),
	    cmocka_unit_test(test_b64_encode_cap),
	    cmocka_unit_test(test_b64_decode_bad),
	    cmocka_unit_test(test_b64_decode_cap),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_parse_time),
	    cmocka_unit_test(test_parse_retry_after),
	    cmocka_unit_test(test_rfc3339_round_trip),
	    cmocka_unit_test(test_id_valid),
	    cmocka_unit_test(test_ct_equal),
	    cmocka_unit_test(test_sha256),
	    cmocka_unit_test(test_utf8_clean),
	    cmocka_unit_test(test_grow),
	    cmocka_unit_test(test_range_parse),
	    cmocka_unit_test(test_jtext_as_jansson),
	    cmocka_unit_test(test_jtext_dump_as_jansson),
	    cmocka_unit_test(test_jtext_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
