/* store_writer.c: see store_writer.h. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "store_writer.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* A queued change. Synchronous submitters wait on cv (their own, so a finished batch wakes
 * only its submitters); asynchronous ones are told through done and the job is freed. */
struct job {
	store_tx_fn fn;
	void *arg;
	enum lh_err result;
	int done;
	pthread_cond_t cv;
	store_done_fn on_done; /* NULL: a waiting submitter */
	void *done_arg;
	int bare;  /* runs without a savepoint of its own (writer_submit_bare) */
	int rerun; /* may run again after a rollback (STORE_JOB_RERUN) */
	struct job *next;
};

struct store_writer {
	const struct writer_backend *ops;
	void *be;
	struct store_tx *tx;
	/* The queue, under qmu. */
	pthread_mutex_t qmu;
	pthread_cond_t qcv;
	struct job *qhead, *qtail;
	int stopping;
	pthread_t thread;
	/* Deliveries created in the open batch; only the writer thread touches them. */
	struct delivery *fresh;
	size_t nfresh, cap_fresh;
	/* Events written in the open batch, by type (webhook.test events are not counted),
	 * counted in the metrics once the batch is durable; only the writer thread touches
	 * them. */
	uint64_t events[EV__COUNT];
	/* Batches left to run with a savepoint per job after one run without them failed
	 * (writer thread only; see run_batch). */
	int careful;
	/* The completer: asynchronous jobs whose batch is over, told on a thread of their own
	 * (lh-writer-done) so that the next batch does not wait for their callbacks (each
	 * resumes a connection: 6% of the writer's time per bill). Under dmu. */
	pthread_t done_thread;
	pthread_mutex_t dmu;
	pthread_cond_t dcv;
	struct job *dhead, *dtail;
	int dstop;
	/* The commit hook, under hook_mu (held while it runs). */
	pthread_mutex_t hook_mu;
	store_commit_hook hook;
	void *hook_ctx;
};

enum lh_err writer_fresh_push(struct store_writer *w, const struct delivery *d)
{
	if (UTIL_GROW(w->fresh, w->cap_fresh, w->nfresh + 1, 256))
		return LH_ENOMEM;
	w->fresh[w->nfresh++] = *d;
	assert(w->nfresh <= w->cap_fresh);
	return LH_OK;
}

void writer_event_made(struct store_writer *w, int type)
{
	if (type >= 0 && type < EV__COUNT)
		w->events[type]++;
}

/* Drops the fresh deliveries from `from` on (their job or the batch was undone). */
static void fresh_cut(struct store_writer *w, size_t from)
{
	assert(from <= w->nfresh);
	for (size_t i = from; i < w->nfresh; i++)
		free(w->fresh[i].payload);
	w->nfresh = from;
}

void writer_set_hook(struct store_writer *w, store_commit_hook fn, void *ctx)
{
	pthread_mutex_lock(&w->hook_mu);
	w->hook = fn;
	w->hook_ctx = ctx;
	pthread_mutex_unlock(&w->hook_mu);
}

void writer_notify(struct store_writer *w, const struct store_news *news)
{
	struct store_news copy = *news; /* the hook may not change the caller's */
	assert(copy.nfresh == 0);       /* only the writer hands deliveries over */
	pthread_mutex_lock(&w->hook_mu);
	if (w->hook)
		w->hook(w->hook_ctx, &copy);
	pthread_mutex_unlock(&w->hook_mu);
}

/* A batch of re-runnable jobs runs without a savepoint per job; after a failure of one,
 * this many batches run with them before that is tried again. */
#define CAREFUL_BATCHES 16

/* Whether every job of the batch may be run again after a rollback (and none is bare). */
static int all_rerun(const struct job *batch)
{
	for (const struct job *j = batch; j; j = j->next)
		if (!j->rerun || j->bare)
			return 0;
	return 1;
}

/* Runs the batch's jobs in the open transaction (e: begin's outcome). careful: each job
 * inside its own savepoint, so a job's failure undoes only its changes; else none, and the
 * first failure stops the run with *again set (the caller rolls back and runs them again,
 * carefully). Returns the error that fails the rest of the batch, LH_OK if none. */
static enum lh_err run_jobs(struct store_writer *w, struct job *batch, enum lh_err e, int careful,
                            size_t *njobs, int *again)
{
	const struct writer_backend *ops = w->ops;
	*njobs = 0;
	*again = 0;
	for (struct job *j = batch; j; j = j->next) {
		if (e != LH_OK) {
			j->result = e;
			continue;
		}
		if (!careful || j->bare) {
			/* No savepoint: on SQLite each statement's journal is truncated back to the
			 * open savepoint's size by walking it from its start, so a job of hundreds
			 * of statements inside one was quadratic (a third of the writer's time
			 * recording outcomes); and a savepoint copies each page the job changes
			 * first, a dozen pages a bill. What a bare job did before a failure stays.
			 */
			size_t mark = w->nfresh;
			j->result = j->fn(w->tx, j->arg);
			assert(!j->bare ||
			       w->nfresh == mark); /* a bare job makes no deliveries... */
			(void)mark;
			(*njobs)++;
			if (!careful && j->result != LH_OK) {
				*again = 1;
				return j->result;
			}
		} else if ((j->result = ops->savepoint(w->be)) == LH_OK) {
			size_t mark = w->nfresh;
			uint64_t events_mark[COUNTOF(w->events)];
			memcpy(events_mark, w->events, sizeof events_mark);
			j->result = j->fn(w->tx, j->arg);
			assert(w->nfresh >= mark); /* a job only adds deliveries */
			if (j->result != LH_OK) {
				/* Its deliveries and its events are gone with it. */
				ops->rollback_to(w->be);
				fresh_cut(w, mark);
				memcpy(w->events, events_mark, sizeof events_mark);
			}
			ops->release(w->be);
			(*njobs)++;
		}
		/* A failure inside a statement (an I/O error, a full disk, a lost connection) may
		 * roll back the whole transaction, not only the job's savepoint: the jobs before
		 * this one are gone too. Fail the rest of the batch; the commit is not tried. */
		if (!ops->in_tx(w->be))
			e = j->result != LH_OK && err_http_status(j->result) >= 500 ? j->result
			                                                            : LH_ESTORE;
	}
	/* What the backend held back fails some job of the batch, perhaps not the last. */
	if (!careful && e == LH_OK && ops->flush && (e = ops->flush(w->be)) != LH_OK)
		*again = 1;
	return e;
}

/* Runs one batch in one transaction; one commit (one sync) makes all of it durable. */
static void run_batch(struct store_writer *w, struct job *batch)
{
	const struct writer_backend *ops = w->ops;
	int64_t t0 = util_mono_us(), t1;
	size_t njobs = 0;
	assert(batch);
	/* The previous batch handed its fresh deliveries over or freed them. */
	assert(w->nfresh == 0);
	int careful = w->careful > 0 || !all_rerun(batch);
	if (w->careful > 0)
		w->careful--;
	int again;
	enum lh_err e = run_jobs(w, batch, ops->begin(w->be, !careful), careful, &njobs, &again);
	if (again) {
		/* A job failed with no savepoint to undo only it: undo everything and run the
		 * batch again, each job inside its own. */
		ops->end(w->be, e);
		fresh_cut(w, 0);
		memset(w->events, 0, sizeof w->events);
		w->careful = CAREFUL_BATCHES;
		e = run_jobs(w, batch, ops->begin(w->be, 0), 1, &njobs, &again);
	}
	t1 = util_mono_us();
	int committing = e == LH_OK;
	e = ops->end(w->be, e);
	if (e != LH_OK) {
		fresh_cut(w, 0);
		for (struct job *j = batch; j; j = j->next)
			if (j->result == LH_OK)
				j->result = e; /* nothing of theirs was kept */
	} else {
		for (int t = 0; t < EV__COUNT; t++)
			if (w->events[t])
				metrics_events(t, w->events[t]);
	}
	memset(w->events, 0, sizeof w->events);
	if (committing)
		metrics_batch(njobs, util_mono_us() - t1);
	assert(njobs <= WRITER_BATCH_MAX);
	LOG(LOG_DEBUG, "store", "jobs=%zu work_us=%lld commit_us=%lld batch committed", njobs,
	    (long long)(t1 - t0), (long long)(util_mono_us() - t1));
	/* Durable now: the first attempts can start at once (no polling). */
	if (w->nfresh) {
		pthread_mutex_lock(&w->hook_mu);
		if (w->hook) {
			struct store_news news = {.fresh = w->fresh, .nfresh = w->nfresh};
			w->hook(w->hook_ctx, &news); /* takes the payloads */
			w->nfresh = 0;
		}
		pthread_mutex_unlock(&w->hook_mu);
	}
	fresh_cut(w, 0);
}

static void *done_main(void *arg)
{
	struct store_writer *w = arg;
	pthread_setname_np(pthread_self(), "lh-writer-done");
	pthread_mutex_lock(&w->dmu);
	for (;;) {
		while (!w->dhead && !w->dstop)
			pthread_cond_wait(&w->dcv, &w->dmu);
		struct job *list = w->dhead;
		if (!list)
			break; /* stopping, and every callback ran */
		w->dhead = w->dtail = NULL;
		pthread_mutex_unlock(&w->dmu);
		for (struct job *j = list, *next; j; j = next) {
			next = j->next;
			j->on_done(j->done_arg, j->result);
			free(j);
		}
		pthread_mutex_lock(&w->dmu);
	}
	pthread_mutex_unlock(&w->dmu);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct store_writer *w = arg;
	pthread_setname_np(pthread_self(), "lh-writer");
	for (;;) {
		pthread_mutex_lock(&w->qmu);
		while (!w->qhead && !w->stopping)
			pthread_cond_wait(&w->qcv, &w->qmu);
		if (!w->qhead && w->stopping) {
			pthread_mutex_unlock(&w->qmu);
			return NULL;
		}
		struct job *batch = w->qhead, *last = batch;
		for (int k = 1; k < WRITER_BATCH_MAX && last->next; k++)
			last = last->next;
		w->qhead = last->next;
		if (!w->qhead)
			w->qtail = NULL;
		last->next = NULL;
		assert(!w->qhead == !w->qtail);
		pthread_mutex_unlock(&w->qmu);

		run_batch(w, batch);

		/* Asynchronous submitters to the completer, in order; then the waiting ones. */
		struct job *waiting = NULL, *told = NULL, *told_last = NULL;
		for (struct job *j = batch, *next; j; j = next) {
			next = j->next;
			j->next = NULL;
			if (j->on_done) {
				if (told_last)
					told_last->next = j;
				else
					told = j;
				told_last = j;
			} else {
				j->next = waiting;
				waiting = j;
			}
		}
		if (told) {
			pthread_mutex_lock(&w->dmu);
			if (w->dtail)
				w->dtail->next = told;
			else
				w->dhead = told;
			w->dtail = told_last;
			pthread_cond_signal(&w->dcv);
			pthread_mutex_unlock(&w->dmu);
		}
		if (!waiting)
			continue;
		pthread_mutex_lock(&w->qmu);
		for (struct job *j = waiting, *next; j; j = next) {
			next = j->next; /* j belongs to its submitter once done is set */
			j->done = 1;
			pthread_cond_signal(&j->cv);
		}
		pthread_mutex_unlock(&w->qmu);
	}
}

/* Appends j to the queue (caller holds qmu); fails once the writer is stopping. */
static int enqueue(struct store_writer *w, struct job *j)
{
	if (w->stopping)
		return 0;
	assert(!j->next && !w->qhead == !w->qtail);
	if (w->qtail)
		w->qtail->next = j;
	else
		w->qhead = j;
	w->qtail = j;
	pthread_cond_signal(&w->qcv);
	return 1;
}

void writer_submit_async(struct store_writer *w, store_tx_fn fn, void *arg, unsigned flags,
                         store_done_fn done, void *done_arg)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j) {
		done(done_arg, LH_ENOMEM);
		return;
	}
	j->fn = fn;
	j->arg = arg;
	j->rerun = (flags & STORE_JOB_RERUN) != 0;
	j->on_done = done;
	j->done_arg = done_arg;
	pthread_mutex_lock(&w->qmu);
	int queued = enqueue(w, j);
	pthread_mutex_unlock(&w->qmu);
	if (!queued) {
		free(j);
		done(done_arg, LH_ESTORE);
	}
}

static enum lh_err submit(struct store_writer *w, store_tx_fn fn, void *arg, int bare)
{
	struct job j = {.fn = fn, .arg = arg, .result = LH_ESTORE, .bare = bare};
	pthread_cond_init(&j.cv, NULL);
	pthread_mutex_lock(&w->qmu);
	if (!enqueue(w, &j)) {
		pthread_mutex_unlock(&w->qmu);
		pthread_cond_destroy(&j.cv);
		return LH_ESTORE;
	}
	while (!j.done)
		pthread_cond_wait(&j.cv, &w->qmu);
	pthread_mutex_unlock(&w->qmu);
	pthread_cond_destroy(&j.cv);
	return j.result;
}

enum lh_err writer_submit(struct store_writer *w, store_tx_fn fn, void *arg)
{
	return submit(w, fn, arg, 0);
}

enum lh_err writer_submit_bare(struct store_writer *w, store_tx_fn fn, void *arg)
{
	return submit(w, fn, arg, 1);
}

/* Stops the completer once it has told every job handed to it. */
static void done_stop(struct store_writer *w)
{
	pthread_mutex_lock(&w->dmu);
	w->dstop = 1;
	pthread_cond_signal(&w->dcv);
	pthread_mutex_unlock(&w->dmu);
	pthread_join(w->done_thread, NULL);
}

static void writer_free(struct store_writer *w)
{
	free(w->fresh);
	pthread_mutex_destroy(&w->qmu);
	pthread_cond_destroy(&w->qcv);
	pthread_mutex_destroy(&w->hook_mu);
	pthread_mutex_destroy(&w->dmu);
	pthread_cond_destroy(&w->dcv);
	free(w);
}

enum lh_err writer_start(const struct writer_backend *ops, void *be, struct store_tx *tx,
                         struct store_writer **out)
{
	struct store_writer *w = calloc(1, sizeof *w);
	if (!w)
		return LH_ENOMEM;
	w->ops = ops;
	w->be = be;
	w->tx = tx;
	pthread_mutex_init(&w->qmu, NULL);
	pthread_cond_init(&w->qcv, NULL);
	pthread_mutex_init(&w->hook_mu, NULL);
	pthread_mutex_init(&w->dmu, NULL);
	pthread_cond_init(&w->dcv, NULL);
	if (pthread_create(&w->done_thread, NULL, done_main, w) != 0) {
		writer_free(w);
		return LH_EIO;
	}
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		done_stop(w);
		writer_free(w);
		return LH_EIO;
	}
	*out = w;
	return LH_OK;
}

void writer_stop(struct store_writer *w)
{
	if (!w)
		return;
	/* Jobs already queued still run: their submitters are waiting for them. */
	pthread_mutex_lock(&w->qmu);
	w->stopping = 1;
	pthread_cond_signal(&w->qcv);
	pthread_mutex_unlock(&w->qmu);
	pthread_join(w->thread, NULL);
	done_stop(w); /* after the writer: the callbacks of its last batches run first */
	writer_free(w);
}
