/* test_log.c: log.h: the JSON form of a log line (log_render_json) from the text form the
 * call sites format, including hostile values (quotes, newlines, \x escapes, '=' inside a
 * value, non-ASCII and bytes that are not UTF-8), truncation, and log_write end to end in
 * both formats. Every rendered line is parsed back with jansson, which also checks UTF-8.
 * Single-threaded; log_write's test points stderr at a temporary file and back. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define TIME       "2026-12-01T00:00:00.123Z"

/* Renders text, checks the frame (one line, ends in "}\n", the length returned) and returns
 * the parsed object (free with json_decref). */
static json_t *render(const char *text, size_t cap)
{
	char *out = malloc(cap);
	json_error_t jerr;
	assert_non_null(out);
	size_t n = log_render_json(out, cap, TIME, LOG_WARN, "http", text);
	assert_int_equal(n, strlen(out));
	if (n < 3 || out[n - 1] != '\n' || out[n - 2] != '}' || memchr(out, '\n', n - 1))
		fail_msg("not one line ending in }: [%s] (from [%s])", out, text);
	json_t *o = json_loadb(out, n, JSON_ALLOW_NUL, &jerr);
	if (!o || !json_is_object(o))
		fail_msg("not a JSON object: %s: [%s] (from [%s])", jerr.text, out, text);
	free(out);
	return o;
}

static const char *field(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return v && json_is_string(v) ? json_string_value(v) : NULL;
}

struct kv {
	const char *k, *v;
};

struct render_case {
	const char *name, *text, *msg;
	struct kv fields[4];
};

static void test_fields_and_message(void **state)
{
	static const struct render_case cases[] = {
	    {"plain",
	     "rid=abc status=200 request done",
	     "request done",
	     {{"rid", "abc"}, {"status", "200"}}},
	    {"quoted with spaces",
	     "path=/x err=\"No such file or directory\" cannot open",
	     "cannot open",
	     {{"path", "/x"}, {"err", "No such file or directory"}}},
	    {"escapes decoded",
	     "path=/nope\\x0a\\\"evil status=404",
	     "",
	     {{"path", "/nope\n\"evil"}, {"status", "404"}}},
	    {"space and backslash escapes",
	     "mhd=\"a\\x20b\\\\c\" done",
	     "done",
	     {{"mhd", "a b\\c"}}},
	    {"equals inside a value",
	     "path=/a=b?c=d x=1 the end",
	     "the end",
	     {{"path", "/a=b?c=d"}, {"x", "1"}}},
	    {"non-ASCII escaped", "name=caf\\xc3\\xa9 ok", "ok", {{"name", "caf\xc3\xa9"}}},
	    {"not UTF-8 stays as text",
	     "name=\\xff\\xfe\\xc3 ok",
	     "ok",
	     {{"name", "\\xff\\xfe\\xc3"}}},
	    {"raw bytes in the message",
	     "a=1 bad \xff byte \xc3\xa9 \t tab\x01",
	     "bad \\xff byte \xc3\xa9 \t tab\x01",
	     {{"a", "1"}}},
	    {"no message",
	     "method=GET path=/x aborted=1",
	     "",
	     {{"method", "GET"}, {"path", "/x"}, {"aborted", "1"}}},
	    {"empty value", "k= v=2 m", "m", {{"k", ""}, {"v", "2"}}},
	    {"reserved names kept apart",
	     "msg=hi level=x time=t module=m done",
	     "done",
	     {{"msg_", "hi"}, {"level_", "x"}, {"time_", "t"}, {"module_", "m"}}},
	    {"unterminated quote is message",
	     "a=1 err=\"open rest",
	     "err=\"open rest",
	     {{"a", "1"}}},
	    {"quote inside a quoted value",
	     "mhd=\"say \\\"hi\\\"\" done",
	     "done",
	     {{"mhd", "say \"hi\""}}},
	    {"raw quote in quoted value",
	     "err=\"near \"x\": syntax\" failed",
	     "err=\"near \"x\": syntax\" failed",
	     {{NULL, NULL}}},
	    {"message first", "the held=3 leases", "the held=3 leases", {{NULL, NULL}}},
	    {"key with digits and NUL escape", "a1=x\\x00y", "", {{"a1", "x\\u0000y"}}},
	    {"backslash not an escape", "p=C:\\temp\\x4 z", "z", {{"p", "C:\\temp\\x4"}}},
	    {"empty", "", "", {{NULL, NULL}}},
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct render_case *c = &cases[i];
		json_t *o = render(c->text, 4096);
		const char *msg = field(o, "msg");
		if (!msg || strcmp(msg, c->msg) != 0)
			fail_msg("%s: msg [%s], want [%s]", c->name, msg ? msg : "(none)", c->msg);
		if (strcmp(field(o, "time"), TIME) || strcmp(field(o, "level"), "warn") ||
		    strcmp(field(o, "module"), "http"))
			fail_msg("%s: time, level or module wrong", c->name);
		size_t want = 4;
		for (size_t k = 0; k < N_ELEMS(c->fields) && c->fields[k].k; k++) {
			want++;
			json_t *v = json_object_get(o, c->fields[k].k);
			const char *exp = c->fields[k].v;
			char nulbuf[16];
			size_t explen = strlen(exp);
			if (strstr(exp, "\\u0000")) { /* the NUL case: compare with a real NUL */
				snprintf(nulbuf, sizeof nulbuf, "x%cy", 0);
				exp = nulbuf;
				explen = 3;
			}
			if (!v || !json_is_string(v) || json_string_length(v) != explen ||
			    memcmp(json_string_value(v), exp, explen) != 0)
				fail_msg("%s: %s = [%s], want [%s]", c->name, c->fields[k].k,
				         v ? json_string_value(v) : "(none)", c->fields[k].v);
		}
		if (json_object_size(o) != want)
			fail_msg("%s: %zu members, want %zu", c->name, json_object_size(o), want);
		json_decref(o);
	}
}

/* log_escape's output of every byte value comes back as the original value. */
static void test_escape_round_trip(void **state)
{
	char raw[300], esc[2048], text[2100];
	size_t n = 0;
	(void)state;
	for (int c = 1; c < 256; c++)
		if (c < 0x80) /* ASCII: a valid UTF-8 string the decoder must give back as is */
			raw[n++] = (char)c;
	memcpy(raw + n, "\xe2\x82\xac=\xf0\x9f\x92\xa9", 8); /* euro, '=', a 4-byte char */
	n += 8;
	raw[n] = '\0';
	log_escape(raw, esc, sizeof esc);
	snprintf(text, sizeof text, "v=%s tail", esc);
	json_t *o = render(text, 8192);
	json_t *v = json_object_get(o, "v");
	assert_non_null(v);
	assert_int_equal(json_string_length(v), n);
	assert_memory_equal(json_string_value(v), raw, n);
	assert_string_equal(field(o, "msg"), "tail");
	json_decref(o);
}

/* A line larger than the buffer still closes as valid JSON, cut with "...", for every cap. */
static void test_truncation(void **state)
{
	char text[1500];
	size_t o = 0;
	(void)state;
	for (int i = 0; i < 40; i++)
		o += (size_t)snprintf(text + o, sizeof text - o, "k%d=\\x22\\xc3\\xa9\\x0a ", i);
	snprintf(text + o, sizeof text - o, "the message \"with\" quotes \xc3\xa9\xc3\xa9");
	for (size_t cap = 64; cap < 1200; cap += 7) {
		json_t *j = render(text, cap);
		assert_non_null(field(j, "time"));
		json_decref(j);
	}
	json_t *j = render(text, 4096);
	assert_int_equal(json_object_size(j), 44);
	json_decref(j);
}

/* Random bytes, with many escapes and quotes among them, always give one valid object. */
static void test_random_text(void **state)
{
	static const char alphabet[] = "ab=\" \\x0fFe9\xc3\xa9\xff\x01\n\t";
	char text[600];
	uint32_t seed = 12345;
	(void)state;
	for (int round = 0; round < 3000; round++) {
		size_t len = (size_t)(round % 500);
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			uint32_t r = seed >> 16;
			text[i] = r % 3 ? alphabet[r % (sizeof alphabet - 1)] : (char)(r & 0xff);
			if (text[i] == '\0')
				text[i] = 'z';
		}
		text[len] = '\0';
		json_decref(render(text, round % 2 ? 8192 : 64 + (size_t)round % 300));
	}
}

/* log_write: JSON mode writes one parseable object a line; text mode is unchanged. */
static void test_write_formats(void **state)
{
	char path[] = "/tmp/labhook-log-XXXXXX", buf[4096];
	int fd = mkstemp(path), saved = dup(2);
	(void)state;
	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	assert_int_equal(dup2(fd, 2), 2);
	log_output = LOG_FORMAT_JSON;
	LOG(LOG_INFO, "main", "listen=%s:%d version=%s ready", "127.0.0.1", 8080, "0.1.0");
	LOG(LOG_DEBUG, "main", "below the threshold");
	log_output = LOG_FORMAT_TEXT;
	LOG(LOG_ERROR, "store", "op=%s err=\"%s\" failed", "x", "disk full");
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	assert_non_null(nl);
	json_error_t jerr;
	json_t *o = json_loadb(buf, (size_t)(nl - buf), 0, &jerr);
	if (!o)
		fail_msg("not JSON: %s: %s", jerr.text, buf);
	assert_string_equal(field(o, "level"), "info");
	assert_string_equal(field(o, "module"), "main");
	assert_string_equal(field(o, "listen"), "127.0.0.1:8080");
	assert_string_equal(field(o, "msg"), "ready");
	const char *t = field(o, "time"); /* 2026-12-01T00:00:00.123Z */
	assert_true(t && strlen(t) == 24 && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
	json_decref(o);
	if (!strstr(nl + 1, " error store op=x err=\"disk full\" failed\n") ||
	    strchr(nl + 1, '\n') != buf + n - 1)
		fail_msg("text line wrong: [%s]", nl + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields_and_message), cmocka_unit_test(test_escape_round_trip),
	    cmocka_unit_test(test_truncation),         cmocka_unit_test(test_random_text),
	    cmocka_unit_test(test_write_formats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
