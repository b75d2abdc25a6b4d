/* test_sign.c: Standard Webhooks signatures against the specification's published vector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sign.h"

static void test_published_vector(void **state)
{
	char sig[SIG_CAP];
	const char *body = "{\"test\": 2432232314}";
	(void)state;
	assert_int_equal(sig_sign_v1("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	                             "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body),
	                             sig),
	                 0);
	assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void test_any_change_changes_the_signature(void **state)
{
	char a[SIG_CAP], b[SIG_CAP];
	const char *s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	(void)state;
	assert_int_equal(sig_sign_v1(s, "msg_1", 1, "{}", 2, a), 0);
	assert_int_equal(sig_sign_v1(s, "msg_2", 1, "{}", 2, b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(sig_sign_v1(s, "msg_1", 2, "{}", 2, b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(sig_sign_v1(s, "msg_1", 1, "{ }", 3, b), 0);
	assert_string_not_equal(a, b);
}

static void test_bad_secrets_refused(void **state)
{
	char sig[SIG_CAP];
	(void)state;
	assert_int_equal(sig_sign_v1("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, "{}", 2, sig), -1);
	assert_int_equal(sig_sign_v1("whsec_", "m", 1, "{}", 2, sig), -1);
	assert_int_equal(sig_sign_v1("whsec_***", "m", 1, "{}", 2, sig), -1);
}

/* A report link's signature: HMAC-SHA256 over "report-link/v1/<bill>/<report>/<expires>",
 * in hex (the vector from Python's hmac module); each part changes it. */
static void test_report_link(void **state)
{
	unsigned char key[32];
	char sig[SIG_LINK_HEX], other[SIG_LINK_HEX];
	(void)state;
	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char)(i + 1);
	assert_int_equal(sig_report_link(key, "bill_A", "rep_B", 1700000000, sig), 0);
	assert_string_equal(sig,
	                    "d3c84633976e2be950c670ee45050aee4f65a729635d3e014581d5d7f3efd3ac");
	assert_int_equal(sig_report_link(key, "bill_A", "rep_C", 1700000000, other), 0);
	assert_string_not_equal(sig, other);
	assert_int_equal(sig_report_link(key, "bill_A", "rep_B", 1700000001, other), 0);
	assert_string_not_equal(sig, other);
	key[0] ^= 1;
	assert_int_equal(sig_report_link(key, "bill_A", "rep_B", 1700000000, other), 0);
	assert_string_not_equal(sig, other);
}

/* Each thread keeps its HMAC context and the last key: a signature is the same whatever
 * was signed before it, with the same key (restarted), another one (rekeyed), or keys of
 * other lengths in between. */
static void test_signatures_independent_of_order(void **state)
{
	const char *pub = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	const char *other = "whsec_c2VjcmV0LWtleS1vZi1hbm90aGVyLXN1Yg==";
	const char *body = "{\"test\": 2432232314}";
	const char *want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
	char sig[SIG_CAP], first[SIG_CAP], again[SIG_CAP], link[SIG_LINK_HEX];
	unsigned char key[32] = {1};
	(void)state;
	assert_int_equal(sig_sign_v1(other, "msg_1", 1, "{}", 2, first), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sig_sign_v1(pub, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
		                             strlen(body), sig),
		                 0);
		assert_string_equal(sig, want);
	}
	assert_int_equal(sig_report_link(key, "bill_A", "rep_B", 1700000000, link), 0);
	assert_int_equal(sig_sign_v1(other, "msg_1", 1, "{}", 2, again), 0);
	assert_string_equal(first, again);
	assert_int_equal(
	    sig_sign_v1(pub, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig),
	    0);
	assert_string_equal(sig, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_published_vector),
	    cmocka_unit_test(test_any_change_changes_the_signature),
	    cmocka_unit_test(test_bad_secrets_refused),
	    cmocka_unit_test(test_report_link),
	    cmocka_unit_test(test_signatures_independent_of_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
