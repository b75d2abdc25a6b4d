/* retry_policy.h: what happens after one delivery attempt, as a pure function.
 *
 * From the attempt's outcome (an HTTP status or why there was none, Retry-After), the
 * delivery's attempt count, the retry schedule and the endpoint's failure state it decides
 * the delivery's new status and next attempt, the endpoint's backoff and streak, and what
 * the attempt does to the subscription (success, failure, disable). No I/O, no clock, no
 * randomness (the caller passes now and the jitter), no locks: any thread may call it.
 */
#ifndef LH_RETRY_POLICY_H
#define LH_RETRY_POLICY_H

#include <stdint.h>

#include "config.h"
#include "store.h"

#define RETRY_STREAK_BACKOFF 5     /* failures in a row before the endpoint is backed off */
#define RETRY_BACKOFF_MAX_MS 60000 /* the backed-off endpoint's longest pause */
#define RETRY_AFTER_MAX_S    86400 /* Retry-After is honoured up to a day */
#define RETRY_ERROR_CAP      32    /* == sizeof ((struct attempt *)0)->error */

/* Why an attempt got no (whole) HTTP answer; retry_policy_next names it for the log. */
enum retry_transport {
	RETRY_ANSWERED = 0, /* there was an answer: see the status */
	RETRY_TIMEOUT,
	RETRY_DNS,
	RETRY_CONNECT,
	RETRY_TLS,
	RETRY_EMPTY_REPLY,
	RETRY_RESET,
	RETRY_PROTOCOL,
	RETRY_NETWORK,
	RETRY_BLOCKED, /* every address it resolved to is in a refused range */
};

/* An endpoint's failure state, kept by the engine between attempts. All zero: healthy. */
struct retry_state {
	int streak;               /* consecutive failures */
	int64_t backoff_until_ms; /* no attempt starts before (0: not backed off) */
	int64_t backoff_since_ms; /* when the current backoff began (0: none) */
	int backoff_level;        /* doublings of the pause: grows only when a probe fails */
};

/* One finished attempt. */
struct retry_attempt {
	int status;                     /* HTTP status received (0: none), even if the answer
	                                 * then broke off: a 410 still disables, a 429's
	                                 * Retry-After still counts */
	enum retry_transport transport; /* RETRY_ANSWERED if the answer arrived (status > 0),
	                                 * else why not; the attempt log names this class */
	int retry_after_s;              /* the answer's Retry-After in seconds; 0 if none */
	int attempts;                   /* attempts of the delivery, this one included */
	int64_t started_ms;             /* when this attempt started */
	int64_t failing_since;          /* the subscription's first failure since its last
	                                 * success, unix seconds (0: none) */
	int64_t now_ms;                 /* when it finished */
	unsigned jitter;                /* 16 random bits: the retry delay's +-20% */
};

/* What follows from it. */
struct retry_decision {
	enum delivery_status status; /* DLV_DELIVERED, DLV_PENDING or DLV_FAILED */
	int64_t next_at_ms;          /* when DLV_PENDING: the next attempt; else 0 */
	enum sub_outcome sub;        /* what it does to the subscription */
	int64_t failing_since;       /* the subscription's, after it */
	struct retry_state ep;       /* the endpoint's, after it */
	char error[RETRY_ERROR_CAP]; /* "" on success; else timeout, http_500, redirect_301... */
};

/* Decides what follows an attempt (cfg: its retry schedule and disable settings; ep: the
 * endpoint's state before it). Writes *out; reads nothing else. */
void retry_policy_next(const struct config *cfg, const struct retry_state *ep,
                       const struct retry_attempt *at, struct retry_decision *out);

#endif
