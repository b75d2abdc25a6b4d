/* store_writer.h: the group commit every store backend shares.
 *
 * Submitters queue jobs (store_tx_fn); one writer thread takes up to WRITER_BATCH_MAX of them
 * (asynchronous submitters are told by a second thread, lh-writer-done, in commit order)
 * and runs them in one transaction, each inside its own savepoint, so a refused job undoes
 * only itself and one commit (one sync) makes the whole batch durable. A batch of jobs
 * that may run twice (STORE_JOB_RERUN) runs without the savepoints, and again with them
 * only when one of its jobs failed. The deliveries a
 * batch created (writer_fresh_push, from inside a job) go to the commit hook once the
 * commit is durable; a batch that failed hands over nothing.
 *
 * The backend supplies the transaction primitives (struct writer_backend) and its struct
 * store_tx; this module has no SQL and knows no backend (it includes store.h only). The
 * hook is called under the writer's hook lock, so once writer_set_hook(w, NULL, NULL) has
 * returned it is never called again. Lock order: the backend's locks, then the hook lock,
 * then whatever the hook takes. All functions are thread-safe.
 */
#ifndef LH_STORE_WRITER_H
#define LH_STORE_WRITER_H

#include <stddef.h>

#include "store.h"

#define WRITER_BATCH_MAX 1024

/* The transaction primitives of a backend. `be` is the backend's own state. */
struct writer_backend {
	/* Opens the batch's transaction (and takes whatever lock the backend's connection
	 * needs, held until end). may_hold: every job of the batch may run again, and the
	 * failure of any rolls the batch back to run it again with a savepoint per job; so a
	 * backend may hold back writes whose results no caller waits for and report their
	 * failure late, to a later statement of any job (as a store error, never as that
	 * job's own refusal) or at flush. So a job that may run again returns every store
	 * error it gets. */
	enum lh_err (*begin)(void *be, int may_hold);
	/* A savepoint around one job; rollback_to undoes the job's changes, release ends it. */
	enum lh_err (*savepoint)(void *be);
	enum lh_err (*rollback_to)(void *be);
	enum lh_err (*release)(void *be);
	/* After the jobs of a may_hold batch (NULL: nothing is ever held): what the backend
	 * held back is answered now. An error means some job failed: the batch runs again. */
	enum lh_err (*flush)(void *be);
	/* 1 while the batch's transaction is still open: an I/O error or a lost connection
	 * inside a job may have rolled all of it back, and then the rest of the batch fails. */
	int (*in_tx)(void *be);
	/* Commits when e is LH_OK, else rolls back; returns the outcome. Leaves no transaction
	 * open and releases what begin took. Called once per begin that succeeded, and also
	 * after a begin that failed (with its error), so the backend can clean up. */
	enum lh_err (*end)(void *be, enum lh_err e);
};

struct store_writer;

/* Starts the writer thread. tx is what jobs get; it and be must outlive the writer.
 * Returns owned, stop with writer_stop. */
enum lh_err writer_start(const struct writer_backend *ops, void *be, struct store_tx *tx,
                         struct store_writer **out);
/* Runs the jobs already queued (their submitters are waiting), refuses new ones (LH_ESTORE),
 * joins the thread and frees the writer. Accepts NULL. */
void writer_stop(struct store_writer *w);

/* store_ops.submit and submit_async (see store.h). */
enum lh_err writer_submit(struct store_writer *w, store_tx_fn fn, void *arg);
/* writer_submit for a job whose statements each stand alone, so that what it did before a
 * failure may stay (each recorded outcome, for instance): it runs without a savepoint,
 * which on SQLite costs time growing with what the savepoint holds. It may not push fresh
 * deliveries or count events (they could not be undone with it). On PostgreSQL a failed
 * statement aborts the whole batch anyway. */
enum lh_err writer_submit_bare(struct store_writer *w, store_tx_fn fn, void *arg);
void writer_submit_async(struct store_writer *w, store_tx_fn fn, void *arg, unsigned flags,
                         store_done_fn done, void *done_arg);

/* store_ops.set_commit_hook. */
void writer_set_hook(struct store_writer *w, store_commit_hook fn, void *ctx);
/* From inside a job: hands d to the hook once the batch is durable (takes d->payload, which
 * is freed if the job or the batch fails). LH_ENOMEM leaves d->payload to the caller. */
enum lh_err writer_fresh_push(struct store_writer *w, const struct delivery *d);
/* From inside a job: an event of type (enum event_type; anything else, such as
 * EV_WEBHOOK_TEST, is not counted) was written. Counted in labhook_events_total once the
 * batch is durable, unless the job or the batch fails. */
void writer_event_made(struct store_writer *w, int type);
/* Passes news (no fresh deliveries: those come from batches) to the hook: a subscription
 * changed, or another node committed deliveries. Call it once the change is visible to
 * readers, from any thread. */
void writer_notify(struct store_writer *w, const struct store_news *news);

#endif
