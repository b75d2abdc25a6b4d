/* test_validate.c: validate.h: body parsing, generic field specs, the rules of
 * POST /client/events/subscribe (API.md 4.1) with the address policy of 7.5, and the bill,
 * lead and booking bodies (API.md 5). Each table row
 * is a JSON body and the error code and field it must produce. Single-threaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "events.h"
#include "store.h"
#include "validate.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define BIT(e) (1u << (e))

/* The allow-lists a row can ask for. */
enum allow_set { A_NONE, A_V4_LOOPBACK, A_LOOPBACK };

static size_t allow_list(enum allow_set set, struct cidr out[2])
{
	switch (set) {
	case A_NONE:
		return 0;
	case A_V4_LOOPBACK:
		assert_int_equal(addr_parse_cidr("127.0.0.0/8", &out[0]), 0);
		return 1;
	case A_LOOPBACK:
		assert_int_equal(addr_parse_cidr("127.0.0.0/8", &out[0]), 0);
		assert_int_equal(addr_parse_cidr("::1/128", &out[1]), 0);
		return 2;
	}
	return 0;
}

/* Parses body and runs validate_subscribe; returns its result. On failure err is filled. */
static int subscribe(const char *body, size_t len, enum allow_set set, struct sub_request *r,
                     struct verr *err, json_t **keep)
{
	struct cidr allow[2];
	size_t n = allow_list(set, allow);
	json_t *obj = NULL;

	memset(err, 0, sizeof *err);
	if (validate_parse_object(body, len, &obj, err) != 0)
		fail_msg("body did not parse (%s: %s): %.200s", err->code, err->message, body);
	int rc = validate_subscribe(obj, allow, n, r, err);
	*keep = obj; /* the results borrow from it */
	return rc;
}

static void expect_error(const char *name, const struct verr *err, const char *code,
                         const char *field)
{
	if (strcmp(err->code, code) != 0 || strcmp(err->field, field) != 0)
		fail_msg("%s: got %s field '%s' (%s), want %s field '%s'", name, err->code,
		         err->field, err->message, code, field);
	if (err->err == LH_OK || err->message[0] == '\0')
		fail_msg("%s: error %d with message '%s'", name, err->err, err->message);
}

/* ---- validate_parse_object ---- */

struct parse_case {
	const char *name;
	const char *body;
	size_t len; /* 0 = strlen(body) */
	int ok;
};

static void test_parse_object(void **state)
{
	static const struct parse_case cases[] = {
	    {"empty body", "", 0, 0},
	    {"whitespace only", "   \n", 0, 0},
	    {"not json", "labID=lab_1&protocol=https", 0, 0},
	    {"truncated", "{\"labID\": \"lab_1\"", 0, 0},
	    {"array", "[{\"labID\": \"lab_1\"}]", 0, 0},
	    {"string", "\"labID\"", 0, 0},
	    {"number", "42", 0, 0},
	    {"null", "null", 0, 0},
	    {"duplicate keys", "{\"labID\": \"a\", \"labID\": \"b\"}", 0, 0},
	    {"nested duplicate keys", "{\"x\": {\"k\": 1, \"k\": 2}}", 0, 0},
	    {"trailing garbage", "{} x", 0, 0},
	    {"two objects", "{}{}", 0, 0},
	    {"single quotes", "{'labID': 'x'}", 0, 0},
	    {"trailing comma", "{\"a\": 1,}", 0, 0},
	    {"NUL escape in a key", "{\"la\\u0000bID\": \"a\"}", 0, 0},
	    {"bad utf-8", "{\"labID\": \"\xff\xfe\"}", 0, 0},
	    {"lone surrogate", "{\"labID\": \"\\ud800\"}", 0, 0},
	    {"empty object", "{}", 0, 1},
	    {"padded object", "  {\"a\": 1}\n ", 0, 1},
	    {"unicode escape", "{\"labID\": \"\\u00e9\\ud83d\\ude00\"}", 0, 1},
	    /* the length bounds the input: what follows is not read */
	    {"length-bounded", "{\"a\":1}garbage", 7, 1},
	    {"length cuts object", "{\"a\":1}", 6, 0},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct parse_case *c = &cases[i];
		struct verr err;
		json_t *obj = (json_t *)&err; /* sentinel: must stay on failure */
		size_t len = c->len ? c->len : strlen(c->body);

		memset(&err, 0, sizeof err);
		int rc = validate_parse_object(c->body, len, &obj, &err);
		if (c->ok) {
			if (rc != 0)
				fail_msg("%s: refused (%s)", c->name, err.message);
			assert_true(json_is_object(obj));
			json_decref(obj);
			continue;
		}
		if (rc != -1)
			fail_msg("%s: accepted, want invalid_json", c->name);
		assert_ptr_equal(obj, (json_t *)&err);
		assert_int_equal(err.err, LH_EJSON);
		assert_string_equal(err.code, "invalid_json");
		assert_string_equal(err.field, "");
		assert_true(err.message[0] != '\0');
	}
}

/* "\u0000" is valid JSON, so a NUL in a string is invalid_value naming where it is. */
static void test_parse_nul_in_string(void **state)
{
	static const struct {
		const char *body, *field;
	} cases[] = {
	    {"{\"labID\": \"a\\u0000b\"}", "labID"},
	    {"{\"a\": 1, \"events\": [\"x\", \"\\u0000\"]}", "events[1]"},
	    {"{\"p\": {\"q\": [{\"r\": \"\\u0000\"}]}}", "p.q[0].r"},
	    {"{\"k\\u00e9\\n\": \"\\u0000\"}", "k???"}, /* the path is printable ASCII */
	    {"{\"\": \"\\u0000ID\"}", "\"\""}, /* an empty key is named "" (fuzz_subscribe) */
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		struct verr err;
		json_t *obj = NULL;
		memset(&err, 0, sizeof err);
		assert_int_equal(
		    validate_parse_object(cases[i].body, strlen(cases[i].body), &obj, &err), -1);
		assert_null(obj);
		assert_int_equal(err.err, LH_EINVAL);
		assert_string_equal(err.code, "invalid_value");
		assert_string_equal(err.field, cases[i].field);
	}
}

static void test_parse_deep_nesting(void **state)
{
	enum { DEPTH = 100000 };
	char *body = malloc(2 * DEPTH + 16);
	struct verr err;
	json_t *obj = NULL;
	size_t o = 0;
	(void)state;

	assert_non_null(body);
	o += (size_t)sprintf(body, "{\"a\":");
	for (int i = 0; i < DEPTH; i++)
		body[o++] = '[';
	for (int i = 0; i < DEPTH; i++)
		body[o++] = ']';
	body[o++] = '}';
	memset(&err, 0, sizeof err);
	/* Refused cleanly (a depth limit), not a stack overflow. */
	assert_int_equal(validate_parse_object(body, o, &obj, &err), -1);
	assert_string_equal(err.code, "invalid_json");
	assert_null(obj);
	free(body);
}

/* ---- validate_subscribe ---- */

#define VALID_TAIL "\"endpoint\": \"https://hooks.example.com/labhook\", \"protocol\": \"https\""
#define VALID_BODY "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], " VALID_TAIL

struct sub_case {
	const char *name;
	const char *body;
	enum allow_set allow;
	const char *code; /* NULL = accepted */
	const char *field;
};

static const struct sub_case sub_cases[] = {
    /* required fields */
    {"missing labID", "{\"events\": [\"bill.created\"], " VALID_TAIL "}", A_NONE, "missing_field",
     "labID"},
    {"missing events", "{\"labID\": \"lab_1\", " VALID_TAIL "}", A_NONE, "missing_field", "events"},
    {"missing endpoint",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], \"protocol\": \"https\"}", A_NONE,
     "missing_field", "endpoint"},
    {"missing protocol",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/\"}",
     A_NONE, "missing_field", "protocol"},
    {"labID null", "{\"labID\": null, \"events\": [\"bill.created\"], " VALID_TAIL "}", A_NONE,
     "missing_field", "labID"},
    {"empty object", "{}", A_NONE, "missing_field", "labID"},
    /* types */
    {"labID number", "{\"labID\": 5, \"events\": [\"bill.created\"], " VALID_TAIL "}", A_NONE,
     "invalid_type", "labID"},
    {"events string", "{\"labID\": \"lab_1\", \"events\": \"bill.created\", " VALID_TAIL "}",
     A_NONE, "invalid_type", "events"},
    {"events object", "{\"labID\": \"lab_1\", \"events\": {}, " VALID_TAIL "}", A_NONE,
     "invalid_type", "events"},
    {"endpoint array",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], \"endpoint\": [], "
     "\"protocol\": \"https\"}",
     A_NONE, "invalid_type", "endpoint"},
    {"protocol bool",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/\", \"protocol\": true}",
     A_NONE, "invalid_type", "protocol"},
    {"corporateUser number", VALID_BODY ", \"corporateUser\": 7}", A_NONE, "invalid_type",
     "corporateUser"},
    {"corporateUser null", VALID_BODY ", \"corporateUser\": null}", A_NONE, "invalid_type",
     "corporateUser"},
    {"authToken object", VALID_BODY ", \"authToken\": {}}", A_NONE, "invalid_type", "authToken"},
    /* values */
    {"labID empty", "{\"labID\": \"\", \"events\": [\"bill.created\"], " VALID_TAIL "}", A_NONE,
     "invalid_value", "labID"},
    {"events empty", "{\"labID\": \"lab_1\", \"events\": [], " VALID_TAIL "}", A_NONE,
     "invalid_value", "events"},
    {"events unknown", "{\"labID\": \"lab_1\", \"events\": [\"nope\"], " VALID_TAIL "}", A_NONE,
     "unknown_event", "events[0]"},
    {"events second unknown",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\", \"bill.paid\"], " VALID_TAIL "}",
     A_NONE, "unknown_event", "events[1]"},
    {"events wrong case", "{\"labID\": \"lab_1\", \"events\": [\"Bill.Created\"], " VALID_TAIL "}",
     A_NONE, "unknown_event", "events[0]"},
    {"events webhook.test",
     "{\"labID\": \"lab_1\", \"events\": [\"webhook.test\"], " VALID_TAIL "}", A_NONE,
     "unknown_event", "events[0]"},
    {"events number", "{\"labID\": \"lab_1\", \"events\": [1], " VALID_TAIL "}", A_NONE,
     "invalid_type", "events[0]"},
    {"events null item",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\", null], " VALID_TAIL "}", A_NONE,
     "invalid_type", "events[1]"},
    {"protocol http",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/\", \"protocol\": \"http\"}",
     A_NONE, "invalid_value", "protocol"},
    {"protocol HTTPS",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/\", \"protocol\": \"HTTPS\"}",
     A_NONE, "invalid_value", "protocol"},
    {"corporateUser empty", VALID_BODY ", \"corporateUser\": \"\"}", A_NONE, "invalid_value",
     "corporateUser"},
    {"organization empty", VALID_BODY ", \"organization\": \"\"}", A_NONE, "invalid_value",
     "organization"},
    {"authToken newline", VALID_BODY ", \"authToken\": \"abc\\ndef\"}", A_NONE, "invalid_value",
     "authToken"},
    {"authToken CRLF injection", VALID_BODY ", \"authToken\": \"x\\r\\nX-Evil: 1\"}", A_NONE,
     "invalid_value", "authToken"},
    {"authToken space", VALID_BODY ", \"authToken\": \"abc def\"}", A_NONE, "invalid_value",
     "authToken"},
    {"authToken tab", VALID_BODY ", \"authToken\": \"abc\\tdef\"}", A_NONE, "invalid_value",
     "authToken"},
    {"authToken DEL", VALID_BODY ", \"authToken\": \"abc\\u007f\"}", A_NONE, "invalid_value",
     "authToken"},
    {"authToken non-ASCII", VALID_BODY ", \"authToken\": \"t\\u00f6ken\"}", A_NONE, "invalid_value",
     "authToken"},
    /* parties */
    {"both parties", VALID_BODY ", \"corporateUser\": \"cu_1\", \"organization\": \"org_1\"}",
     A_NONE, "too_many_parties", "organization"},
    /* unknown fields */
    {"unknown field", VALID_BODY ", \"foo\": 1}", A_NONE, "unknown_field", "foo"},
    {"unknown field alone", "{\"foo\": 1}", A_NONE, "unknown_field", "foo"},
    {"unknown field case", VALID_BODY ", \"labId\": \"lab_1\"}", A_NONE, "unknown_field", "labId"},
    {"unknown field control chars", VALID_BODY ", \"a\\nb\\u00e9\": 1}", A_NONE, "unknown_field",
     "a?b??"},
    /* endpoint syntax */
    {"endpoint http",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"http://x.com\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint ftp",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"ftp://x\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint no host",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint relative",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"/hooks\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint scheme-relative",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"//x.com/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint userinfo",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://user:pw@x.com/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint user only",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://user@x.com/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint userinfo hides loopback",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com@127.0.0.1/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint fragment",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/#frag\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint empty fragment",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/#\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint space",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/a b\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint newline",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com/\\n\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint bad port",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.com:99999/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint empty",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"\", \"protocol\": \"https\"}",
     A_NONE, "invalid_value", "endpoint"},
    /* endpoint address policy (7.5) */
    {"endpoint 127.0.0.1",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://127.0.0.1/h\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint [::1]",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[::1]/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint 10.0.0.5",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://10.0.0.5/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint metadata",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://169.254.169.254/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint mapped",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[::ffff:127.0.0.1]/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint localhost",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://localhost/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint LOCALHOST.",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://LOCALHOST.:8443/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint 127.1",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://127.1/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint decimal",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://2130706433/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint hex",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://0x7f000001/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint zone id",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[fe80::1%25eth0]/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint uppercase scheme",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"HTTPS://127.0.0.1/\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    /* the same with allow-lists */
    {"allowed 127.0.0.1",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://127.0.0.1/h\", \"protocol\": \"https\"}",
     A_V4_LOOPBACK, NULL, NULL},
    {"allowed mapped",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[::ffff:127.0.0.1]/\", \"protocol\": \"https\"}",
     A_V4_LOOPBACK, NULL, NULL},
    {"allowed localhost",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://localhost:8443/h\", \"protocol\": \"https\"}",
     A_V4_LOOPBACK, NULL, NULL},
    {"v4 list keeps [::1] out",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[::1]/\", \"protocol\": \"https\"}",
     A_V4_LOOPBACK, "blocked_address", "endpoint"},
    {"allowed [::1]",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[::1]/\", \"protocol\": \"https\"}",
     A_LOOPBACK, NULL, NULL},
    {"loopback list keeps 10.0.0.5 out",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://10.0.0.5/\", \"protocol\": \"https\"}",
     A_LOOPBACK, "blocked_address", "endpoint"},
    {"loopback list keeps metadata out",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://169.254.169.254/\", \"protocol\": \"https\"}",
     A_LOOPBACK, "blocked_address", "endpoint"},
    /* accepted shapes */
    {"valid catch-all", VALID_BODY "}", A_NONE, NULL, NULL},
    {"valid corporateUser", VALID_BODY ", \"corporateUser\": \"cu_1\"}", A_NONE, NULL, NULL},
    {"valid organization", VALID_BODY ", \"organization\": \"org_1\"}", A_NONE, NULL, NULL},
    {"valid authToken", VALID_BODY ", \"authToken\": \"eyJhbGciOi.J9~x-_+/=\"}", A_NONE, NULL,
     NULL},
    {"valid name host with port and query",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://hooks.example.com:8443/a/b?x=1&y=@z\", \"protocol\": \"https\"}",
     A_NONE, NULL, NULL},
    {"valid public v6",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://[2606:4700::1111]/\", \"protocol\": \"https\"}",
     A_NONE, NULL, NULL},
    {"valid public v4",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://8.8.8.8/\", \"protocol\": \"https\"}",
     A_NONE, NULL, NULL},

    /* an empty authority and literals with trailing dots (found by these tests, fixed) */
    {"endpoint empty authority",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https:///path\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
    {"endpoint 127.0.0.1.",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://127.0.0.1./\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint 0x7f.1.",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://0x7f.1./\", \"protocol\": \"https\"}",
     A_NONE, "blocked_address", "endpoint"},
    {"endpoint port 0",
     "{\"labID\": \"lab_1\", \"events\": [\"bill.created\"], "
     "\"endpoint\": \"https://x.example.com:0/\", \"protocol\": \"https\"}",
     A_NONE, "invalid_endpoint", "endpoint"},
};

static void test_subscribe_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(sub_cases); i++) {
		const struct sub_case *c = &sub_cases[i];
		struct sub_request r, before;
		struct verr err;
		json_t *obj;

		memset(&r, 0x5a, sizeof r);
		memcpy(&before, &r, sizeof r);
		int rc = subscribe(c->body, strlen(c->body), c->allow, &r, &err, &obj);
		if (c->code == NULL) {
			if (rc != 0)
				fail_msg("%s: refused with %s field '%s': %s", c->name, err.code,
				         err.field, err.message);
			assert_non_null(r.lab_id);
			assert_non_null(r.endpoint);
			assert_true(r.events != 0 && (r.events & ~EV_ALL_MASK) == 0);
		} else {
			if (rc != -1)
				fail_msg("%s: accepted, want %s field '%s'", c->name, c->code,
				         c->field);
			expect_error(c->name, &err, c->code, c->field);
			assert_int_equal(err.err, LH_EINVAL);
			/* out-parameters are written only on success */
			assert_memory_equal(&r, &before, sizeof r);
		}
		json_decref(obj);
	}
}

static void test_subscribe_results(void **state)
{
	struct sub_request r;
	struct verr err;
	json_t *obj;
	(void)state;

	/* catch-all: no party, no token */
	static const char catch_all[] = "{\"labID\": \"lab_01\", \"events\": [\"bill.created\", "
	                                "\"report.completed\"], " VALID_TAIL "}";
	assert_int_equal(subscribe(catch_all, strlen(catch_all), A_NONE, &r, &err, &obj), 0);
	assert_string_equal(r.lab_id, "lab_01");
	assert_int_equal(r.events, BIT(EV_BILL_CREATED) | BIT(EV_REPORT_COMPLETED));
	assert_string_equal(r.endpoint, "https://hooks.example.com/labhook");
	assert_null(r.corporate_user);
	assert_null(r.organization);
	assert_null(r.auth_token);
	json_decref(obj);

	/* all six events, every optional field */
	static const char full[] =
	    "{\"labID\": \"lab_02\", \"events\": [\"bill.created\", \"bill.completed\", "
	    "\"bill.deleted\", \"report.completed\", \"lead.created\", \"booking.created\"], "
	    "\"endpoint\": \"https://x.example/h\", \"protocol\": \"https\", "
	    "\"corporateUser\": \"cu_7\", \"authToken\": \"tok-123\"}";
	assert_int_equal(subscribe(full, strlen(full), A_NONE, &r, &err, &obj), 0);
	assert_int_equal(r.events, EV_ALL_MASK);
	assert_string_equal(r.corporate_user, "cu_7");
	assert_null(r.organization);
	assert_string_equal(r.auth_token, "tok-123");
	json_decref(obj);

	static const char org[] = VALID_BODY ", \"organization\": \"org_9\"}";
	assert_int_equal(subscribe(org, strlen(org), A_NONE, &r, &err, &obj), 0);
	assert_null(r.corporate_user);
	assert_string_equal(r.organization, "org_9");
	json_decref(obj);

	/* duplicates collapse to one bit */
	static const char dup[] =
	    "{\"labID\": \"lab_1\", \"events\": [\"lead.created\", \"lead.created\", "
	    "\"lead.created\"], " VALID_TAIL "}";
	assert_int_equal(subscribe(dup, strlen(dup), A_NONE, &r, &err, &obj), 0);
	assert_int_equal(r.events, BIT(EV_LEAD_CREATED));
	json_decref(obj);
}

/* Builds {"labID": <lab>, "events": [...], "endpoint": <ep>, "protocol": "https"<extra>}. */
static char *build_body(const char *lab, const char *ep, const char *extra)
{
	size_t cap = strlen(lab) + strlen(ep) + strlen(extra) + 256;
	char *b = malloc(cap);
	assert_non_null(b);
	snprintf(b, cap,
	         "{\"labID\": \"%s\", \"events\": [\"bill.created\"], \"endpoint\": \"%s\", "
	         "\"protocol\": \"https\"%s}",
	         lab, ep, extra);
	return b;
}

static char *repeat(char ch, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, ch, n);
	s[n] = '\0';
	return s;
}

static void expect_body(const char *name, char *body, const char *code, const char *field)
{
	struct sub_request r;
	struct verr err;
	json_t *obj;
	int rc = subscribe(body, strlen(body), A_NONE, &r, &err, &obj);

	if (code == NULL && rc != 0)
		fail_msg("%s: refused with %s field '%s'", name, err.code, err.field);
	if (code != NULL) {
		if (rc != -1)
			fail_msg("%s: accepted, want %s", name, code);
		expect_error(name, &err, code, field);
	}
	json_decref(obj);
	free(body);
}

static void test_subscribe_caps(void **state)
{
	(void)state;

	/* endpoint: at most 2048 bytes (API.md 4.1) */
	static const char base[] = "https://x.com/";
	char *path = repeat('a', 2048 - (sizeof base - 1));
	char *ep = malloc(2050);
	assert_non_null(ep);
	snprintf(ep, 2050, "%s%s", base, path);
	assert_int_equal(strlen(ep), 2048);
	expect_body("2048-byte endpoint", build_body("lab_1", ep, ""), NULL, NULL);
	snprintf(ep, 2050, "%s%sa", base, path);
	assert_int_equal(strlen(ep), 2049);
	expect_body("2049-byte endpoint", build_body("lab_1", ep, ""), "too_long", "endpoint");
	free(ep);
	free(path);

	/* labID: 64 bytes */
	char *lab = repeat('L', 64);
	expect_body("64-byte labID", build_body(lab, "https://x.com/", ""), NULL, NULL);
	free(lab);
	lab = repeat('L', 65);
	expect_body("65-byte labID", build_body(lab, "https://x.com/", ""), "too_long", "labID");
	free(lab);
	lab = repeat('L', 1024 * 1024);
	expect_body("1 MB labID", build_body(lab, "https://x.com/", ""), "too_long", "labID");
	free(lab);

	/* authToken: AUTHTOKEN_CAP - 1 bytes */
	char *tok = repeat('t', AUTHTOKEN_CAP - 1);
	char *extra = malloc(AUTHTOKEN_CAP + 32);
	assert_non_null(extra);
	snprintf(extra, AUTHTOKEN_CAP + 32, ", \"authToken\": \"%s\"", tok);
	expect_body("max authToken", build_body("lab_1", "https://x.com/", extra), NULL, NULL);
	snprintf(extra, AUTHTOKEN_CAP + 32, ", \"authToken\": \"%st\"", tok);
	expect_body("long authToken", build_body("lab_1", "https://x.com/", extra), "too_long",
	            "authToken");
	free(tok);

	/* corporateUser: 64 bytes */
	char *cu = repeat('c', 65);
	snprintf(extra, AUTHTOKEN_CAP + 32, ", \"corporateUser\": \"%s\"", cu);
	expect_body("long corporateUser", build_body("lab_1", "https://x.com/", extra), "too_long",
	            "corporateUser");
	free(cu);
	free(extra);

	/* events: at most 64 items */
	size_t cap = 65 * 20 + 256;
	char *body = malloc(cap);
	assert_non_null(body);
	for (int items = 64; items <= 65; items++) {
		size_t o = (size_t)snprintf(body, cap, "{\"labID\": \"lab_1\", \"events\": [");
		for (int i = 0; i < items; i++)
			o +=
			    (size_t)snprintf(body + o, cap - o, "%s\"bill.created\"", i ? "," : "");
		snprintf(body + o, cap - o, "], " VALID_TAIL "}");
		char *copy = strdup(body);
		assert_non_null(copy);
		if (items == 64)
			expect_body("64 events", copy, NULL, NULL);
		else
			expect_body("65 events", copy, "too_long", "events");
	}
	free(body);
}

static void test_unknown_field_name_truncated(void **state)
{
	char *key = repeat('k', 500);
	char extra[600];
	(void)state;

	snprintf(extra, sizeof extra, ", \"%s\": 1", key);
	struct sub_request r;
	struct verr err;
	json_t *obj;
	char *body = build_body("lab_1", "https://x.com/", extra);
	assert_int_equal(subscribe(body, strlen(body), A_NONE, &r, &err, &obj), -1);
	assert_string_equal(err.code, "unknown_field");
	assert_true(strlen(err.field) > 0 && strlen(err.field) < sizeof err.field);
	assert_int_equal(strspn(err.field, "k"), strlen(err.field));
	json_decref(obj);
	free(body);
	free(key);
}

/* ---- validate_object with a generic spec ---- */

static const struct field_spec gen_specs[] = {
    {"name", F_STRING, 1, 10, 1}, /* required but nullable */
    {"note", F_STRING, 0, 0, 1},  /* optional, nullable, uncapped */
    {"count", F_INTEGER, 0, 0, 0}, {"ratio", F_NUMBER, 0, 0, 0}, {"flag", F_BOOL, 0, 0, 0},
    {"tags", F_ARRAY, 0, 2, 0},    {"meta", F_OBJECT, 0, 0, 1},
};

struct gen_case {
	const char *body;
	const char *code; /* NULL = valid */
	const char *field;
};

static void test_validate_object(void **state)
{
	static const struct gen_case cases[] = {
	    {"{\"name\": \"x\"}", NULL, NULL},
	    {"{\"name\": null}", NULL, NULL},
	    {"{\"name\": \"x\", \"note\": null}", NULL, NULL},
	    {"{\"name\": \"x\", \"note\": \"\"}", NULL, NULL}, /* optional may be empty */
	    {"{\"name\": \"x\", \"count\": 3, \"ratio\": 1.5, \"flag\": false, "
	     "\"tags\": [1, \"a\"], \"meta\": {\"k\": 1}}",
	     NULL, NULL},
	    {"{\"name\": \"x\", \"ratio\": 3}", NULL, NULL}, /* integers are numbers */
	    {"{\"name\": \"x\", \"meta\": null}", NULL, NULL},
	    {"{\"name\": \"0123456789\"}", NULL, NULL},
	    {"{}", "missing_field", "name"},
	    {"{\"note\": \"x\"}", "missing_field", "name"},
	    {"{\"name\": \"\"}", "invalid_value", "name"},
	    {"{\"name\": \"01234567890\"}", "too_long", "name"},
	    {"{\"name\": 1}", "invalid_type", "name"},
	    {"{\"name\": \"x\", \"count\": null}", "invalid_type", "count"},
	    {"{\"name\": \"x\", \"count\": 1.5}", "invalid_type", "count"},
	    {"{\"name\": \"x\", \"count\": \"3\"}", "invalid_type", "count"},
	    {"{\"name\": \"x\", \"ratio\": \"1\"}", "invalid_type", "ratio"},
	    {"{\"name\": \"x\", \"flag\": 1}", "invalid_type", "flag"},
	    {"{\"name\": \"x\", \"flag\": null}", "invalid_type", "flag"},
	    {"{\"name\": \"x\", \"tags\": [1, 2, 3]}", "too_long", "tags"},
	    {"{\"name\": \"x\", \"tags\": {}}", "invalid_type", "tags"},
	    {"{\"name\": \"x\", \"meta\": []}", "invalid_type", "meta"},
	    {"{\"name\": \"x\", \"extra\": 1}", "unknown_field", "extra"},
	    {"{\"name\": \"x\", \"k\\u00e9\": 1}", "unknown_field", "k??"},
	    /* unknown fields are reported before anything else */
	    {"{\"zzz\": 1}", "unknown_field", "zzz"},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct gen_case *c = &cases[i];
		struct verr err;
		json_t *obj = NULL;
		char name[64];

		snprintf(name, sizeof name, "case %zu", i);
		memset(&err, 0, sizeof err);
		assert_int_equal(validate_parse_object(c->body, strlen(c->body), &obj, &err), 0);
		int rc = validate_object(obj, gen_specs, N_ELEMS(gen_specs), &err);
		if (c->code == NULL && rc != 0)
			fail_msg("%s %s: refused with %s field '%s'", name, c->body, err.code,
			         err.field);
		if (c->code != NULL) {
			if (rc != -1)
				fail_msg("%s %s: accepted, want %s", name, c->body, c->code);
			expect_error(name, &err, c->code, c->field);
			assert_int_equal(err.err, LH_EINVAL);
		}
		json_decref(obj);
	}
}

static void test_direct_helpers(void **state)
{
	struct verr err;
	unsigned mask = 0xdead;
	json_t *arr;
	(void)state;

	/* validate_events names the caller's field in its paths */
	arr = json_pack("[s, s, i]", "bill.deleted", "booking.created", 3);
	assert_non_null(arr);
	assert_int_equal(validate_events(arr, "changes.events", &mask, &err), -1);
	assert_string_equal(err.field, "changes.events[2]");
	assert_int_equal(mask, 0xdead);
	assert_int_equal(json_array_remove(arr, 2), 0);
	assert_int_equal(validate_events(arr, "changes.events", &mask, &err), 0);
	assert_int_equal(mask, BIT(EV_BILL_DELETED) | BIT(EV_BOOKING_CREATED));
	json_decref(arr);

	/* validate_auth_token and validate_endpoint on their own */
	assert_int_equal(validate_auth_token("abc.DEF_123-~", "authToken", &err), 0);
	assert_int_equal(validate_auth_token("", "authToken", &err), 0);
	assert_int_equal(validate_auth_token("a\x01", "t", &err), -1);
	assert_string_equal(err.field, "t");
	assert_int_equal(validate_endpoint("https://x.com/", "ep", NULL, 0, &err), 0);
	assert_int_equal(validate_endpoint("https://192.168.0.1/", "ep", NULL, 0, &err), -1);
	assert_string_equal(err.code, "blocked_address");
	assert_string_equal(err.field, "ep");
	assert_non_null(strstr(err.message, "private"));

	/* verr_set fills every part and returns -1 */
	assert_int_equal(verr_set(&err, LH_ECONFLICT, "conflict", NULL, "n=%d", 5), -1);
	assert_int_equal(err.err, LH_ECONFLICT);
	assert_string_equal(err.code, "conflict");
	assert_string_equal(err.field, "");
	assert_string_equal(err.message, "n=5");
}

/* ---- a lab's catalog (API.md 9) ---- */

struct price_case {
	const char *json;
	int64_t minor; /* -1 = refused */
	const char *code;
};

static void test_catalog_prices(void **state)
{
	static const struct price_case cases[] = {
	    {"0", 0, NULL},
	    {"350", 35000, NULL},
	    {"249.5", 24950, NULL},
	    {"0.75", 75, NULL},
	    {"499.99", 49999, NULL},
	    {"1000000000", 100000000000LL, NULL},
	    {"1000000000.00", 100000000000LL, NULL},
	    {"999999999.99", 99999999999LL, NULL},
	    {"1e3", 100000, NULL},
	    {"-1", -1, "invalid_value"},
	    {"-0.01", -1, "invalid_value"},
	    {"1000000000.01", -1, "invalid_value"},
	    {"1000000001", -1, "invalid_value"},
	    {"1e300", -1, "invalid_value"},
	    {"1.005", -1, "invalid_value"},
	    {"0.001", -1, "invalid_value"},
	    {"\"10\"", -1, "invalid_type"},
	    {"null", -1, "invalid_type"},
	    {"true", -1, "invalid_type"},
	};
	(void)state;
	for (size_t i = 0; i < COUNTOF(cases); i++) {
		json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		struct verr err;
		int64_t got = -7;
		memset(&err, 0, sizeof err);
		int rc = validate_price(v, "price", &got, &err);
		if (cases[i].code) {
			if (rc == 0)
				fail_msg("price %s: accepted as %lld", cases[i].json,
				         (long long)got);
			expect_error(cases[i].json, &err, cases[i].code, "price");
			assert_int_equal(got, -7); /* out-parameter untouched */
		} else {
			if (rc != 0)
				fail_msg("price %s: %s (%s)", cases[i].json, err.code, err.message);
			assert_int_equal(got, cases[i].minor);
		}
		json_decref(v);
	}
}

struct catalog_case {
	const char *name;
	const char *body; /* an import body */
	const char *code; /* NULL = valid */
	const char *field;
	size_t items, members;
};

static void test_catalog_bodies(void **state)
{
	/* clang-format off */
	static const struct catalog_case cases[] = {
	    {"tests and a package", "{\"tests\":[{\"id\":\"T1\",\"name\":\"A\",\"price\":1},{\"id\":\"T2\",\"name\":\"B\",\"price\":2.5}],\"packages\":[{\"id\":\"P\",\"name\":\"C\",\"price\":3,\"tests\":[\"T1\",\"T2\"]}]}", NULL, NULL, 3, 2},
	    {"package without tests", "{\"packages\":[{\"id\":\"P\",\"name\":\"C\",\"price\":3}]}", NULL, NULL, 1, 0},
	    {"same id as test and package", "{\"tests\":[{\"id\":\"X\",\"name\":\"A\",\"price\":1}],\"packages\":[{\"id\":\"X\",\"name\":\"C\",\"price\":3}]}", NULL, NULL, 2, 0},
	    {"empty", "{}", "missing_field", "tests", 0, 0},
	    {"empty lists", "{\"tests\":[],\"packages\":[]}", "missing_field", "tests", 0, 0},
	    {"unknown top field", "{\"tests\":[],\"rates\":[]}", "unknown_field", "rates", 0, 0},
	    {"not an object", "{\"tests\":[1]}", "invalid_type", "tests[0]", 0, 0},
	    {"no id", "{\"tests\":[{\"name\":\"A\",\"price\":1}]}", "missing_field", "tests[0].id", 0, 0},
	    {"bad id", "{\"tests\":[{\"id\":\"a b\",\"name\":\"A\",\"price\":1}]}", "invalid_value", "tests[0].id", 0, 0},
	    {"long id", "{\"tests\":[{\"id\":\"" "0123456789012345678901234567890123456789012345678" "\",\"name\":\"A\",\"price\":1}]}", "invalid_value", "tests[0].id", 0, 0},
	    {"no name", "{\"tests\":[{\"id\":\"T\",\"price\":1}]}", "missing_field", "tests[0].name", 0, 0},
	    {"no price", "{\"tests\":[{\"id\":\"T\",\"name\":\"A\"}]}", "missing_field", "tests[0].price", 0, 0},
	    {"bad price", "{\"tests\":[{\"id\":\"T\",\"name\":\"A\",\"price\":-2}]}", "invalid_value", "tests[0].price", 0, 0},
	    {"tests on a test", "{\"tests\":[{\"id\":\"T\",\"name\":\"A\",\"price\":1,\"tests\":[]}]}", "unknown_field", "tests[0].tests", 0, 0},
	    {"duplicate id", "{\"tests\":[{\"id\":\"T\",\"name\":\"A\",\"price\":1},{\"id\":\"T\",\"name\":\"B\",\"price\":1}]}", "duplicate_value", "tests[1].id", 0, 0},
	    {"duplicate member", "{\"packages\":[{\"id\":\"P\",\"name\":\"C\",\"price\":3,\"tests\":[\"T\",\"T\"]}]}", "duplicate_value", "packages[0].tests[1]", 0, 0},
	    {"member not a string", "{\"packages\":[{\"id\":\"P\",\"name\":\"C\",\"price\":3,\"tests\":[7]}]}", "invalid_value", "packages[0].tests[0]", 0, 0},
	};
	/* clang-format on */
	(void)state;
	for (size_t i = 0; i < COUNTOF(cases); i++) {
		const struct catalog_case *tc = &cases[i];
		json_t *obj = json_loads(tc->body, 0, NULL);
		struct catalog_request r;
		struct verr err;
		assert_non_null(obj);
		memset(&r, 0, sizeof r);
		memset(&err, 0, sizeof err);
		int rc = validate_catalog_import(obj, &r, &err);
		if (tc->code) {
			if (rc == 0)
				fail_msg("%s: accepted", tc->name);
			expect_error(tc->name, &err, tc->code, tc->field);
			assert_null(r.items);
		} else {
			if (rc != 0)
				fail_msg("%s: %s field '%s' (%s)", tc->name, err.code, err.field,
				         err.message);
			assert_int_equal(r.n, tc->items);
			assert_int_equal(r.nmembers, tc->members);
			validate_catalog_free(&r);
		}
		json_decref(obj);
	}
	/* An item named by its path: the body takes no id, and errors name bare fields. */
	struct catalog_request r;
	struct verr err;
	json_t *obj = json_loads("{\"name\":\"A\",\"price\":12.5,\"tests\":[\"T1\"]}", 0, NULL);
	memset(&r, 0, sizeof r);
	assert_int_equal(validate_catalog_item(obj, CATALOG_PACKAGE, "P9", "", &r, &err), 0);
	assert_string_equal(r.items[0].id, "P9");
	assert_int_equal(r.items[0].price, 1250);
	assert_string_equal(r.members[0].package_id, "P9");
	validate_catalog_free(&r);
	json_decref(obj);
	obj = json_loads("{\"id\":\"X\",\"name\":\"A\",\"price\":1}", 0, NULL);
	assert_int_equal(validate_catalog_item(obj, CATALOG_TEST, "T9", "", &r, &err), -1);
	expect_error("id in body", &err, "unknown_field", "id");
	json_decref(obj);
	obj = json_loads("{\"name\":\"A\",\"price\":1.111}", 0, NULL);
	assert_int_equal(validate_catalog_item(obj, CATALOG_TEST, "T9", "", &r, &err), -1);
	expect_error("price in body", &err, "invalid_value", "price");
	json_decref(obj);
	validate_catalog_free(&r);
}

/* ---- bills and leads (API.md 5) ---- */

#define PD                                                                                         \
	"\"patient_details\":{\"first_name\":\"A\",\"gender\":\"male\",\"age\":3,\"age_type\":\"year\"}"
#define BILL "\"labID\":\"lab_1\",\"integrator_id\":\"i\"," PD
#define LEAD                                                                                       \
	"\"branchID\":\"lab_1\",\"integratorID\":\"i\",\"first_name\":\"R\",\"contact\":\"9876543210\",\"age\":4,\"age_type\":\"year\""

enum body_kind { K_BILL, K_LAB_BILL, K_LEAD, K_BOOKING };

struct event_case {
	const char *name;
	enum body_kind kind;
	const char *body;
	const char *code; /* NULL = valid */
	const char *field;
	size_t reports; /* bills: how many when valid */
};

static void test_event_bodies(void **state)
{
	/* clang-format off */
	static const struct event_case cases[] = {
	    {"bill mapped", K_BILL, "{" BILL ",\"mapped_tests\":[{\"flabs_id\":1},{\"id\":\"x\",\"name\":\"N\"}]}", NULL, NULL, 2},
	    {"bill packages", K_BILL, "{" BILL ",\"unmapped_packages_with_tests\":[{\"package_name\":\"P\",\"tests\":[\"a\",\"b\"]},{\"package_name\":\"Q\"}],\"unmapped_packages\":[\"U\"]}", NULL, NULL, 4},
	    {"bill no tests", K_BILL, "{" BILL "}", "missing_tests", "mapped_tests", 0},
	    {"bill clientID on client route", K_BILL, "{" BILL ",\"clientID\":\"c\",\"unmapped_tests\":[\"a\"]}", "unknown_field", "clientID", 0},
	    {"lab bill", K_LAB_BILL, "{" BILL ",\"clientID\":\"c\",\"unmapped_tests\":[\"a\"]}", NULL, NULL, 1},
	    {"bill age", K_BILL, "{\"labID\":\"l\",\"integrator_id\":\"i\",\"patient_details\":{\"first_name\":\"A\",\"gender\":\"male\",\"age\":201,\"age_type\":\"year\"},\"unmapped_tests\":[\"a\"]}", "invalid_value", "patient_details.age", 0},
	    {"bill gender", K_BILL, "{\"labID\":\"l\",\"integrator_id\":\"i\",\"patient_details\":{\"first_name\":\"A\",\"gender\":\"m\",\"age\":2,\"age_type\":\"year\"},\"unmapped_tests\":[\"a\"]}", "invalid_value", "patient_details.gender", 0},
	    {"bill patient field", K_BILL, "{\"labID\":\"l\",\"integrator_id\":\"i\",\"patient_details\":{\"gender\":\"male\",\"age\":2,\"age_type\":\"year\"},\"unmapped_tests\":[\"a\"]}", "missing_field", "patient_details.first_name", 0},
	    {"bill unmapped not string", K_BILL, "{" BILL ",\"unmapped_tests\":[\"a\",7]}", "invalid_value", "unmapped_tests[1]", 0},
	    {"bill mapped not object", K_BILL, "{" BILL ",\"mapped_packages\":[\"a\"]}", "invalid_type", "mapped_packages[0]", 0},
	    {"bill mapped flabs_id on package", K_BILL, "{" BILL ",\"mapped_packages\":[{\"flabs_id\":1}]}", "unknown_field", "mapped_packages[0]", 0},
	    {"bill mapped no id", K_BILL, "{" BILL ",\"mapped_tests\":[{\"name\":\"n\"}]}", "missing_field", "mapped_tests[0]", 0},
	    {"bill package test", K_BILL, "{" BILL ",\"unmapped_packages_with_tests\":[{\"package_name\":\"P\",\"tests\":[\"\"]}]}", "invalid_value", "unmapped_packages_with_tests[0]", 0},
	    {"bill package long key", K_BILL, "{" BILL ",\"unmapped_packages_with_tests\":[{\"package_name\":\"P\",\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\":1}]}", "unknown_field", "unmapped_packages_with_tests[0].kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 0},
	    {"lead", K_LEAD, "{" LEAD ",\"email\":\"a@b.co\",\"corporateUser\":\"p\"}", NULL, NULL, 0},
	    {"lead contact", K_LEAD, "{\"branchID\":\"l\",\"integratorID\":\"i\",\"first_name\":\"R\",\"contact\":\"98765\",\"age\":4,\"age_type\":\"year\"}", "invalid_value", "contact", 0},
	    {"lead email", K_LEAD, "{" LEAD ",\"email\":\"a@b\"}", "invalid_value", "email", 0},
	    {"lead pincode", K_LEAD, "{" LEAD ",\"pincode\":\"1a\"}", "invalid_value", "pincode", 0},
	    {"lead priority", K_LEAD, "{" LEAD ",\"priority\":\"soon\"}", "invalid_value", "priority", 0},
	    {"lead tests", K_LEAD, "{" LEAD ",\"tests\":[\"a\",\"\"]}", "invalid_value", "tests[1]", 0},
	    {"lead booking time", K_LEAD, "{" LEAD ",\"phase\":\"booking\",\"bookingType\":\"home\"}", "missing_field", "scheduledAt", 0},
	    {"lead booking", K_LEAD, "{" LEAD ",\"phase\":\"booking\",\"bookingType\":\"home\",\"scheduledAt\":\"2026-01-20T10:30:00Z\"}", NULL, NULL, 0},
	    {"convert type", K_BOOKING, "{\"bookingType\":\"\",\"scheduledAt\":\"2026-01-20T10:30:00Z\"}", "invalid_value", "bookingType", 0},
	    {"convert time", K_BOOKING, "{\"bookingType\":\"lab\",\"scheduledAt\":\"10000-01-01T00:00:00Z\"}", "invalid_value", "scheduledAt", 0},
	};
	/* clang-format on */
	const struct field_table *tables[] = {&validate_bill_table, &validate_lab_bill_table,
	                                      &validate_lead_table, &validate_booking_table};
	(void)state;
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct event_case *tc = &cases[i];
		const struct field_table *t = tables[tc->kind];
		struct bill_request br;
		struct lead_request lr;
		struct booking_request bk;
		struct verr err;
		json_t *obj = NULL;
		memset(&err, 0, sizeof err);
		assert_int_equal(validate_parse_object(tc->body, strlen(tc->body), &obj, &err), 0);
		int rc = validate_object(obj, t->spec, t->n, &err);
		if (rc == 0 && (tc->kind == K_BILL || tc->kind == K_LAB_BILL))
			rc = validate_bill(obj, &br, &err);
		else if (rc == 0 && tc->kind == K_LEAD)
			rc = validate_lead(obj, &lr, &err);
		else if (rc == 0)
			rc = validate_booking(obj, &bk, &err);
		if (tc->code) {
			if (rc == 0)
				fail_msg("%s: accepted", tc->name);
			expect_error(tc->name, &err, tc->code, tc->field);
		} else {
			if (rc != 0)
				fail_msg("%s: %s field '%s' (%s)", tc->name, err.code, err.field,
				         err.message);
			if (tc->kind == K_BILL || tc->kind == K_LAB_BILL) {
				assert_int_equal(br.n_reports, tc->reports);
				free(br.reports);
				free(br.refs);
			}
		}
		json_decref(obj);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_object),
	    cmocka_unit_test(test_parse_nul_in_string),
	    cmocka_unit_test(test_parse_deep_nesting),
	    cmocka_unit_test(test_subscribe_table),
	    cmocka_unit_test(test_subscribe_results),
	    cmocka_unit_test(test_subscribe_caps),
	    cmocka_unit_test(test_unknown_field_name_truncated),
	    cmocka_unit_test(test_validate_object),
	    cmocka_unit_test(test_direct_helpers),
	    cmocka_unit_test(test_event_bodies),
	    cmocka_unit_test(test_catalog_prices),
	    cmocka_unit_test(test_catalog_bodies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
