/* jtext.c: see jtext.h. */
#include "jtext.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jtext_init(struct jtext *t, size_t max)
{
	*t = (struct jtext){.max = max};
}

/* Room for n more bytes and a NUL; 0 once the text failed. */
static int room(struct jtext *t, size_t n)
{
	if (t->failed)
		return 0;
	if (n > t->max - t->n) { /* t->n <= t->max always */
		t->failed = 1;
		return 0;
	}
	if (t->n + n + 1 <= t->cap)
		return 1;
	size_t cap = t->cap ? t->cap : 512;
	while (cap < t->n + n + 1)
		cap *= 2;
	char *p = realloc(t->p, cap);
	if (!p) {
		t->failed = 1;
		return 0;
	}
	t->p = p;
	t->cap = cap;
	return 1;
}

void jtext_raw(struct jtext *t, const char *s, size_t n)
{
	if (!room(t, n))
		return;
	memcpy(t->p + t->n, s, n);
	t->n += n;
	t->p[t->n] = '\0';
}

/* A comma, when a value was written last. */
static void sep(struct jtext *t)
{
	if (t->n > 0 && !strchr("{[:", t->p[t->n - 1]))
		jtext_raw(t, ",", 1);
}

void jtext_open(struct jtext *t, char c)
{
	sep(t);
	jtext_raw(t, &c, 1);
}

void jtext_close(struct jtext *t, char c)
{
	jtext_raw(t, &c, 1);
}

/* n bytes of a string, quoted and escaped. */
static void strn(struct jtext *t, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *end = s + n;
	sep(t);
	jtext_raw(t, "\"", 1);
	while (s < end) {
		const char *run = s;
		while (s < end && (unsigned char)*s >= 0x20 && *s != '"' && *s != '\\')
			s++;
		jtext_raw(t, run, (size_t)(s - run));
		if (s == end)
			break;
		unsigned char c = (unsigned char)*s++;
		char esc[6] = {'\\', 0};
		size_t len = 2;
		switch (c) {
		case '"':
			esc[1] = '"';
			break;
		case '\\':
			esc[1] = '\\';
			break;
		case '\b':
			esc[1] = 'b';
			break;
		case '\f':
			esc[1] = 'f';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			len = 6;
		}
		jtext_raw(t, esc, len);
	}
	jtext_raw(t, "\"", 1);
}

void jtext_str(struct jtext *t, const char *s)
{
	strn(t, s, strlen(s));
}

void jtext_key(struct jtext *t, const char *k)
{
	jtext_str(t, k);
	jtext_raw(t, ":", 1);
}

void jtext_kv(struct jtext *t, const char *k, const char *v)
{
	jtext_key(t, k);
	jtext_str(t, v);
}

void jtext_int(struct jtext *t, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%" PRId64, v);
	sep(t);
	jtext_raw(t, buf, (size_t)n);
}

char *jtext_take(struct jtext *t)
{
	if (!t->failed && !t->p)
		jtext_raw(t, "", 0); /* nothing written: an empty string */
	char *p = t->failed ? NULL : t->p;
	if (t->failed)
		free(t->p);
	*t = (struct jtext){.max = t->max};
	return p;
}

/* A real as jansson prints it: %.*g, with ".0" when that reads as an integer, and the
 * exponent without its '+' and leading zeros. */
static void real(struct jtext *t, double v, int precision)
{
	char buf[64];
	int n = snprintf(buf, sizeof buf - 2, "%.*g", precision ? precision : 17, v);
	if (n < 0 || (size_t)n >= sizeof buf - 2) {
		t->failed = 1;
		return;
	}
	size_t len = (size_t)n;
	if (!strchr(buf, '.') && !strchr(buf, 'e')) {
		memcpy(buf + len, ".0", 3);
		len += 2;
	}
	char *e = strchr(buf, 'e');
	if (e) {
		char *start = e + 1, *end = e + 2;
		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, len - (size_t)(end - buf) + 1);
			len -= (size_t)(end - start);
		}
	}
	sep(t);
	jtext_raw(t, buf, len);
}

void jtext_json(struct jtext *t, const json_t *v, int precision)
{
	const char *key;
	json_t *item;
	size_t i;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		jtext_open(t, '{');
		json_object_foreach((json_t *)v, key, item)
		{
			jtext_key(t, key);
			jtext_json(t, item, precision);
		}
		jtext_close(t, '}');
		break;
	case JSON_ARRAY:
		jtext_open(t, '[');
		json_array_foreach(v, i, item) jtext_json(t, item, precision);
		jtext_close(t, ']');
		break;
	case JSON_STRING:
		strn(t, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		jtext_int(t, json_integer_value(v));
		break;
	case JSON_REAL:
		real(t, json_real_value(v), precision);
		break;
	case JSON_TRUE:
	case JSON_FALSE:
	case JSON_NULL:
		sep(t);
		jtext_raw(t,
		          json_is_true(v)    ? "true"
		          : json_is_false(v) ? "false"
		                             : "null",
		          json_is_true(v)    ? 4
		          : json_is_false(v) ? 5
		                             : 4);
		break;
	}
}

char *jtext_dump(const json_t *v, int precision, size_t max)
{
	struct jtext t;
	if (!v)
		return NULL;
	jtext_init(&t, max);
	jtext_json(&t, v, precision);
	return jtext_take(&t);
}
