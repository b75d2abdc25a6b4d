/* retention.c: see retention.h. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "retention.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "util.h"

struct retention {
	struct store *st;
	int64_t retention_ms, interval_ms;
	pthread_t thread;
	pthread_mutex_t mu; /* stopping */
	pthread_cond_t cv;  /* on the monotonic clock */
	int stopping;
};

int64_t retention_interval_ms(int64_t retention_ms)
{
	int64_t v = retention_ms / 2;
	return v < 1000 ? 1000 : v > 60000 ? 60000 : v;
}

static int stopping(struct retention *r)
{
	pthread_mutex_lock(&r->mu);
	int v = r->stopping;
	pthread_mutex_unlock(&r->mu);
	return v;
}

/* Waits ms or until stopped; returns 1 when stopped. */
static int nap(struct retention *r, int64_t ms)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += (time_t)(ms / 1000);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mu);
	while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->mu, &t) == 0)
		;
	int v = r->stopping;
	pthread_mutex_unlock(&r->mu);
	return v;
}

/* One pass: batches until the cursor is done. A failed batch (the store down, the disk
 * full) ends the pass; the next one starts over, and what was removed stays removed. */
static void pass(struct retention *r)
{
	struct retention_cursor cur = {0};
	int64_t before = (util_now_ms() - r->retention_ms) / 1000;
	int64_t t0 = util_mono_us();
	size_t total = 0, batches = 0;
	enum lh_err e = LH_OK;
	while (!cur.done && !stopping(r)) {
		size_t removed = 0;
		if ((e = r->st->ops->retention_sweep(r->st, before, RETENTION_BATCH, &cur,
		                                     &removed)) != LH_OK)
			break;
		total += removed;
		batches++;
	}
	if (e != LH_OK)
		LOG(LOG_WARN, "retention",
		    "err=%s removed=%zu the pass stopped; the next one retries", err_code(e),
		    total);
	else if (total > 0)
		LOG(LOG_INFO, "retention", "removed=%zu batches=%zu ms=%lld before=%lld pass done",
		    total, batches, (long long)((util_mono_us() - t0) / 1000), (long long)before);
}

static void *retention_main(void *arg)
{
	struct retention *r = arg;
	pthread_setname_np(pthread_self(), "lh-retention");
	while (!nap(r, r->interval_ms))
		pass(r);
	return NULL;
}

enum lh_err retention_start(struct store *st, int64_t retention_ms, struct retention **out)
{
	assert(retention_ms > 0);
	struct retention *r = calloc(1, sizeof *r);
	pthread_condattr_t ca;
	if (!r)
		return LH_ENOMEM;
	r->st = st;
	r->retention_ms = retention_ms;
	r->interval_ms = retention_interval_ms(retention_ms);
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&r->thread, NULL, retention_main, r) != 0) {
		pthread_mutex_destroy(&r->mu);
		pthread_cond_destroy(&r->cv);
		free(r);
		return LH_EIO;
	}
	LOG(LOG_INFO, "retention", "retention_ms=%lld interval_ms=%lld sweeping",
	    (long long)retention_ms, (long long)r->interval_ms);
	*out = r;
	return LH_OK;
}

void retention_stop(struct retention *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = 1;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
}
