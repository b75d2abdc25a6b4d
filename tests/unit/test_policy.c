/* test_policy.c: retry_policy.h: what follows one delivery attempt, one table row per case
 * (the endpoint's state and the attempt -> the delivery's status and next attempt, the
 * subscription's outcome, the endpoint's new state and the attempt log's error class).
 * Against the default configuration (its retry schedule, disable-after 5 days,
 * disable-min-span 12 hours) and one with disable-after shortened to an hour. Every case
 * names itself in the failure message. Single-threaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "retry_policy.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define NOW 1800000000000LL /* ms */
#define S   (NOW / 1000)    /* the same, unix seconds */
#define T   (NOW - 100)     /* when the attempt started */
#define DAY 86400LL
#define JLO 0u     /* jitter: the delay is 80% of the schedule's */
#define JHI 65535u /* ... 120% */

enum { DEFAULTS, SHORT_DISABLE }; /* the configuration of a row */

struct policy_case {
	const char *name;
	int cfg;
	struct retry_state ep;      /* streak, backoff_until_ms, backoff_since_ms, backoff_level */
	struct retry_attempt at;    /* status, transport, retry_after_s, attempts, started_ms,
	                             * failing_since, now_ms, jitter */
	struct retry_decision want; /* status, next_at_ms, sub, failing_since, ep, error */
};

#define OK   RETRY_ANSWERED
#define PEN  DLV_PENDING
#define DLV  DLV_DELIVERED
#define FLD  DLV_FAILED
#define FAIL SUBO_FAILURE
#define OFF  SUBO_DISABLE

/* clang-format off */
static const struct policy_case cases[] = {
    /* 2xx */
    {"2xx, healthy", DEFAULTS, {0, 0, 0, 0},
     {200, OK, 0, 1, T, 0, NOW, JLO}, {DLV, 0, SUBO_NONE, 0, {0, 0, 0, 0}, ""}},
    {"2xx ends the streak and the backoff", DEFAULTS, {7, NOW + 500, NOW - 9000, 3},
     {204, OK, 0, 3, T, S - 3600, NOW, JLO}, {DLV, 0, SUBO_SUCCESS, 0, {0, 0, 0, 0}, ""}},
    {"2xx after another delivery's failure", DEFAULTS, {0, 0, 0, 0},
     {200, OK, 0, 2, T, S - 10, NOW, JLO}, {DLV, 0, SUBO_SUCCESS, 0, {0, 0, 0, 0}, ""}},
    {"2xx cut short is a failure", DEFAULTS, {0, 0, 0, 0},
     {200, RETRY_TIMEOUT, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "timeout"}},
    /* 3xx and 4xx */
    {"3xx: a failure, never followed", DEFAULTS, {0, 0, 0, 0},
     {301, OK, 0, 2, T, 0, NOW, JHI}, {PEN, NOW + 36000, FAIL, S, {1, 0, 0, 0}, "redirect_301"}},
    {"4xx: retried on the schedule", DEFAULTS, {0, 0, 0, 0},
     {400, OK, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "http_400"}},
    {"4xx: jitter up to +20%", DEFAULTS, {0, 0, 0, 0},
     {404, OK, 0, 1, T, 0, NOW, JHI}, {PEN, NOW + 6000, FAIL, S, {1, 0, 0, 0}, "http_404"}},
    {"410: failed, subscription disabled", DEFAULTS, {0, 0, 0, 0},
     {410, OK, 0, 1, T, 0, NOW, JLO}, {FLD, 0, OFF, S, {1, 0, 0, 0}, "http_410"}},
    {"410 cut short still disables", DEFAULTS, {0, 0, 0, 0},
     {410, RETRY_RESET, 0, 1, T, 0, NOW, JLO}, {FLD, 0, OFF, S, {1, 0, 0, 0}, "reset"}},
    /* 429 and 503 with Retry-After; other statuses ignore it */
    {"429 without Retry-After: the schedule", DEFAULTS, {0, 0, 0, 0},
     {429, OK, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "http_429"}},
    {"429 Retry-After past the schedule", DEFAULTS, {0, 0, 0, 0},
     {429, OK, 120, 1, T, 0, NOW, JLO}, {PEN, NOW + 120000, FAIL, S, {1, 0, 0, 0}, "http_429"}},
    {"429 Retry-After before the schedule", DEFAULTS, {0, 0, 0, 0},
     {429, OK, 2, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "http_429"}},
    {"429 Retry-After capped at a day", DEFAULTS, {0, 0, 0, 0},
     {429, OK, 10 * DAY, 1, T, 0, NOW, JLO}, {PEN, NOW + DAY * 1000, FAIL, S, {1, 0, 0, 0}, "http_429"}},
    {"429 cut short keeps its Retry-After", DEFAULTS, {0, 0, 0, 0},
     {429, RETRY_RESET, 120, 1, T, 0, NOW, JLO}, {PEN, NOW + 120000, FAIL, S, {1, 0, 0, 0}, "reset"}},
    {"503 Retry-After", DEFAULTS, {0, 0, 0, 0},
     {503, OK, 600, 1, T, 0, NOW, JLO}, {PEN, NOW + 600000, FAIL, S, {1, 0, 0, 0}, "http_503"}},
    {"500 ignores Retry-After", DEFAULTS, {0, 0, 0, 0},
     {500, OK, 600, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "http_500"}},
    /* no answer */
    {"timeout", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_TIMEOUT, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "timeout"}},
    {"connect error", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_CONNECT, 0, 2, T, 0, NOW, JLO}, {PEN, NOW + 24000, FAIL, S, {1, 0, 0, 0}, "connect"}},
    {"dns", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_DNS, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "dns"}},
    {"tls", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_TLS, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "tls"}},
    {"empty reply", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_EMPTY_REPLY, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "empty_reply"}},
    {"reset", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_RESET, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "reset"}},
    {"protocol", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_PROTOCOL, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "protocol"}},
    {"other network error", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_NETWORK, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "network"}},
    {"blocked address", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_BLOCKED, 0, 1, T, 0, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {1, 0, 0, 0}, "blocked_address"}},
    /* the end of the schedule (12 attempts by default) */
    {"11th attempt: one more a day later", DEFAULTS, {0, 0, 0, 0},
     {500, OK, 0, 11, T, S - 60, NOW, JLO}, {PEN, NOW + DAY * 800, FAIL, S - 60, {1, 0, 0, 0}, "http_500"}},
    {"last attempt of the schedule: gives up", DEFAULTS, {0, 0, 0, 0},
     {500, OK, 0, 12, T, S - 60, NOW, JLO}, {FLD, 0, FAIL, S - 60, {1, 0, 0, 0}, "http_500"}},
    {"past the schedule (a retried failed one): gives up", DEFAULTS, {0, 0, 0, 0},
     {0, RETRY_TIMEOUT, 0, 13, T, S - 60, NOW, JLO}, {FLD, 0, FAIL, S - 60, {1, 0, 0, 0}, "timeout"}},
    {"Retry-After on the last attempt: gives up all the same", DEFAULTS, {0, 0, 0, 0},
     {429, OK, 60, 12, T, S - 60, NOW, JLO}, {FLD, 0, FAIL, S - 60, {1, 0, 0, 0}, "http_429"}},
    /* the endpoint's streak and backoff */
    {"4th failure in a row: no backoff yet", DEFAULTS, {3, 0, 0, 0},
     {500, OK, 0, 1, T, S - 5, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 5, {4, 0, 0, 0}, "http_500"}},
    {"5th failure in a row: backed off 1 s", DEFAULTS, {4, 0, 0, 0},
     {500, OK, 0, 1, T, S - 5, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 5, {5, NOW + 1000, NOW, 0}, "http_500"}},
    {"a failed probe doubles the pause", DEFAULTS, {5, NOW - 1, NOW - 2000, 0},
     {500, OK, 0, 1, NOW - 500, S - 5, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 5, {6, NOW + 2000, NOW - 2000, 1}, "http_500"}},
    {"one in flight before the backoff does not double it", DEFAULTS, {5, NOW + 500, NOW - 500, 0},
     {500, OK, 0, 1, NOW - 1000, S - 5, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 5, {6, NOW + 1000, NOW - 500, 0}, "http_500"}},
    {"one started in the millisecond the backoff began does not double it", DEFAULTS, {5, NOW + 1000, NOW, 0},
     {0, RETRY_CONNECT, 0, 1, NOW, S, NOW, JLO}, {PEN, NOW + 4000, FAIL, S, {6, NOW + 1000, NOW, 0}, "connect"}},
    {"the pause stops at 60 s", DEFAULTS, {11, NOW - 1, NOW - 99000, 6},
     {500, OK, 0, 1, T, S - 99, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 99, {12, NOW + 60000, NOW - 99000, 7}, "http_500"}},
    {"the doublings stop at 16", DEFAULTS, {40, NOW - 1, NOW - 999000, 16},
     {0, RETRY_CONNECT, 0, 1, T, S - 999, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 999, {41, NOW + 60000, NOW - 999000, 16}, "connect"}},
    /* disabling a subscription that keeps failing */
    {"failing for disable-after: disabled", DEFAULTS, {0, 0, 0, 0},
     {500, OK, 0, 3, T, S - 5 * DAY, NOW, JLO}, {PEN, NOW + 96000, OFF, S - 5 * DAY, {1, 0, 0, 0}, "http_500"}},
    {"a second short of disable-after: a failure", DEFAULTS, {0, 0, 0, 0},
     {500, OK, 0, 3, T, S - 5 * DAY + 1, NOW, JLO}, {PEN, NOW + 96000, FAIL, S - 5 * DAY + 1, {1, 0, 0, 0}, "http_500"}},
    {"disable-after shortened: the min span still holds", SHORT_DISABLE, {0, 0, 0, 0},
     {500, OK, 0, 1, T, S - 2 * 3600, NOW, JLO}, {PEN, NOW + 4000, FAIL, S - 2 * 3600, {1, 0, 0, 0}, "http_500"}},
    {"disable-after shortened: disabled after the min span", SHORT_DISABLE, {0, 0, 0, 0},
     {500, OK, 0, 1, T, S - 12 * 3600, NOW, JLO}, {PEN, NOW + 4000, OFF, S - 12 * 3600, {1, 0, 0, 0}, "http_500"}},
};
/* clang-format on */

static void load_config(struct config *cfg, int which)
{
	char err[256];
	assert_int_equal(config_load(cfg, 0, NULL, NULL, NULL, 0, NULL, err, sizeof err), 0);
	if (which == SHORT_DISABLE)
		cfg->disable_after_ms = 3600 * 1000;
}

static void test_policy_table(void **state)
{
	struct config cfgs[2];
	(void)state;

	load_config(&cfgs[DEFAULTS], DEFAULTS);
	load_config(&cfgs[SHORT_DISABLE], SHORT_DISABLE);
	/* The rows assume these; a changed default must change them on purpose. */
	assert_int_equal(cfgs[DEFAULTS].n_retry, 12);
	assert_int_equal(cfgs[DEFAULTS].retry_ms[1], 5000);
	assert_int_equal(cfgs[DEFAULTS].disable_after_ms, 5 * DAY * 1000);
	assert_int_equal(cfgs[DEFAULTS].disable_min_span_ms, 12 * 3600 * 1000);
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		const struct policy_case *c = &cases[i];
		const struct retry_decision *w = &c->want;
		struct retry_decision got;
		memset(&got, 0x5a, sizeof got);
		retry_policy_next(&cfgs[c->cfg], &c->ep, &c->at, &got);
		if (got.status != w->status || got.next_at_ms != w->next_at_ms ||
		    got.sub != w->sub || got.failing_since != w->failing_since ||
		    strcmp(got.error, w->error) != 0)
			fail_msg(
			    "%s: status %d next_at %+lld sub %d failing_since %+lld error '%s'; "
			    "want %d %+lld %d %+lld '%s'",
			    c->name, got.status,
			    (long long)(got.next_at_ms ? got.next_at_ms - NOW : 0), got.sub,
			    (long long)(got.failing_since ? got.failing_since - S : 0), got.error,
			    w->status, (long long)(w->next_at_ms ? w->next_at_ms - NOW : 0), w->sub,
			    (long long)(w->failing_since ? w->failing_since - S : 0), w->error);
		if (got.ep.streak != w->ep.streak ||
		    got.ep.backoff_until_ms != w->ep.backoff_until_ms ||
		    got.ep.backoff_since_ms != w->ep.backoff_since_ms ||
		    got.ep.backoff_level != w->ep.backoff_level)
			fail_msg("%s: endpoint streak %d until %lld since %lld level %d; "
			         "want %d %lld %lld %d",
			         c->name, got.ep.streak, (long long)got.ep.backoff_until_ms,
			         (long long)got.ep.backoff_since_ms, got.ep.backoff_level,
			         w->ep.streak, (long long)w->ep.backoff_until_ms,
			         (long long)w->ep.backoff_since_ms, w->ep.backoff_level);
	}
}

/* The jitter spreads retries over [80%, 120%] of the schedule's delay, never outside. */
static void test_policy_jitter_bounds(void **state)
{
	struct config cfg;
	struct retry_state ep = {0, 0, 0, 0};
	(void)state;

	load_config(&cfg, DEFAULTS);
	for (unsigned j = 0; j <= 65535; j += 257) {
		struct retry_attempt at = {500, RETRY_ANSWERED, 0, 2, T, 0, NOW, j};
		struct retry_decision got;
		retry_policy_next(&cfg, &ep, &at, &got);
		int64_t delay = got.next_at_ms - NOW;
		if (delay < 24000 || delay > 36000)
			fail_msg("jitter %u: delay %lld ms outside [24000, 36000]", j,
			         (long long)delay);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policy_table),
	    cmocka_unit_test(test_policy_jitter_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
