/* retry_policy.c: see retry_policy.h. */
#include "retry_policy.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

_Static_assert(RETRY_ERROR_CAP == sizeof((struct attempt *)0)->error, "the attempt log's field");

/* The attempt log's name of each reason for no answer (enum retry_transport). */
/* clang-format off */
static const char *const transport_names[] = {
	[RETRY_ANSWERED]    = "",
	[RETRY_TIMEOUT]     = "timeout",
	[RETRY_DNS]         = "dns",
	[RETRY_CONNECT]     = "connect",
	[RETRY_TLS]         = "tls",
	[RETRY_EMPTY_REPLY] = "empty_reply",
	[RETRY_RESET]       = "reset",
	[RETRY_PROTOCOL]    = "protocol",
	[RETRY_NETWORK]     = "network",
	[RETRY_BLOCKED]     = "blocked_address",
};
/* clang-format on */

/* The schedule's delay before the next attempt, with +-20% jitter so that failed endpoints
 * are not hit by synchronised waves, but never sooner than the answer's Retry-After. */
static int64_t retry_delay_ms(const struct config *cfg, int attempts, unsigned jitter,
                              int retry_after_s)
{
	int64_t base = cfg->retry_ms[attempts];
	double f = 0.8 + 0.4 * ((double)(jitter & 0xffff) / 65535.0);
	int64_t delay = (int64_t)((double)base * f);
	int64_t ra = retry_after_s < RETRY_AFTER_MAX_S ? retry_after_s : RETRY_AFTER_MAX_S;
	if (ra * 1000 > delay)
		delay = ra * 1000;
	return delay;
}

/* Backed off as a whole once the streak is long enough: one probe at a time after a
 * pause. Only a probe (an attempt started after the backoff began) that fails doubles the
 * pause; the other requests that were in flight when it began do not, even those started
 * in the millisecond it began (a probe starts a pause later): with `>=`, the 16 attempts a
 * restart sends to a receiver still down, all refused within a millisecond, counted as
 * failed probes and paused the endpoint for 60 s instead of 1. */
static void backoff(struct retry_state *ep, int64_t started_ms, int64_t now_ms)
{
	if (!ep->backoff_since_ms)
		ep->backoff_since_ms = now_ms;
	else if (started_ms > ep->backoff_since_ms && ep->backoff_level < 16)
		ep->backoff_level++;
	int64_t b = 1000LL << ep->backoff_level;
	ep->backoff_until_ms = now_ms + (b > RETRY_BACKOFF_MAX_MS ? RETRY_BACKOFF_MAX_MS : b);
}

void retry_policy_next(const struct config *cfg, const struct retry_state *ep,
                       const struct retry_attempt *at, struct retry_decision *out)
{
	int64_t now_s = at->now_ms / 1000;
	int code = at->status;

	int answered = at->transport == RETRY_ANSWERED;

	/* attempts may pass the schedule's length: a retry request for a failed delivery, or a
	 * schedule shortened across a restart (then the attempt is its last). */
	assert(at->attempts >= 1);
	assert(!answered || code > 0);
	assert((size_t)at->transport < COUNTOF(transport_names));
	memset(out, 0, sizeof *out);
	if (answered && code >= 200 && code < 300) {
		out->status = DLV_DELIVERED;
		out->sub = ep->streak > 0 || at->failing_since ? SUBO_SUCCESS : SUBO_NONE;
		return; /* the first success ends the streak, the backoff and the failing span */
	}
	out->ep = *ep;
	if (answered)
		snprintf(out->error, sizeof out->error, "%s%d",
		         code >= 300 && code < 400 ? "redirect_" : "http_", code);
	else
		snprintf(out->error, sizeof out->error, "%s", transport_names[at->transport]);
	if (++out->ep.streak >= RETRY_STREAK_BACKOFF)
		backoff(&out->ep, at->started_ms, at->now_ms);

	/* Failing for disable-after (but at least disable-min-span) since the last success,
	 * or 410 Gone, disables the subscription. */
	out->failing_since = at->failing_since ? at->failing_since : now_s;
	int64_t span_ms = (now_s - out->failing_since) * 1000;
	int gone = code == 410;
	out->sub = gone || (span_ms >= cfg->disable_after_ms && span_ms >= cfg->disable_min_span_ms)
	               ? SUBO_DISABLE
	               : SUBO_FAILURE;
	if (gone || (size_t)at->attempts >= cfg->n_retry) {
		out->status = DLV_FAILED; /* the schedule is used up (or the endpoint is gone) */
		return;
	}
	int ra = code == 429 || code == 503 ? at->retry_after_s : 0;
	out->status = DLV_PENDING;
	out->next_at_ms = at->now_ms + retry_delay_ms(cfg, at->attempts, at->jitter, ra);
}
