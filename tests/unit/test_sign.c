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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_published_vector),
	    cmocka_unit_test(test_any_change_changes_the_signature),
	    cmocka_unit_test(test_bad_secrets_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
