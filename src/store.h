/* store.h: the one interface to persistent state. Every SQL statement lives behind it.
 *
 * A backend (store_sqlite.c, store_pg.c) fills a struct store_ops; callers above this line
 * never see SQL, connections or transactions. Invariants every backend keeps:
 * - a function that returns LH_OK has made its change durable (synced) before returning;
 * - multi-row changes are atomic; out-parameters are written only on LH_OK;
 * - at most one live (active or paused) subscription holds an event for one (lab, party):
 *   an insert or update that would break this returns LH_ECONFLICT and changes nothing.
 * All functions are safe to call from any thread; the backend serialises as it needs.
 * Records are plain values with fixed-size fields: the caller owns them, nothing to free
 * except arrays returned by *_list functions (free with free()).
 *
 * What the delivery engine relies on, and how each backend keeps it:
 * - event_seq is the commit order: once a reader has seen an event with seq N, no event
 *   with a smaller seq is committed later. The engine reads a subscription's backlog
 *   "after seq N" (delivery_pending) and would otherwise skip what commits late. SQLite:
 *   one writer per file. A shared backend: event-writing transactions take their seqs
 *   under a lock held until they commit.
 * - The commit hook hears of every change the engine must act on: deliveries created or
 *   made pending again (requeue, recover) and subscription changes. SQLite: its own
 *   commits are all there are. A shared backend also passes on what other nodes commit
 *   (LISTEN/NOTIFY, and a re-read after every reconnection, when notifications are lost).
 * - subs_version changes after every subscription change, this process's or another's.
 * - Lookups are exact: a change is seen by the next read. SQLite serves accounts, labs and
 *   the routing index from memory, exact because this process is the file's only writer.
 *   A shared backend routes inside the event's transaction from the database, and keeps
 *   no cache that another node's change could leave stale for longer than the API allows
 *   (an account at most 0.5 s: a secret rotated on one node is refused on every node
 *   within 1 s); what never changes (a lab) may be kept.
 */
#ifndef LH_STORE_H
#define LH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "util.h"

#define NAME_CAP          201  /* display names: 200 bytes */
#define ENDPOINT_CAP      2049 /* API.md 4.1: at most 2048 bytes */
#define AUTHTOKEN_CAP     4097
#define SECRET_CAP        80
#define STORE_MAX_PARTIES 7 /* party ids one event may route to (a bill has two) */

enum account_mode { MODE_CATCH_ALL = 0, MODE_PARTY_SCOPED = 1 };
enum party_kind { PARTY_NONE = 0, PARTY_CORPORATE_USER = 1, PARTY_ORGANIZATION = 2 };
enum sub_status { SUB_ACTIVE = 0, SUB_PAUSED, SUB_DISABLED, SUB_DELETED };

struct account {
	char client_id[ID_CAP];
	char name[NAME_CAP];
	enum account_mode mode;
	unsigned char secret_hash[32];
	int64_t secret_version; /* bumped on rotation; access tokens carry it */
	int64_t created_at;
};

struct lab {
	char lab_id[ID_CAP];
	char client_id[ID_CAP];
	char name[NAME_CAP];
	int64_t created_at;
};

struct party {
	char party_id[ID_CAP];
	char client_id[ID_CAP];
	enum party_kind kind;
	char name[NAME_CAP];
	int64_t created_at;
};

struct subscription {
	char id[ID_CAP];
	char client_id[ID_CAP];
	char lab_id[ID_CAP];
	char party_id[ID_CAP]; /* "" on catch-all accounts */
	enum party_kind party_kind;
	unsigned events; /* bit set of enum event_type (events.h) */
	char endpoint[ENDPOINT_CAP];
	char auth_token[AUTHTOKEN_CAP]; /* "" when none */
	enum sub_status status;
	char secret[SECRET_CAP];
	char prev_secret[SECRET_CAP]; /* "" when none */
	int64_t prev_secret_until;    /* unix seconds the previous secret stops signing */
	int64_t created_at, updated_at;
	int64_t failing_since; /* unix seconds of the first failure since the last success */
};

/* The fields of a subscription that sub_update changes (a bit set). */
enum sub_field {
	SUBF_EVENTS = 1u << 0,
	SUBF_ENDPOINT = 1u << 1,
	SUBF_AUTH_TOKEN = 1u << 2,
	SUBF_STATUS = 1u << 3,
	SUBF_SECRET = 1u << 4, /* a rotation */
};

enum bill_status { BILL_PENDING = 0, BILL_COMPLETED, BILL_DELETED };
enum report_status { REPORT_PENDING = 0, REPORT_COMPLETED };
enum lead_phase { PHASE_LEAD = 0, PHASE_BOOKING };

#define DETAIL_CAP  8192 /* JSON text of patient details or a lead's fields */
#define CONTACT_CAP 16
#define EMAIL_CAP   255

/* The parties an entity carries (API.md 5.1); "" when absent. */
struct parties {
	char corporate_user[ID_CAP];
	char referred_org[ID_CAP];
	char referred_hospital_org[ID_CAP];
};

struct bill {
	char bill_id[ID_CAP];
	char client_id[ID_CAP];
	char lab_id[ID_CAP];
	char integrator_id[NAME_CAP];
	char pre_booking_id[ID_CAP];
	char bar_code[NAME_CAP]; /* "" when none */
	char lead_source[NAME_CAP];
	enum bill_status status;
	struct parties parties;
	char patient[DETAIL_CAP]; /* JSON object text */
	int64_t created_at, updated_at;
};

struct report {
	char report_id[ID_CAP];
	char bill_id[ID_CAP];
	int seq;
	char name[NAME_CAP];
	char package[NAME_CAP]; /* "" when not from a package */
	enum report_status status;
	int64_t completed_at;
};

/* A report's document (the lab's PDF), stored in chunks of REPORT_CHUNK bytes numbered
 * from 0, so that it is written and read a piece at a time. version starts at 1 and is
 * bumped each time the document is replaced. */
#define REPORT_CHUNK     (256 * 1024)
#define REPORT_CTYPE_CAP 64
struct report_doc {
	char bill_id[ID_CAP];
	char report_id[ID_CAP];
	char content_type[REPORT_CTYPE_CAP];
	int64_t size;
	unsigned char sha256[32];
	int64_t version;
	int64_t updated_at;
};

/* What report_doc_get finds: the report, whose bill it is, and its document if any. */
struct report_doc_info {
	char client_id[ID_CAP]; /* the bill's account */
	enum bill_status bill_status;
	int has_doc; /* 0: the report exists but has no document (doc is zeros) */
	struct report_doc doc;
};

struct lead {
	char lead_id[ID_CAP];
	char client_id[ID_CAP];
	char lab_id[ID_CAP];
	char integrator_id[NAME_CAP];
	enum lead_phase phase;
	char contact[CONTACT_CAP];
	char email[EMAIL_CAP];   /* lower-cased; "" when none */
	char day[11];            /* UTC YYYY-MM-DD of creation, for the same-day rule */
	char booking_id[ID_CAP]; /* "" until booked */
	struct parties parties;
	char data[DETAIL_CAP]; /* JSON object text of the lead's fields */
	int64_t created_at;
};

struct booking {
	char booking_id[ID_CAP];
	char lead_id[ID_CAP];
	char client_id[ID_CAP];
	char lab_id[ID_CAP];
	char integrator_id[NAME_CAP];
	char booking_type[NAME_CAP];
	char scheduled_at[32]; /* RFC 3339 */
	struct parties parties;
	int64_t created_at;
};

/* ---- a lab's catalog (API.md 9): tests and packages with prices, and rates per party ----
 * Items are keyed by (lab, kind, id); ids have the shape of our path ids (letters, digits,
 * '_' and '-', shorter than ID_CAP). Prices are minor units (1/100 of the currency). */
enum catalog_kind { CATALOG_TEST = 0, CATALOG_PACKAGE = 1 };
#define CATALOG_ANY       (-1)
#define CATALOG_PKG_TESTS 200            /* tests one package may hold */
#define CATALOG_PRICE_MAX 100000000000LL /* 1,000,000,000.00 in minor units */

struct catalog_item {
	char lab_id[ID_CAP];
	enum catalog_kind kind;
	char id[ID_CAP];
	char name[NAME_CAP];
	int64_t price;
	int64_t party_price; /* listed with a party: its rate, else -1 */
	int64_t updated_at;
};

/* A test of a package: package_id's test test_id, at position seq; name is the test's
 * (filled by reads, ignored by writes). */
struct catalog_member {
	char package_id[ID_CAP];
	char test_id[ID_CAP];
	char name[NAME_CAP];
};

/* An event as committed; payload is the JSON text sent to every endpoint. */
struct event {
	char event_id[ID_CAP];
	char client_id[ID_CAP];
	char lab_id[ID_CAP];
	int type;               /* enum event_type */
	char entity_id[ID_CAP]; /* the bill or lead/booking it is about: the ordering key */
	const char *payload;    /* borrowed */
	int64_t created_at;
};

enum delivery_status { DLV_PENDING = 0, DLV_DELIVERED, DLV_FAILED, DLV_CANCELLED };

/* A delivery: one event to one subscription. Ordered per (sub_id, entity_id) by event_seq. */
struct delivery {
	char delivery_id[ID_CAP];
	char event_id[ID_CAP];
	char sub_id[ID_CAP];
	char entity_id[ID_CAP];
	int64_t event_seq;
	int event_type;
	enum delivery_status status;
	int attempts;
	int64_t next_at_ms;
	char last_error[64];
	int64_t created_at;
	int requeued; /* set on deliveries handed back by requeue/recover, not fresh commits */
	/* The event's payload, for the delivery engine: set by delivery_pending and on the
	 * deliveries a one-node store hands to the commit hook, NULL elsewhere (on a shared
	 * store, whose engine reads fresh deliveries back from it, and when over
	 * DELIVERY_PAYLOAD_INLINE bytes). Owned by whoever holds the record: free() it. */
	char *payload;
};

#define DELIVERY_PAYLOAD_INLINE 16384

/* A subscription id, as listed by delivery_pending_subs. */
struct sub_ref {
	char sub_id[ID_CAP];
};

/* A subscription whose pending deliveries another node's commit changed. */
struct sub_news {
	char sub_id[ID_CAP];
	int rescan; /* 1: older deliveries were made pending again (retry, recover): read its
	             * backlog from the start; 0: new ones were committed past what was read */
};

/* This node's right to send a subscription's deliveries (see lease_sync). */
struct lease {
	char sub_id[ID_CAP];
	int64_t epoch; /* bumped whenever the lease changes hands: outcomes carry it */
};

#define ATTEMPT_BODY_CAP 256 /* the start of an endpoint's answer kept in the log */

struct attempt {
	char delivery_id[ID_CAP];
	int n;
	int64_t started_at_ms;
	int duration_ms;
	int status_code; /* 0 when no HTTP answer */
	char error[32];  /* "" on success, else timeout, dns, connect, tls, http_500, ... */
	char response[ATTEMPT_BODY_CAP];
};

enum sub_outcome { SUBO_NONE = 0, SUBO_SUCCESS, SUBO_FAILURE, SUBO_DISABLE };

/* What the delivery engine records after an attempt. */
struct delivery_result {
	struct attempt a;
	enum delivery_status status; /* new status of the delivery */
	int64_t next_at_ms;          /* when pending: the next attempt */
	char sub_id[ID_CAP];
	enum sub_outcome sub; /* how the attempt changes its subscription */
	int64_t now;          /* unix seconds of the outcome */
	int64_t epoch;        /* the lease the attempt was made under (0 on a one-node store) */
};

/* Where a retention pass has got to (retention_sweep): zero it to start a pass. The
 * deliveries are walked first, in delivery_id order (ids are time-ordered), then the
 * events, in seq order. */
struct retention_cursor {
	char delivery_id[ID_CAP]; /* the last delivery examined ("" = none yet) */
	int64_t event_seq;        /* the last event examined (0 = none yet) */
	int events;               /* 1 once the deliveries are done: the events' turn */
	int done;                 /* 1 once the pass is complete */
};

/* What the commit hook hears; any part may be empty. */
struct store_news {
	/* Deliveries this process committed, new or pending again (requeue, recover), from
	 * the writer thread. The hook owns each fresh[i].payload from the call on (frees it
	 * or hands it on); the array itself stays the store's and is reused after the call. */
	struct delivery *fresh;
	size_t nfresh;
	/* Subscriptions with pending deliveries another node committed (a shared backend):
	 * they wait in the store, to be read with delivery_pending. */
	const struct sub_news *subs;
	size_t nsubs;
	/* A subscription changed, here or on another node: subs_version has moved. */
	int subs_changed;
	/* Other nodes' news may have been lost (the backend reconnected): every backlog is to
	 * be read again from its start. */
	int lost;
};

/* Called by the store after each commit the engine must hear of (see struct store_news),
 * from whichever thread made or heard of it, with the store's locks held: the hook must
 * not call the store, only note the news and return. This is how the engine hears of
 * changes without the API knowing it exists. */
typedef void (*store_commit_hook)(void *ctx, struct store_news *news);

/* A transaction handed to a store_tx_fn by store_ops.submit. Only valid inside the call. */
struct store_tx;

struct store_tx_ops {
	/* LH_ECONFLICT when the bar code is already used in the lab. */
	enum lh_err (*bill_insert)(struct store_tx *tx, const struct bill *b,
	                           const struct report *reports, size_t n);
	/* The bill and its reports (ordered; free *reports with free()). */
	enum lh_err (*bill_load)(struct store_tx *tx, const char *bill_id, struct bill *out,
	                         struct report **reports, size_t *n);
	enum lh_err (*bill_update)(struct store_tx *tx, const struct bill *b);
	enum lh_err (*report_update)(struct store_tx *tx, const struct report *r);
	/* The document of a report, LH_ENOTFOUND when it has none. */
	enum lh_err (*doc_meta)(struct store_tx *tx, const char *bill_id, const char *report_id,
	                        struct report_doc *out);
	/* Stores d (its bill_id, report_id, content_type, size = len, sha256, version,
	 * updated_at as given) with the bytes data[0..len) in chunks of REPORT_CHUNK, replacing
	 * any document the report had (all its chunks). data is borrowed for the call. */
	enum lh_err (*doc_put)(struct store_tx *tx, const struct report_doc *d, const void *data,
	                       size_t len);
	/* *dup = 1 if a lead of lab_id created on day has this contact or (non-empty) email. */
	enum lh_err (*lead_dup)(struct store_tx *tx, const char *lab_id, const char *day,
	                        const char *contact, const char *email, int *dup);
	enum lh_err (*lead_insert)(struct store_tx *tx, const struct lead *l);
	enum lh_err (*lead_load)(struct store_tx *tx, const char *lead_id, struct lead *out);
	enum lh_err (*lead_set_booking)(struct store_tx *tx, const char *lead_id,
	                                const char *booking_id);
	enum lh_err (*booking_insert)(struct store_tx *tx, const struct booking *b);
	/* Stores the event and one pending delivery per live subscription matching
	 * (lab, party, type) for party "" (catch-all) and each of the n party ids; a
	 * subscription matched twice gets one delivery. With only_sub set, the one delivery
	 * goes to that subscription instead (test events), or LH_ENOTFOUND if it is deleted
	 * (read inside the transaction, so a racing delete cannot strand the delivery).
	 * More than STORE_MAX_PARTIES party ids is LH_EINVAL (none is ever dropped).
	 * *ndeliveries gets the count. With ndeliveries NULL (and no only_sub), in a batch of
	 * jobs that may all run again (STORE_JOB_RERUN), a backend may send the statement
	 * without waiting for it: its failure then fails the batch's first run (see
	 * store_writer.h), and its deliveries reach the commit hook all the same. */
	enum lh_err (*event_insert)(struct store_tx *tx, const struct event *ev,
	                            const char *const *party_ids, size_t n, const char *only_sub,
	                            size_t *ndeliveries);
	/* *any = 1 if lab_id's catalog holds any item (test or package), else 0. */
	enum lh_err (*catalog_any)(struct store_tx *tx, const char *lab_id, int *any);
	/* The item (kind, id) of lab_id's catalog, LH_ENOTFOUND if none; for a package, with
	 * members non-NULL, its tests in order with their names (free *members with free()). */
	enum lh_err (*catalog_get)(struct store_tx *tx, const char *lab_id, enum catalog_kind kind,
	                           const char *id, struct catalog_item *out,
	                           struct catalog_member **members, size_t *n);
};

struct store_tx {
	const struct store_tx_ops *ops;
};

/* Runs inside the writer's transaction; returning an error undoes only this call's changes. */
typedef enum lh_err (*store_tx_fn)(struct store_tx *tx, void *arg);
/* Told the outcome of an asynchronous submit. */
typedef void (*store_done_fn)(void *done_arg, enum lh_err result);
/* submit_async's flag for a job that may run again after its transaction was rolled back:
 * a first run leaves nothing in arg that a second one trips over (counts it adds to are
 * reset, what it makes is made again or kept). The writer then runs a batch of such jobs
 * without a savepoint each, and again with them only if one of them fails. */
#define STORE_JOB_RERUN 1u

/* What GET /metrics shows of the store (store_ops.stats). */
struct store_stats {
	int64_t pending;           /* deliveries pending (waiting for an attempt or a retry) */
	int64_t subs[SUB_DELETED]; /* subscriptions by status: active, paused, disabled */
	int64_t bytes;             /* the store's size: the SQLite file's pages, the PostgreSQL
	                            * database's size */
};

/* Outcome of presenting a refresh token. */
enum refresh_result { REFRESH_OK = 0, REFRESH_UNKNOWN, REFRESH_EXPIRED, REFRESH_REUSED };

/* ---- moving a store to another backend (labhook store copy) ----
 * The tables a copy moves, the same in every backend (tables that exist in one backend
 * alone, such as PostgreSQL's nodes and leases, are not copied), listed in
 * store_copy_tables (store_shared.c) in an order where referenced rows come first. */
enum store_col_kind {
	STORE_COL_TEXT = 0,
	STORE_COL_INT,       /* a 64-bit integer, exported as decimal text */
	STORE_COL_BYTES,     /* a hash: BLOB, BYTEA */
	STORE_COL_TEXT_NULL, /* text, where NULL stands for "" (a bill's bar code) */
};

struct store_col {
	const char *name;
	enum store_col_kind kind;
};

struct store_table {
	const char *name;
	const struct store_col *cols;
	size_t ncols;
	/* The first nkey columns are the primary key: rows are exported in its order. */
	size_t nkey;
};

#define STORE_COPY_NTABLES 19
#define STORE_COPY_MAXCOLS 16 /* columns of the widest table */
extern const struct store_table store_copy_tables[STORE_COPY_NTABLES];

/* One value of an exported row: NULL, text (NUL-terminated; numbers as decimal text) or
 * bytes. Borrowed for the duration of the callback. */
enum store_val_kind { STORE_VAL_NULL = 0, STORE_VAL_TEXT, STORE_VAL_BYTES };
struct store_val {
	enum store_val_kind kind;
	const char *p;
	size_t len;
};

/* Told each exported row: table is an index into store_copy_tables, vals holds one value per
 * column in that table's order. An error stops the export, which returns it. */
typedef enum lh_err (*store_row_fn)(void *ctx, size_t table, const struct store_val *vals);

struct store;

struct store_ops {
	const char *name;
	void (*close)(struct store *s);

	/* Small shared key/value settings (e.g. the token signing key). Creates key with
	 * value if absent, then returns the stored value (so every node agrees). */
	enum lh_err (*meta_get_or_put)(struct store *s, const char *key, const char *value,
	                               char *out, size_t cap);
	/* Sets key to value, whether it was there or not (replacing the admin key). */
	enum lh_err (*meta_set)(struct store *s, const char *key, const char *value);

	enum lh_err (*account_insert)(struct store *s, const struct account *a);
	enum lh_err (*account_get)(struct store *s, const char *client_id, struct account *out);
	/* Accounts with client_id > after (""=start), ordered, at most limit. */
	enum lh_err (*account_list)(struct store *s, const char *after, size_t limit,
	                            struct account **out, size_t *n);
	/* Rotates the secret hash, bumps secret_version and revokes every refresh token. */
	enum lh_err (*account_set_secret)(struct store *s, const char *client_id,
	                                  const unsigned char hash[32], struct account *out);
	enum lh_err (*account_set_mode)(struct store *s, const char *client_id,
	                                enum account_mode mode, struct account *out);

	enum lh_err (*lab_insert)(struct store *s, const struct lab *l);
	/* The lab if it exists and belongs to client_id, else LH_ENOTFOUND. */
	enum lh_err (*lab_get)(struct store *s, const char *client_id, const char *lab_id,
	                       struct lab *out);
	enum lh_err (*lab_list)(struct store *s, const char *client_id, struct lab **out,
	                        size_t *n);
	/* The lab whatever its account (the admin side), else LH_ENOTFOUND. */
	enum lh_err (*lab_find)(struct store *s, const char *lab_id, struct lab *out);

	enum lh_err (*party_insert)(struct store *s, const struct party *p);
	enum lh_err (*party_get)(struct store *s, const char *client_id, const char *party_id,
	                         struct party *out);
	enum lh_err (*party_list)(struct store *s, const char *client_id, struct party **out,
	                          size_t *n);

	enum lh_err (*refresh_insert)(struct store *s, const unsigned char hash[32],
	                              const char *client_id, const char *family,
	                              int64_t expires_at);
	/* Atomically consumes the token with `hash` for client_id: if live and unexpired it is
	 * marked rotated and `new_hash` is inserted in its family (expiring at new_expires),
	 * giving REFRESH_OK. A rotated token revokes its whole family (REFRESH_REUSED). */
	enum lh_err (*refresh_rotate)(struct store *s, const unsigned char hash[32],
	                              const char *client_id, int64_t now,
	                              const unsigned char new_hash[32], int64_t new_expires,
	                              enum refresh_result *result);

	/* Inserts a subscription (status active or paused); LH_ECONFLICT if one of its events
	 * is held by another live subscription of the same (lab, party). */
	enum lh_err (*sub_insert)(struct store *s, const struct subscription *sub);
	/* Changes the fields named in `fields` (SUBF_*) of subscription sub->id of
	 * sub->client_id, and updated_at, to sub's values, in one transaction with the other
	 * fields as they are then: updates of different fields never undo each other.
	 * SUBF_SECRET rotates: sub->secret becomes the secret, and the secret it replaces the
	 * previous one, until sub->prev_secret_until. *out (may be NULL, may be sub) gets the
	 * row as written. LH_ENOTFOUND if it is deleted or not the client's; same conflict
	 * rule as sub_insert. */
	enum lh_err (*sub_update)(struct store *s, const struct subscription *sub, unsigned fields,
	                          struct subscription *out);
	/* The subscription if it belongs to client_id and is not deleted. */
	enum lh_err (*sub_get)(struct store *s, const char *client_id, const char *id,
	                       struct subscription *out);
	/* Live subscriptions of (lab, party) holding any event in `events`. */
	enum lh_err (*sub_list_holding)(struct store *s, const char *lab_id, const char *party_id,
	                                unsigned events, struct subscription **out, size_t *n);
	/* Non-deleted subscriptions of client_id, optionally filtered by lab ("" = any) and
	 * status (-1 = any), with id > after, ordered by id, at most limit. */
	enum lh_err (*sub_list)(struct store *s, const char *client_id, const char *lab_id,
	                        int status, const char *after, size_t limit,
	                        struct subscription **out, size_t *n);

	/* Group commit: runs fn inside a transaction shared with other concurrent submits and
	 * returns once that transaction is durable, with fn's result (or the commit's
	 * failure, in which case nothing of fn's is kept). */
	enum lh_err (*submit)(struct store *s, store_tx_fn fn, void *arg);
	/* The same without waiting: returns at once, and done(done_arg, result) is called
	 * exactly once when the transaction is durable (or failed), from a store thread or,
	 * if the job cannot be queued, before submit_async returns. done must be quick and
	 * must not call the store; fn and arg must stay valid until it is called. flags:
	 * STORE_JOB_RERUN or 0. */
	void (*submit_async)(struct store *s, store_tx_fn fn, void *arg, unsigned flags,
	                     store_done_fn done, void *done_arg);
	/* ---- the delivery engine's side ---- */
	/* Registers the commit hook (see store_commit_hook); NULL removes it. */
	void (*set_commit_hook)(struct store *s, store_commit_hook fn, void *ctx);
	/* Pending deliveries of sub_id with event_seq > after_seq, ordered by event_seq, at
	 * most limit, with their payloads (free each payload, then the array with free()).
	 * The engine reads each subscription's backlog on its own, so one subscription's
	 * backlog never decides what another gets. */
	enum lh_err (*delivery_pending)(struct store *s, int64_t after_seq, const char *sub_id,
	                                size_t limit, struct delivery **out, size_t *n);
	/* The subscriptions that have pending deliveries, ordered by id (free the array with
	 * free()). */
	enum lh_err (*delivery_pending_subs)(struct store *s, struct sub_ref **out, size_t *n);
	/* The payload of an event. Returns owned text, free with free(). */
	enum lh_err (*event_payload)(struct store *s, const char *event_id, char **out);
	/* Records attempt outcomes in one durable transaction (group commit). An outcome made
	 * under a lease this node no longer holds (its epoch is not the holder's) is left
	 * out: the delivery stays as the new holder records it. Each outcome stands alone: a
	 * failure part-way may keep the outcomes before it (and the failing one's delivery
	 * update without its attempt row); what is not recorded stays pending and is sent
	 * again, and an attempt row recorded twice is replaced. A subscription's disabling is
	 * recorded whole or not at all. */
	enum lh_err (*delivery_record)(struct store *s, const struct delivery_result *r, size_t n);
	/* A subscription by id whatever its account (deleted ones too). */
	enum lh_err (*sub_get_any)(struct store *s, const char *id, struct subscription *out);
	/* Bumped by every subscription change: caches compare it. */
	uint64_t (*subs_version)(struct store *s);
	/* ---- several nodes on one shared store: who sends a subscription's deliveries ----
	 * Each subscription's deliveries are sent by one node at a time, the holder of its
	 * lease. lease_sync renews this node's leases for lease_ms (on the store's clock),
	 * takes free and expired ones up to its share (the subscriptions over the live nodes,
	 * rounded up) and returns every lease it holds, ordered by sub_id (free with free()),
	 * and that share, and in *expiry_ms how long until the first lease another node holds
	 * runs out (-1: none), the moment it could be taken over. A store that only one node
	 * can use (SQLite) holds everything: *all is 1 and *n 0. A node must stop sending a
	 * subscription's deliveries before its lease can have expired, and delivery_record refuses
	 * outcomes whose epoch is not the current holder's (the fence that keeps a node that
	 * stalled from writing over the new holder's records). */
	enum lh_err (*lease_sync)(struct store *s, int64_t lease_ms, struct lease **out, size_t *n,
	                          size_t *share, int *all, int64_t *expiry_ms);
	/* Gives up this node's leases of the n subscriptions (over its share, or at stop), so
	 * another node takes them at its next lease_sync. */
	enum lh_err (*lease_release)(struct store *s, const struct lease *l, size_t n);
	/* Deliveries of a client's subscription, newest first, optionally by status (-1 any)
	 * and created at or after since (unix s), with delivery_id < before ("" = start). */
	enum lh_err (*delivery_list)(struct store *s, const char *client_id, const char *sub_id,
	                             int status, int64_t since, const char *before, size_t limit,
	                             struct delivery **out, size_t *n);
	enum lh_err (*attempt_list)(struct store *s, const char *delivery_id, struct attempt **out,
	                            size_t *n);
	/* Sets a client's delivery pending again, due at now_ms; *out gets it. */
	enum lh_err (*delivery_requeue)(struct store *s, const char *client_id,
	                                const char *delivery_id, int64_t now_ms,
	                                struct delivery *out);
	/* Sets every delivery of a client's subscription that failed at or after since (unix
	 * s) pending again, due at now_ms; returns them (free with free()). */
	enum lh_err (*delivery_recover)(struct store *s, const char *client_id, const char *sub_id,
	                                int64_t since, int64_t now_ms, struct delivery **out,
	                                size_t *n);

	/* ---- retention: what is old and finished goes ----
	 * Examines the next `batch` rows of a pass (cur says where it got to) and removes, in
	 * one short job of the group commit, those retention lets go: deliveries that are
	 * finished (delivered, failed, cancelled) and last changed before `before` (unix s),
	 * with their attempts; then, once the deliveries are done, events created before
	 * `before` that no delivery refers to any more. A pending delivery, and the event it
	 * refers to, always stay; nothing else (bills, reports, leads, bookings, accounts,
	 * subscriptions) is touched. Deletes are idempotent, so several nodes may sweep one
	 * shared store at once. Moves cur on; *removed gets the rows removed (deliveries,
	 * attempts, events); cur->done is set once the pass has reached rows created at or
	 * after `before` (or the end). */
	enum lh_err (*retention_sweep)(struct store *s, int64_t before, size_t batch,
	                               struct retention_cursor *cur, size_t *removed);
	/* ---- a lab's catalog ----
	 * Inserts or replaces the n items (each item's lab_id is lab_id) in one transaction.
	 * A package's tests are given as members (package_id one of the packages put) and
	 * replace the tests it had; a package put without members then holds none. Every
	 * member's test must be in the catalog once the put is done: else LH_ENOTFOUND, *bad
	 * (may be NULL) the index of the first such member, and nothing changes. Prices of
	 * rates already set stay. */
	enum lh_err (*catalog_put)(struct store *s, const char *lab_id,
	                           const struct catalog_item *items, size_t n,
	                           const struct catalog_member *members, size_t nmembers,
	                           size_t *bad);
	/* Removes an item with its rates (and a package's member list); LH_ENOTFOUND if absent;
	 * LH_ECONFLICT if it is a test some package holds (in_package, may be NULL, gets one
	 * such package's id) and nothing changes. */
	enum lh_err (*catalog_delete)(struct store *s, const char *lab_id, enum catalog_kind kind,
	                              const char *id, char in_package[ID_CAP]);
	/* Items of lab_id of kind (or CATALOG_ANY), ordered by kind then id, skipping offset,
	 * at most limit (free *out with free()); *total (may be NULL: then it is not counted,
	 * which is cheaper) gets how many there are in all. With party_id non-empty each item's
	 * party_price is that party's rate (-1 where none); with only_rated as well, only items the
	 * party has a rate for. */
	enum lh_err (*catalog_list)(struct store *s, const char *lab_id, int kind,
	                            const char *party_id, int only_rated, size_t offset,
	                            size_t limit, struct catalog_item **out, size_t *n,
	                            int64_t *total);
	/* The tests of lab_id's packages with ids from first_id to last_id (inclusive), with
	 * their names, ordered by package id then position (free *out with free()). */
	enum lh_err (*catalog_members)(struct store *s, const char *lab_id, const char *first_id,
	                               const char *last_id, struct catalog_member **out, size_t *n);
	/* Sets party_id's price for the item (LH_ENOTFOUND if the item is not in the catalog),
	 * or with price < 0 removes it (LH_ENOTFOUND if none was set). The caller checks that
	 * the party belongs to the lab's account. */
	enum lh_err (*catalog_rate_set)(struct store *s, const char *lab_id, enum catalog_kind kind,
	                                const char *item_id, const char *party_id, int64_t price);

	/* The client's bill with its reports (free *reports with free()); client_id NULL: any
	 * account's (the lab side). */
	enum lh_err (*bill_get)(struct store *s, const char *client_id, const char *bill_id,
	                        struct bill *out, struct report **reports, size_t *n);

	/* Report bill_id/report_id of client_id ("" or NULL: any account) with its document's
	 * description: LH_ENOTFOUND if there is no such report (or it is another account's). */
	enum lh_err (*report_doc_get)(struct store *s, const char *client_id, const char *bill_id,
	                              const char *report_id, struct report_doc_info *out);
	/* Chunk n of the document of bill_id/report_id as it is at `version`: its bytes into
	 * buf (cap at least REPORT_CHUNK), *len gets their count. LH_ENOTFOUND when the
	 * document is gone or another version replaced it (a reader must not mix versions). */
	enum lh_err (*report_doc_chunk)(struct store *s, const char *bill_id, const char *report_id,
	                                int64_t version, int64_t n, void *buf, size_t cap,
	                                size_t *len);

	/* ---- operations ---- */
	/* The store's figures for GET /metrics, read in one go. Cheap enough for every scrape:
	 * the pending count walks only the partial index of pending deliveries. */
	enum lh_err (*stats)(struct store *s, struct store_stats *out);

	/* ---- moving a store (labhook store copy) ---- */
	/* Calls fn for every row of every table of store_copy_tables, table by table in that
	 * order, each table's rows in primary-key order, all read from one consistent
	 * snapshot. rows[i] (may be NULL) gets how many rows of table i were passed. A table
	 * with columns the list does not name is refused (LH_ESTORE): nothing is left out
	 * unseen. */
	enum lh_err (*export_rows)(struct store *s, store_row_fn fn, void *ctx,
	                           int64_t rows[STORE_COPY_NTABLES]);
	/* Copies everything `from` exports into this store, in one transaction: refused with
	 * LH_ECONFLICT (and a log line naming the table) unless this store holds no rows but
	 * meta rows, whose place the source's take (the token signing key and the admin key
	 * go with the data); then every row is inserted, the store's own counters are set
	 * past what was copied (the next event's seq follows the last copied one), and the
	 * count of every table is compared with the count exported: any difference rolls all
	 * of it back (LH_ESTORE). On LH_OK rows[i] gets the rows copied into table i. `from`
	 * must be another store (LH_EINVAL), of either backend. */
	enum lh_err (*import_from)(struct store *s, struct store *from,
	                           int64_t rows[STORE_COPY_NTABLES]);
};

struct store {
	const struct store_ops *ops;
};

#endif
