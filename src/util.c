/* util.c: see util.h. */
#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pthread.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

/* Small requests (ids, request ids, 32-byte secrets) are served from a per-thread buffer
 * filled by one RAND_bytes call: OpenSSL's generator makes a system call (getpid, for fork
 * detection) on every call, which cost more than the rest of creating an id. Bytes handed
 * out are wiped from the buffer. labhook never forks, so no two threads or processes share
 * a buffer's bytes. */
#define RAND_BUF 512

static __thread unsigned char rand_buf[RAND_BUF];
static __thread size_t rand_left;

enum lh_err util_random(void *buf, size_t n)
{
	if (n > RAND_BUF / 4) {
		if (n > INT_MAX || RAND_bytes(buf, (int)n) != 1)
			return LH_EIO;
		return LH_OK;
	}
	if (rand_left < n) {
		if (RAND_bytes(rand_buf, RAND_BUF) != 1)
			return LH_EIO;
		rand_left = RAND_BUF;
	}
	unsigned char *p = rand_buf + RAND_BUF - rand_left;
	memcpy(buf, p, n);
	OPENSSL_cleanse(p, n);
	rand_left -= n;
	return LH_OK;
}

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Monotonic within the process: ids made in the same millisecond (or while the clock steps
 * back) continue from the last one plus one, so creation order is id order. */
static pthread_mutex_t id_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_last_ms;
static unsigned char id_last_rand[10];

enum lh_err util_new_id(const char *prefix, char out[ID_CAP])
{
	unsigned char raw[16];
	uint64_t ms = (uint64_t)util_now_ms();
	size_t plen = strlen(prefix);
	enum lh_err e = LH_OK;

	if (plen > ID_CAP - 27)
		return LH_EINVAL;
	pthread_mutex_lock(&id_mu);
	if (ms <= id_last_ms) {
		ms = id_last_ms;
		for (int i = 9; i >= 0 && ++id_last_rand[i] == 0; i--)
			;
	} else {
		e = util_random(id_last_rand, sizeof id_last_rand);
		id_last_ms = ms;
	}
	memcpy(raw + 6, id_last_rand, 10);
	pthread_mutex_unlock(&id_mu);
	if (e != LH_OK)
		return e;
	for (int i = 5; i >= 0; i--) {
		raw[i] = (unsigned char)(ms & 0xff);
		ms >>= 8;
	}
	/* 128 bits as 26 base32 digits: the first digit carries the top 3 bits. */
	char enc[27];
	unsigned bits = 2, acc = 0; /* 2 zero bits pad 128 to 130 = 26 x 5 */
	size_t k = 0;
	for (size_t i = 0; i < 16; i++) {
		acc = (acc << 8) | raw[i];
		bits += 8;
		while (bits >= 5) {
			enc[k++] = crockford[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	enc[k] = '\0';
	memcpy(out, prefix, plen);
	memcpy(out + plen, enc, k + 1);
	return LH_OK;
}

int64_t util_id_time_ms(const char *id)
{
	size_t n = strlen(id);
	uint64_t v = 0;
	if (n < 26)
		return -1;
	/* The ULID's first 10 digits: 2 zero bits of padding, then the 48-bit milliseconds. */
	for (const char *u = id + n - 26; u < id + n - 16; u++) {
		const char *d = *u ? strchr(crockford, *u) : NULL;
		if (!d)
			return -1;
		v = v << 5 | (uint64_t)(d - crockford);
	}
	return (int64_t)v;
}

enum lh_err util_random_token(const char *prefix, size_t n, char *out, size_t cap)
{
	unsigned char raw[64];
	size_t plen = strlen(prefix);
	enum lh_err e;

	if (n > sizeof raw || plen >= cap)
		return LH_EINVAL;
	if ((e = util_random(raw, n)) != LH_OK)
		return e;
	if (util_b64url_encode(raw, n, out + plen, cap - plen) == 0)
		return LH_EINVAL;
	memcpy(out, prefix, plen);
	OPENSSL_cleanse(raw, sizeof raw);
	return LH_OK;
}

static size_t b64_encode_with(const char *alpha, int pad, const void *in, size_t n, char *out,
                              size_t cap)
{
	const unsigned char *p = in;
	size_t need = pad ? ((n + 2) / 3) * 4 : (n * 4 + 2) / 3;
	size_t o = 0;

	if (need + 1 > cap)
		return 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t rem = n - i;
		if (rem > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (rem > 2)
			v |= p[i + 2];
		out[o++] = alpha[(v >> 18) & 63];
		out[o++] = alpha[(v >> 12) & 63];
		if (rem > 1)
			out[o++] = alpha[(v >> 6) & 63];
		else if (pad)
			out[o++] = '=';
		if (rem > 2)
			out[o++] = alpha[v & 63];
		else if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t util_b64_encode(const void *in, size_t n, char *out, size_t cap)
{
	return b64_encode_with(b64std, 1, in, n, out, cap);
}

size_t util_b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
	return b64_encode_with(b64url, 0, in, n, out, cap);
}

static int b64_val(char c)
{
	const char *p = strchr(b64std, c);
	return (c != '\0' && p) ? (int)(p - b64std) : -1;
}

long util_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	while (n > 0 && in[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val(in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)((acc >> bits) & 0xff);
		}
	}
	return (long)o;
}

void util_sha256(const void *data, size_t n, unsigned char out[32])
{
	SHA256(data, n, out);
}

/* How many bytes the character starting at p[0] needs (1-4; 0 if no character starts
 * with that byte) and, in *good, how many of them (at most avail) are a valid start of it
 * (Unicode table 3-7: no overlong forms, surrogates or values past U+10FFFF). */
static size_t utf8_need(const unsigned char *p, size_t avail, size_t *good)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t need;

	*good = 1;
	if (c > 0 && c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4;
	else
		return 0; /* NUL, a continuation byte, C0, C1 or F5-FF */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (size_t i = 1; i < need && i < avail && p[i] >= lo && p[i] <= hi; i++) {
		lo = 0x80;
		hi = 0xbf;
		*good = i + 1;
	}
	return need;
}

int util_grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : (first ? first : 1);
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -1;
		ncap *= 2;
	}
	if (elem && ncap > SIZE_MAX / elem)
		return -1;
	void *p; /* memcpy, not a cast to void **: the caller's pointer is a T * */
	memcpy(&p, pp, sizeof p);
	void *np = realloc(p, ncap * elem);
	if (!np)
		return -1;
	memcpy(pp, &np, sizeof np);
	*cap = ncap;
	return 0;
}

size_t util_utf8_clean(const char *in, size_t n, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t i = 0, o = 0;

	while (i < n) {
		size_t good, need = utf8_need(p + i, n - i, &good);
		int ok = need > 0 && good == need;
		if (!ok && need > 0 && i + good == n)
			break; /* a character cut by the end of the input */
		size_t m = ok ? need : 3;
		if (o + m >= cap)
			break;
		memcpy(out + o, ok ? in + i : "\xef\xbf\xbd", m); /* U+FFFD */
		o += m;
		i += good;
	}
	out[o] = '\0';
	return o;
}

int util_ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

void util_hex(const void *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *b = in;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* A decimal number of 1..18 digits at *p (so it cannot overflow); moves *p past it. */
static int range_num(const char **p, uint64_t *out)
{
	uint64_t v = 0;
	int k = 0;
	while (**p >= '0' && **p <= '9') {
		if (++k > 18)
			return -1;
		v = v * 10 + (uint64_t)(**p - '0');
		(*p)++;
	}
	if (k == 0)
		return -1;
	*out = v;
	return 0;
}

int util_range_parse(const char *h, uint64_t size, uint64_t *first, uint64_t *last)
{
	uint64_t a = 0, b = 0;
	int has_a, has_b;
	if (!h || strncasecmp(h, "bytes=", 6) != 0)
		return 0;
	const char *p = h + 6;
	while (*p == ' ' || *p == '\t')
		p++;
	has_a = *p >= '0' && *p <= '9';
	if (has_a && range_num(&p, &a))
		return 0;
	if (*p++ != '-')
		return 0;
	has_b = *p >= '0' && *p <= '9';
	if (has_b && range_num(&p, &b))
		return 0;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '\0' || (!has_a && !has_b) || (has_a && has_b && b < a))
		return 0; /* malformed, or several ranges (a comma): the whole */
	if (!has_a) {     /* the last b bytes */
		if (b == 0 || size == 0)
			return -1;
		a = b >= size ? 0 : size - b;
		b = size - 1;
	} else {
		if (a >= size)
			return -1;
		if (!has_b || b >= size)
			b = size - 1;
	}
	*first = a;
	*last = b;
	return 1;
}

int64_t util_now(void)
{
	return (int64_t)time(NULL);
}

int64_t util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void util_rfc3339(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int parse_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int util_parse_time(const char *s, int64_t *out)
{
	const char *p = s;
	int y, mo, d, h, mi, sec, off = 0;

	if (*s == '\0')
		return -1;
	if (strspn(s, "0123456789") == strlen(s)) {
		if (strlen(s) > 12)
			return -1;
		*out = strtoll(s, NULL, 10);
		return 0;
	}
	if (parse_digits(&p, 4, &y) || *p++ != '-' || parse_digits(&p, 2, &mo) || *p++ != '-' ||
	    parse_digits(&p, 2, &d) || (*p != 'T' && *p != 't') || !*p++ ||
	    parse_digits(&p, 2, &h) || *p++ != ':' || parse_digits(&p, 2, &mi) || *p++ != ':' ||
	    parse_digits(&p, 2, &sec))
		return -1;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if (parse_digits(&p, 2, &oh) || *p++ != ':' || parse_digits(&p, 2, &om) ||
		    oh > 23 || om > 59)
			return -1;
		off = sign * (oh * 3600 + om * 60);
	} else {
		return -1;
	}
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    sec > 60)
		return -1;
	if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return -1;
	/* Days from civil (Howard Hinnant's algorithm), avoiding timegm's locale of TZ. */
	int yy = y - (mo <= 2);
	int era = (yy >= 0 ? yy : yy - 399) / 400;
	unsigned yoe = (unsigned)(yy - era * 400);
	unsigned doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
	*out = days * 86400 + h * 3600 + mi * 60 + sec - off;
	return 0;
}

int util_parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	long long v;
	int64_t mult;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || v < 0)
		return -1;
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		mult = 86400 * 1000;
	else
		return -1;
	if (v > INT64_MAX / mult / 1000) /* keep well clear of overflow in later arithmetic */
		return -1;
	*out = (int64_t)v * mult;
	return 0;
}

int util_parse_retry_after(const char *v, size_t n, int64_t now, int cap_s, int *out)
{
	char buf[64];
	int64_t secs = 0;

	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && strchr(" \t\r\n", v[n - 1]) && v[n - 1] != '\0')
		n--;
	/* An HTTP-date is 29 bytes; anything much longer is neither form. */
	if (n == 0 || n >= sizeof buf || memchr(v, '\0', n))
		return -1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	if (strspn(buf, "0123456789") == n) {
		for (size_t i = 0; i < n && secs <= cap_s; i++)
			secs = secs * 10 + (buf[i] - '0');
	} else {
		/* libcurl's date parser: the one the rest of the HTTP client trusts. */
		time_t t = curl_getdate(buf, NULL);
		if (t == -1)
			return -1;
		secs = (int64_t)t - now;
	}
	*out = secs < 0 ? 0 : secs > cap_s ? cap_s : (int)secs;
	return 0;
}

int util_id_valid(const char *s, const char *prefix)
{
	size_t plen = strlen(prefix), n = strlen(s);

	if (n <= plen || n >= ID_CAP || strncmp(s, prefix, plen) != 0)
		return 0;
	for (size_t i = plen; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

void util_roff_text(FILE *f, const char *s, int dashes)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", f); /* else a line starting with it would be a request */
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-' && dashes)
			fputs("\\-", f);
		else if (*s == '\n')
			fputc(' ', f);
		else
			fputc(*s, f);
	}
}
