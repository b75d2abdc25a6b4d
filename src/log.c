/* log.c: see log.h. The JSON form is written by a small writer of its own rather than
 * jansson: it must bound the line, turn bytes that are not UTF-8 into text instead of
 * failing, and never allocate (a log line may report an allocation that failed). */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOG_LINE_CAP   2048 /* the text form of a line, newline included */
#define LOG_JSON_CAP   8192 /* its JSON form: escapes may grow it */
#define LOG_MAX_FIELDS 64

enum log_level log_threshold = LOG_INFO;
enum log_format log_output = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"text", "json"};

int log_parse_level(const char *s, enum log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

int log_parse_format(const char *s, enum log_format *out)
{
	for (int i = 0; i < 2; i++) {
		if (strcmp(s, format_names[i]) == 0) {
			*out = (enum log_format)i;
			return 0;
		}
	}
	return -1;
}

const char *log_format_name(enum log_format f)
{
	return format_names[f == LOG_FORMAT_JSON];
}

/* ---- the JSON writer: every append checks the room left, keeping JW_RESERVE bytes for
 * "..." and the closing '"', '}', newline and NUL, so a full buffer still closes. ---- */

#define JW_RESERVE 8

struct jw {
	char *p;
	size_t cap, n;
	int full;
};

static int jw_fits(struct jw *w, size_t len)
{
	if (!w->full && w->n + len + JW_RESERVE <= w->cap)
		return 1;
	w->full = 1;
	return 0;
}

static void jw_put(struct jw *w, const char *s, size_t len)
{
	memcpy(w->p + w->n, s, len);
	w->n += len;
}

/* The length of the valid UTF-8 sequence at s (n bytes left), 0 if there is none: no
 * overlong forms, surrogates or code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1fu;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0fu;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07u;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* s as a JSON string, quotes included; cut with "..." when the buffer is full. */
static void jw_string(struct jw *w, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	jw_put(w, "\"", 1); /* the caller made room for it */
	for (size_t i = 0; i < len;) {
		char enc[8];
		size_t el, used = 1;
		unsigned char c = s[i];
		if (c == '"' || c == '\\') {
			enc[0] = '\\';
			enc[1] = (char)c;
			el = 2;
		} else if (c < 0x20 || c == 0x7f) {
			el = (size_t)snprintf(enc, sizeof enc, "\\u%04x", c);
		} else if (c < 0x80) {
			enc[0] = (char)c;
			el = 1;
		} else if ((used = utf8_len(s + i, len - i)) > 0) {
			memcpy(enc, s + i, used);
			el = used;
		} else { /* not UTF-8: the byte as the text \xNN, as in the text format */
			used = 1;
			el = (size_t)snprintf(enc, sizeof enc, "\\\\x%02x", c);
		}
		if (!jw_fits(w, el)) {
			jw_put(w, "...", 3);
			break;
		}
		jw_put(w, enc, el);
		i += used;
	}
	jw_put(w, "\"", 1);
}

/* ,"key":"value" (no comma for the first); skipped whole when the buffer is full. */
static void jw_field(struct jw *w, const char *key, size_t klen, int clash, const char *v,
                     size_t vlen)
{
	int first = w->n == 1;
	if (!jw_fits(w, klen + 7)) /* ,"key_":" */
		return;
	if (!first)
		jw_put(w, ",", 1);
	jw_put(w, "\"", 1);
	jw_put(w, key, klen); /* [A-Za-z0-9_]: nothing to escape */
	if (clash)
		jw_put(w, "_", 1);
	jw_put(w, "\":", 2);
	jw_string(w, v, vlen);
}

/* ---- the text form's fields ---- */

struct field {
	const char *k, *v;
	size_t klen, vlen;
};

static int is_key_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       (!first && c >= '0' && c <= '9');
}

/* The leading key=value tokens of text (a value quoted "..." may hold spaces and \"), at
 * most cap; *msg is what follows them. A token that is not one ends the fields. */
static size_t split_fields(const char *text, struct field *f, size_t cap, const char **msg)
{
	const char *p = text;
	size_t n = 0;
	while (n < cap && is_key_char(*p, 1)) {
		const char *k = p, *v, *e;
		while (is_key_char(*p, 0))
			p++;
		if (*p != '=') {
			p = k;
			break;
		}
		v = p + 1;
		if (*v == '"') {
			for (e = v + 1; *e && *e != '"'; e++)
				if (*e == '\\' && e[1])
					e++;
			if (*e != '"' || (e[1] != ' ' && e[1] != '\0')) {
				p = k; /* not a quoted value after all: the rest is the message */
				break;
			}
			f[n].v = v + 1;
			f[n].vlen = (size_t)(e - v - 1);
			e++;
		} else {
			for (e = v; *e && *e != ' '; e++)
				;
			f[n].v = v;
			f[n].vlen = (size_t)(e - v);
		}
		f[n].k = k;
		f[n].klen = (size_t)(v - 1 - k);
		n++;
		p = *e == ' ' ? e + 1 : e;
	}
	*msg = p;
	return n;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undoes log_escape (\xNN, \", \\) into out, which has room for len bytes. */
static size_t unescape(const char *v, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\\' && i + 3 < len && v[i + 1] == 'x' && hexval(v[i + 2]) >= 0 &&
		    hexval(v[i + 3]) >= 0) {
			out[o++] = (char)(hexval(v[i + 2]) * 16 + hexval(v[i + 3]));
			i += 3;
		} else if (v[i] == '\\' && i + 1 < len && (v[i + 1] == '"' || v[i + 1] == '\\')) {
			out[o++] = v[++i];
		} else {
			out[o++] = v[i];
		}
	}
	return o;
}

static int reserved_key(const char *k, size_t len)
{
	static const char *const names[] = {"time", "level", "module", "msg"};
	for (size_t i = 0; i < 4; i++)
		if (strlen(names[i]) == len && memcmp(names[i], k, len) == 0)
			return 1;
	return 0;
}

size_t log_render_json(char *out, size_t cap, const char *time, enum log_level lvl,
                       const char *subsys, const char *text)
{
	struct jw w = {.p = out, .cap = cap};
	struct field f[LOG_MAX_FIELDS];
	char value[LOG_LINE_CAP];
	const char *msg;
	size_t n = split_fields(text, f, LOG_MAX_FIELDS, &msg);

	assert(cap >= 64);
	jw_put(&w, "{", 1);
	jw_field(&w, "time", 4, 0, time, strlen(time));
	jw_field(&w, "level", 5, 0, level_names[lvl], strlen(level_names[lvl]));
	jw_field(&w, "module", 6, 0, subsys, strlen(subsys));
	jw_field(&w, "msg", 3, 0, msg, strlen(msg));
	for (size_t i = 0; i < n && !w.full; i++) {
		size_t vlen = f[i].vlen < sizeof value ? f[i].vlen : sizeof value;
		vlen = unescape(f[i].v, vlen, value);
		jw_field(&w, f[i].k, f[i].klen, reserved_key(f[i].k, f[i].klen), value, vlen);
	}
	jw_put(&w, "}\n", 2);
	out[w.n] = '\0';
	return w.n;
}

/* ---- writing ---- */

static void timestamp(char out[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void log_write(enum log_level lvl, const char *subsys, const char *fmt, ...)
{
	char line[LOG_LINE_CAP], ts[32];
	size_t n;
	va_list ap;

	timestamp(ts);
	if (log_output == LOG_FORMAT_JSON) {
		char json[LOG_JSON_CAP];
		va_start(ap, fmt);
		vsnprintf(line, sizeof line - 1, fmt, ap); /* cut like the text form */
		va_end(ap);
		log_render_json(json, sizeof json, ts, lvl, subsys, line);
		fputs(json, stderr);
		return;
	}
	n = (size_t)snprintf(line, sizeof line, "%s %s %s ", ts, level_names[lvl], subsys);
	va_start(ap, fmt);
	int w = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (w < 0)
		w = 0;
	n += (size_t)w;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* the line cap: longer lines are cut, never split */
	line[n++] = '\n';
	line[n] = '\0';
	fputs(line, stderr);
}

char *log_escape(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	if (cap < 8) {
		if (cap)
			out[0] = '\0';
		return out;
	}
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (o + 8 >= cap) {
			memcpy(out + o, "...", 4);
			return out;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f || c == ' ') {
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}
