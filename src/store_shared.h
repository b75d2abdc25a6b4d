/* store_shared.h: what every store backend does the same way, without SQL: the rules of a
 * subscription update, how a new delivery reaches the group commit, and the tables and
 * checks of a copy from one store into another (store_copy_tables is declared in store.h).
 *
 * Pure functions over the caller's records (store_fresh_delivery also hands the delivery to
 * the writer, from inside a job on the writer thread). Thread-safe.
 */
#ifndef LH_STORE_SHARED_H
#define LH_STORE_SHARED_H

#include "store.h"
#include "store_writer.h"

/* Applies sub_update's change to cur, the row as read inside the update's transaction: the
 * fields named in `fields` (SUBF_*) and updated_at take want's values; SUBF_SECRET rotates
 * (cur's secret becomes the previous one, until want->prev_secret_until); a disabled
 * subscription made active again starts its failures over. */
void store_sub_apply(struct subscription *cur, const struct subscription *want, unsigned fields);

/* Fills d with the new, pending delivery of ev to sub_id (ev's seq is seq), first due when
 * the event was made. */
void store_delivery_new(struct delivery *d, const struct event *ev, const char *delivery_id,
                        const char *sub_id, int64_t seq);

/* Hands d, a delivery the open job created, to the writer (writer_fresh_push) with a copy of
 * its event's payload when that is at most DELIVERY_PAYLOAD_INLINE bytes, so the engine
 * sends it from memory without reading it back (NULL when larger, or out of memory). A
 * NULL payload hands it over without one. */
enum lh_err store_fresh_delivery(struct store_writer *w, struct delivery *d, const char *payload);

/* ---- retention (store_ops.retention_sweep) ---- */

/* One batch of a retention pass, as a job of the group commit: the backend's job reads
 * cur, removes what the batch lets go, adds the rows removed to removed and moves cur on
 * with store_sweep_advance. The caller's cursor is written only when the job succeeded. */
struct store_sweep_job {
	int64_t before; /* unix s: what finished (or, for events, was created) before goes */
	size_t batch;
	struct retention_cursor cur;
	size_t removed;
};

/* store_ops.retention_sweep over the backend's job (which runs a store_sweep_job): submits
 * it to s's group commit; cur and *removed are written only on LH_OK. LH_EINVAL for a
 * batch of 0 or a pass already done. */
enum lh_err store_sweep_submit(struct store *s, store_tx_fn job, int64_t before, size_t batch,
                               struct retention_cursor *cur, size_t *removed);

/* Moves the pass on past a page of n rows of at most batch (deliveries, or events once
 * cur->events is set), whose last row, when n > 0, is (id, seq, created_at). A phase ends
 * with a page that is not full or that reached a row created at or after `before` (rows
 * are walked in creation order, and nothing created since can be old enough). */
void store_sweep_advance(struct retention_cursor *cur, size_t n, size_t batch, const char *id,
                         int64_t seq, int64_t created_at, int64_t before);

/* ---- moving a store (store_ops.export_rows and import_from) ---- */

/* Makes v, the value of column col of an exported row of table, what the importing
 * backend inserts: a STORE_COL_TEXT_NULL column's "" becomes NULL, a hash column's value
 * bytes. LH_EINVAL (logged, naming the table and column) for a value its column cannot
 * hold: NULL where the column takes none, an integer column's text that is not one. */
enum lh_err store_copy_value(size_t table, size_t col, struct store_val *v);

/* The first n column names of t, comma-separated ("a, b, c"), into out (cap bytes: the
 * longest list fits in STORE_COPY_NAMES_CAP). */
#define STORE_COPY_NAMES_CAP 512
void store_copy_names(const struct store_table *t, size_t n, char *out, size_t cap);

/* LH_OK if a table's rows have the ncols columns store_copy_tables names, else LH_ESTORE
 * with a log line: a column the list lacks would not be copied. */
enum lh_err store_copy_columns(size_t table, size_t ncols);

/* LH_OK if the target's count of every table is the count exported, else LH_ESTORE with a
 * log line per table that differs. */
enum lh_err store_copy_check(const int64_t exported[STORE_COPY_NTABLES],
                             const int64_t target[STORE_COPY_NTABLES]);

/* The refusal of an import into a store whose table holds rows: logs it, LH_ECONFLICT. */
enum lh_err store_copy_refuse(size_t table, int64_t rows);

#endif
