/* jtext.h: JSON text written straight into a growing buffer, for what is built on every
 * request: an event's envelope and a bill's data (building a jansson tree and dumping it
 * was a third of an API thread's time per bill). Strings must be valid UTF-8 (everything
 * parsed from a request is); they are escaped as json_dumps escapes them (quote,
 * backslash, control characters), and the text is compact, as JSON_COMPACT prints it.
 * Commas come by themselves: a key, a value or an opening bracket written after a value
 * is preceded by one. The buffer grows up to the cap given to jtext_init; past it, or when
 * an allocation fails, the text is failed and jtext_take returns NULL. One per caller.
 */
#ifndef LH_JTEXT_H
#define LH_JTEXT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct jtext {
	char *p;
	size_t n, cap, max;
	int failed;
};

/* An empty text of at most max bytes. */
void jtext_init(struct jtext *t, size_t max);
/* n bytes as they are (JSON text the caller vouches for), with no comma before them. */
void jtext_raw(struct jtext *t, const char *s, size_t n);
/* An opening bracket ('{' or '['), or a closing one. */
void jtext_open(struct jtext *t, char c);
void jtext_close(struct jtext *t, char c);
/* An object's key; its value follows. */
void jtext_key(struct jtext *t, const char *k);
/* Values: a string (quoted and escaped) or an integer. */
void jtext_str(struct jtext *t, const char *s);
void jtext_int(struct jtext *t, int64_t v);
/* A key with its string value. */
void jtext_kv(struct jtext *t, const char *k, const char *v);
/* A jansson value, whole, as json_dumps prints it with JSON_COMPACT and
 * JSON_REAL_PRECISION(precision) (0: 17 digits), keys in their order: a fraction of
 * jansson's cost (its dump was a tenth of an API thread's time per request). */
void jtext_json(struct jtext *t, const json_t *v, int precision);
/* v as JSON text (see jtext_json), owned (free()); NULL when v is NULL, the text would
 * pass max bytes, or out of memory. */
char *jtext_dump(const json_t *v, int precision, size_t max);
/* Returns the text, owned (free with free()), NUL-terminated, and leaves t empty; NULL if
 * it failed (t is freed then). */
char *jtext_take(struct jtext *t);

#endif
