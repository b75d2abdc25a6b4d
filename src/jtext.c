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

void jtext_str(struct jtext *t, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	sep(t);
	jtext_raw(t, "\"", 1);
	for (;;) {
		size_t run = strcspn(s, "\"\\\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d"
		                        "\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b"
		                        "\x1c\x1d\x1e\x1f");
		jtext_raw(t, s, run);
		s += run;
		if (!*s)
			break;
		unsigned char c = (unsigned char)*s++;
		char esc[6] = {'\\', 0};
		size_t n = 2;
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		}
		jtext_raw(t, esc, n);
	}
	jtext_raw(t, "\"", 1);
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
