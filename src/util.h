/* util.h: small pure helpers shared by every layer: randomness, identifiers, encodings,
 * hashes, time formatting and duration parsing.
 *
 * Randomness comes only from the OS CSPRNG via OpenSSL RAND_bytes. Identifiers are
 * time-ordered (48-bit milliseconds + 80 random bits, Crockford base32, ULID layout) behind a
 * type prefix, so they sort by creation and make good primary keys. All functions are
 * thread-safe and write their outputs only on success.
 */
#ifndef LH_UTIL_H
#define LH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define ID_CAP 48 /* prefix (<= 8) + 26 ULID chars + NUL, with room */

/* The number of elements of an array (not a pointer). */
#define COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

/* FNV-1a, 64-bit, the one hash of in-memory tables (not for anything an attacker may aim
 * at unless h starts from a random basis). Continue a hash by passing it back as h. */
#define UTIL_FNV_BASIS 1469598103934665603ULL
static inline uint64_t util_fnv1a(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* Makes room for at least need elements of elem bytes in the array at *(T **)pp holding
 * *cap: grows it to first elements, then doubles (and to need at once if that is more).
 * Returns 0 with the pointer and *cap updated, or -1 (out of memory, or a size that would
 * overflow) with both untouched. Use UTIL_GROW, which passes the element size. */
int util_grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first);
#define UTIL_GROW(arr, cap, need, first) util_grow(&(arr), &(cap), (need), sizeof *(arr), (first))

/* Fills buf with n bytes from the OS CSPRNG. */
enum lh_err util_random(void *buf, size_t n);
/* Writes "<prefix><26-char ULID>" into out (ID_CAP bytes). */
enum lh_err util_new_id(const char *prefix, char out[ID_CAP]);
/* The creation time (unix ms) of an id util_new_id made, or -1 if id is not one. */
int64_t util_id_time_ms(const char *id);
/* Random token: prefix + base64url of n random bytes, into out of cap bytes. */
enum lh_err util_random_token(const char *prefix, size_t n, char *out, size_t cap);

/* Base64 (standard alphabet, padded) of in into out; returns length, or 0 if cap is short. */
size_t util_b64_encode(const void *in, size_t n, char *out, size_t cap);
/* Decodes standard base64 (padding optional); returns decoded length or -1 on bad input. */
long util_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap);
/* Base64url without padding. Same return contract as util_b64_encode. */
size_t util_b64url_encode(const void *in, size_t n, char *out, size_t cap);

/* SHA-256 of data into out. */
void util_sha256(const void *data, size_t n, unsigned char out[32]);
/* Constant-time comparison of two equal-length byte strings: 1 if equal. */
int util_ct_equal(const void *a, const void *b, size_t n);
/* Lower-case hex of the n bytes at in into out (2n + 1 bytes, NUL-terminated). */
void util_hex(const void *in, size_t n, char *out);

/* An HTTP Range header (RFC 9110 14.1.2) against a representation of size bytes. Returns 1
 * for one satisfiable range, [*first, *last] inclusive (a last past the end is cut to it);
 * -1 when the one range asked for is unsatisfiable (416); 0 when the whole is to be sent:
 * no header, a unit other than bytes, a malformed value, or several ranges (RFC 9110 lets a
 * server ignore Range). Outputs are written only when it returns 1. */
int util_range_parse(const char *h, uint64_t size, uint64_t *first, uint64_t *last);

/* Copies the n bytes at in into out (cap >= 4 bytes) as UTF-8 text: each ill-formed
 * sequence (its longest valid start, or a lone byte) and each NUL becomes U+FFFD, and the
 * copy ends at a character boundary, with its NUL inside cap; a character cut by the end
 * of in is left out. Returns the length written. */
size_t util_utf8_clean(const char *in, size_t n, char *out, size_t cap);

/* Unix time in seconds and in milliseconds (wall clock). */
int64_t util_now(void);
int64_t util_now_ms(void);
/* Monotonic clock in microseconds, for durations. */
int64_t util_mono_us(void);
/* RFC 3339 UTC ("2026-01-20T10:30:00Z") of unix seconds into out (32 bytes). */
void util_rfc3339(int64_t t, char out[32]);
/* Parses RFC 3339 ("...Z" or "+hh:mm") or plain unix seconds; 0 on success. */
int util_parse_time(const char *s, int64_t *out);

/* Parses a duration ("250ms", "5s", "2m", "1h", "30d", bare number = seconds) into
 * milliseconds; 0 on success, -1 on syntax error or overflow. */
int util_parse_duration_ms(const char *s, int64_t *out);

/* Parses a Retry-After header value (RFC 9110 10.2.3), v of n bytes as received (not
 * NUL-terminated; surrounding spaces, tabs and CR LF ignored): delay-seconds (digits only)
 * or an HTTP-date, relative to now (unix seconds). Writes the wait in seconds, clamped to
 * [0, cap_s], and returns 0; returns -1 and leaves *out alone for anything else. */
int util_parse_retry_after(const char *v, size_t n, int64_t now, int cap_s, int *out);

/* 1 if s is a valid identifier with the given prefix (charset [0-9A-Za-z_], length cap). */
int util_id_valid(const char *s, const char *prefix);

/* Writes s to f as roff text for a man page: backslashes escaped, a leading '.' or '\''
 * neutralised, newlines as spaces; with dashes, every '-' as "\-" (options, commands). */
void util_roff_text(FILE *f, const char *s, int dashes);

#endif
