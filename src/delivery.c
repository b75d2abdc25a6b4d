/* delivery.c: see delivery.h.
 *
 * Data, all owned by the dispatcher thread:
 * - lanes: hash of (sub, entity) -> FIFO of pending items ordered by event sequence (a
 *   re-queued one never goes ahead of the head in flight);
 * - endpoints: hash of sub -> cached subscription, in-flight count, failure streak and
 *   backoff (retry_policy_next updates them after each attempt), and its share of the
 *   window: its deliveries in memory and its frontier (loaded_seq: every pending delivery
 *   of it up to there is in memory; past it, when spilled, on disk);
 * - a min-heap of (due time, lane) for lanes whose head may start; lanes that cannot start
 *   wait in a FIFO: their endpoint's (its cap reached) or, for a global slot, their
 *   endpoint's global queue, the endpoints taking turns in a ring. A finished attempt lets
 *   as many lanes of its endpoint try again as it freed room for; a subscription change
 *   lets all of them. Heap entries are lazy: a lane's `gen` invalidates old ones;
 * - the spill queue: endpoints with pending deliveries on disk, read back in turns, each up
 *   to its share of the window (taken back from one holding more than its share), in pages
 *   the loader thread reads and the dispatcher applies if still wanted (page_gen).
 * Shared with other threads: the inbox (new deliveries from the commit hook) under inbox_mu,
 * the recorder's queue and count of outcomes recorded under rec_mu, and the loader's
 * requests and pages under ld_mu.
 * The counts kept as things change (in flight, in memory, heap entries, payload bytes) are
 * asserted where they change, and compared with what is there by check_engine in debug
 * builds.
 */
#define _GNU_SOURCE
#include "delivery.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "addr.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "retry_policy.h"
#include "sign.h"
#include "version.h"

#define HASH_BUCKETS      65536
#define RESULT_BATCH      512
#define RECORD_TRIES      3 /* for a batch of outcomes the store refuses (not a 503) */
#define RECORD_BACKOFF    6 /* doublings of the wait between them: at most 64 s */
#define FLUSH_MS          20
#define RESPONSE_READ_CAP (1 << 20)
#define STOP_GRACE_MS     10000
#define PAYLOAD_BUDGET    (32u << 20) /* payload bytes kept in memory; past it, read at send */
#define SLOT_RESERVE      8   /* one endpoint leaves 1/8 of max-in-flight (at least 1) to others */
#define LEASE_SOON_MS     200 /* a subscription change makes the leases looked at this soon */
#define PERFORM_ROUNDS    4   /* curl_multi_perform calls in a turn while attempts start */
#define READ_PAGE_FIRST   256 /* deliveries read back at once for an endpoint with none in memory */
#define READ_PAGE_MAX     2048 /* ...and for one with some */

/* Connection caches, one per slot: an endpoint's attempts in flight at once each take a
 * different slot (the lowest free), so each has a connection of its own. With one shared
 * cache, libcurl gives a new transfer the first idle connection it finds: when the
 * receiver answered before the dispatcher looked again, every transfer went out on the
 * same connection (56-81% of the webhooks on one of 16), one at a time on the wire. */
#define SLOT_CACHES 16
#define SPARE_MAX   256 /* attempt contexts (with their handles) kept for reuse */

struct item {
	struct item *next;
	char delivery_id[ID_CAP];
	char event_id[ID_CAP];
	int64_t seq;
	int attempts;
	int64_t next_at_ms;
	char *payload; /* from the commit or the page it came with; NULL: read it at send */
	size_t payload_len;
};

struct endpoint;
struct lane;

/* Endpoints queued for something, first in first out: each endpoint has one link per
 * queue it can be in (EPQ_*), so the same code serves every one of them. */
enum { EPQ_SPILL, EPQ_RING, EPQ_N };

struct epq {
	struct endpoint *head, *tail;
	size_t n;
};

struct eplink {
	struct endpoint *next;
	int queued;
};

/* Lanes waiting for room, first in first out (linked through lane.wnext). */
struct waitq {
	struct lane *head, *tail;
	size_t n;
};

struct lane {
	struct lane *hnext;         /* hash chain */
	struct lane *wnext;         /* waiting list */
	struct lane *eprev, *enext; /* its endpoint's lanes */
	char sub_id[ID_CAP];
	char entity_id[ID_CAP];
	struct item *head, *tail;
	struct endpoint *ep;
	int in_flight;
	int waiting;
	int inheap; /* heap entries (live or stale) that point here */
	unsigned gen;
};

struct endpoint {
	struct endpoint *hnext;
	char sub_id[ID_CAP];
	struct subscription sub;
	int loaded;
	uint64_t version;
	int in_flight;
	unsigned short slot_use[SLOT_CACHES]; /* its attempts in flight on each slot */
	struct retry_state health;            /* failure streak and backoff (retry_policy.h) */
	struct waitq waiting;                 /* its lanes waiting for room under its cap */
	struct waitq gwaiting;                /* its lanes waiting for a global slot */
	struct eplink q[EPQ_N];               /* in the spill queue, in the ring of global slots */
	struct lane *lanes;                   /* its lanes (linked through lane.enext) */
	/* Its part of the window. Every pending delivery of it with event_seq <= loaded_seq is
	 * in memory; when spilled, more wait on disk past it and are read back in pages. */
	size_t mem; /* its deliveries in memory */
	int64_t loaded_seq;
	int spilled;
	int contending;           /* mem > 0, in the spill queue or loading: counts for shares */
	uint64_t evict_mark;      /* outcomes made when last evicted (see read_back) */
	struct page_req *loading; /* a page of its backlog on its way (loader) */
	int respill;              /* left the spill queue while loading: back after */
	/* Bumped by whatever makes a page asked for before it stale: an eviction or a rescan
	 * (the frontier moved back), an outcome past the frontier (perhaps not recorded when
	 * the page was read). */
	unsigned page_gen;
	int64_t missed_min;             /* while loading: the lowest seq of a delivery not joined */
	uint64_t outcome_mark;          /* results_made after its last outcome (lease_rebalance) */
	struct endpoint *bprev, *bnext; /* the busy list: endpoints with mem > 0 */
};

struct heap_ent {
	int64_t due;
	struct lane *lane;
	unsigned gen;
};

/* One attempt, on an easy handle of its own that keeps every option but the request's
 * (set once when the context is made) and the connection cache of its slot (see
 * SLOT_CACHES). Contexts are kept for reuse: an attempt sets four options, builds its
 * headers in place and allocates nothing. */
struct attempt_ctx {
	/* Set once, when made: */
	struct delivery_engine *d;
	CURL *h;
	int slot; /* its connection cache: d->caches[slot] */
	/* Per attempt (cleared up to resp by attempt_new): */
	struct lane *lane;
	struct item *item;
	char *payload;
	size_t payload_len;
	int payload_counted; /* taken from its item: counts in the dispatcher's payload_bytes */
	int64_t started_ms, started_us;
	size_t resp_len, resp_total;
	int retry_after_s;
	int64_t epoch; /* the lease it was started under (0 on a one-node store) */
	const char *blocked;
	struct attempt_ctx *prev, *next; /* the running list, or its slot's spare list */
	char resp[ATTEMPT_BODY_CAP];
	/* The request's headers, built in place (libcurl only reads the list). */
	struct curl_slist hnode[6];
	char h_id[ID_CAP + 16], h_ts[48], h_sig[32 + 2 * SIG_CAP], h_auth[AUTHTOKEN_CAP + 32];
};

/* A page of an endpoint's backlog, read by the loader thread (SQL on the dispatcher stopped
 * every sending while it lasted) and applied by the dispatcher if still wanted. */
struct page_req {
	struct page_req *next;
	struct endpoint *ep; /* kept while it loads (ep_idle) */
	char sub_id[ID_CAP];
	int64_t after_seq; /* the endpoint's frontier when asked: applied only if unchanged */
	unsigned page_gen; /* ...and its page_gen (see struct endpoint) */
	size_t want;
	struct delivery *page;
	size_t n;
	enum lh_err e;
};

struct rec_batch {
	struct rec_batch *next;
	size_t n;
	struct delivery_result r[];
};

#define RECORD_QUEUE_CAP 65536 /* results; past it the dispatcher waits for the recorder */

struct delivery_engine {
	struct store *st;
	const struct config *cfg;
	CURLM *multi;
	pthread_t thread;
	int started;

	pthread_mutex_t inbox_mu;
	struct delivery *inbox;
	size_t ninbox, cap_inbox;
	int stopping;

	struct lane *lanes[HASH_BUCKETS];
	struct endpoint *eps[HASH_BUCKETS];
	struct heap_ent *heap;
	size_t nheap, cap_heap;
	struct epq ring; /* endpoints waiting for global slots, in turn */
	struct attempt_ctx *running;
	CURLSH *caches[SLOT_CACHES];            /* a connection cache per slot */
	struct attempt_ctx *spare[SLOT_CACHES]; /* contexts kept for reuse, per slot */
	size_t nspare;
	int in_flight;
	uint64_t starts; /* attempts started so far */
	uint64_t subs_version;

	struct delivery_result *results;
	size_t nresults;
	int64_t first_result_ms;

	/* The recorder thread writes outcomes through the store's group commit, so the
	 * dispatcher never waits for a disk sync. Batches queue under rec_mu. */
	pthread_t recorder;
	int recorder_started;
	pthread_mutex_t rec_mu;
	pthread_cond_t rec_cv, rec_room;
	struct rec_batch *rec_head, *rec_tail;
	size_t rec_queued; /* results waiting in the queue */
	int rec_stop;

	uint64_t results_made; /* outcomes made so far (dispatcher thread) */
	uint64_t recorded;     /* ...of which the recorder is done with (under rec_mu) */

	/* The window: at most cfg->delivery_window items in memory, shared fairly among the
	 * endpoints that want room (n_contend of them). Pending deliveries past an endpoint's
	 * share stay in the store (it is spilled) and are read back per endpoint, in turns. */
	size_t mem_items;
	size_t payload_bytes; /* payloads held by items and attempts, at most PAYLOAD_BUDGET */
	size_t n_contend;
	struct epq spill;      /* endpoints with deliveries on disk to read back, in turn */
	struct endpoint *busy; /* endpoints with deliveries in memory */
	int recorder_wait;     /* a read-back waits for the recorder: look again soon */
	int winding_down;      /* the dispatcher saw stopping: no attempt starts any more */
	size_t reserved;       /* window room held for pages on their way */

	/* The loader thread reads pages of backlogs (ld_todo), hands them back (ld_done). */
	pthread_t loader;
	int loader_started;
	pthread_mutex_t ld_mu;
	pthread_cond_t ld_cv;
	struct page_req *ld_todo, *ld_todo_tail, *ld_done;
	int ld_stop;

	/* Other nodes' news (under inbox_mu): subscriptions with deliveries to read back. */
	struct sub_news *news;
	size_t nnews, cap_news;
	int news_lost; /* news may have been lost: read every backlog again */

	/* Leases: which subscriptions this node sends (on a shared store). On a one-node
	 * store own_all is set and the rest is unused. Dispatcher thread only. */
	int own_all;
	struct lease *leases; /* held now, ordered by sub_id */
	size_t nleases;
	struct lease *leaving; /* held, but being given back: nothing new starts (sorted) */
	size_t nleaving;
	/* Monotonic ms (a wall-clock step must not stretch them): */
	int64_t lease_until_ms; /* sends nothing under the leases past this unless renewed */
	int64_t lease_next_ms;  /* the next lease_sync */
	int lease_failing;      /* the last lease_sync failed (logged once) */
};

static uint64_t hash2(const char *a, const char *b)
{
	uint64_t h = util_fnv1a(UTIL_FNV_BASIS, a);
	return b ? util_fnv1a(util_fnv1a(h, "\x1f"), b) : util_fnv1a(h, "\x1f");
}

/* ---- heap ---- */

static int heap_push(struct delivery_engine *d, struct lane *l, int64_t due)
{
	if (UTIL_GROW(d->heap, d->cap_heap, d->nheap + 1, 1024))
		return -1;
	size_t i = d->nheap++;
	l->gen++;
	l->inheap++;
	struct heap_ent e = {due, l, l->gen};
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (d->heap[p].due <= due)
			break;
		d->heap[i] = d->heap[p];
		i = p;
	}
	d->heap[i] = e;
	assert(i == 0 || d->heap[(i - 1) / 2].due <= due);
	return 0;
}

static void heap_pop(struct delivery_engine *d)
{
	assert(d->nheap > 0);
	struct heap_ent last = d->heap[--d->nheap];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= d->nheap)
			break;
		if (c + 1 < d->nheap && d->heap[c + 1].due < d->heap[c].due)
			c++;
		if (d->heap[c].due >= last.due)
			break;
		d->heap[i] = d->heap[c];
		i = c;
	}
	if (d->nheap)
		d->heap[i] = last;
	assert(i == 0 || i >= d->nheap || d->heap[(i - 1) / 2].due <= last.due);
	assert(2 * i + 1 >= d->nheap || d->heap[2 * i + 1].due >= last.due);
	assert(2 * i + 2 >= d->nheap || d->heap[2 * i + 2].due >= last.due);
}

/* Puts a lane whose head may be attempted at its due time into the heap. */
static void schedule(struct delivery_engine *d, struct lane *l)
{
	if (!l->head || l->in_flight || l->waiting)
		return;
	int64_t due = l->head->next_at_ms;
	if (l->ep->health.backoff_until_ms > due)
		due = l->ep->health.backoff_until_ms;
	if (heap_push(d, l, due) != 0)
		LOG(LOG_ERROR, "delivery", "out of memory scheduling a lane");
}

static void wait_lane(struct waitq *q, struct lane *l)
{
	assert(!l->waiting && !l->in_flight); /* in one queue at most, and never in flight */
	assert(!q->head == !q->tail && !q->head == (q->n == 0));
	l->waiting = 1;
	l->gen++;
	l->wnext = NULL;
	if (q->tail)
		q->tail->wnext = l;
	else
		q->head = l;
	q->tail = l;
	q->n++;
}

static void lane_maybe_free(struct delivery_engine *d, struct lane *l);
static void ep_rescan(struct delivery_engine *d, struct endpoint *ep);
static void ep_evict(struct delivery_engine *d, struct endpoint *ep, size_t keep);

static struct lane *waitq_pop(struct waitq *q)
{
	struct lane *l = q->head;
	assert(l && l->waiting && q->n > 0);
	q->head = l->wnext;
	if (!q->head)
		q->tail = NULL;
	q->n--;
	assert(!q->head == (q->n == 0));
	l->waiting = 0;
	return l;
}

/* Lets every waiting lane of q try again (after a subscription change). */
static void wake_all(struct delivery_engine *d, struct waitq *q)
{
	while (q->head) {
		struct lane *l = waitq_pop(q);
		schedule(d, l);
		lane_maybe_free(d, l);
	}
}

/* The most one endpoint may have in flight: its own cap, and never every global slot (a
 * slow but successful endpoint would hold them all, and another's delivery would wait for
 * one of its slow answers). */
static int endpoint_slots(const struct delivery_engine *d)
{
	int total = d->cfg->max_in_flight;
	int reserve = total / SLOT_RESERVE > 0 ? total / SLOT_RESERVE : 1;
	int most = total - reserve > 0 ? total - reserve : 1;
	int cap = d->cfg->max_in_flight_per_endpoint;
	return cap < most ? cap : most;
}

/* ...and one at a time while it is backed off. */
static int endpoint_cap(const struct delivery_engine *d, const struct endpoint *ep)
{
	return ep->health.streak >= RETRY_STREAK_BACKOFF ? 1 : endpoint_slots(d);
}

/* ---- fair shares: the window, the spill queue, the ring of global slots ---- */

/* An endpoint contends for the window while it holds deliveries or wants to read some. */
static void contend_update(struct delivery_engine *d, struct endpoint *ep)
{
	int c = ep->mem > 0 || ep->q[EPQ_SPILL].queued || ep->loading;
	if (c != ep->contending) {
		ep->contending = c;
		if (c) {
			d->n_contend++;
		} else {
			assert(d->n_contend > 0);
			d->n_contend--;
		}
	}
}

/* The window divided among the endpoints that want room (ep counted if it is not yet). */
static size_t ep_share(const struct delivery_engine *d, const struct endpoint *ep)
{
	size_t n = d->n_contend + !ep->contending;
	size_t share = (size_t)d->cfg->delivery_window / (n ? n : 1);
	return share ? share : 1;
}

static void ep_mem_inc(struct delivery_engine *d, struct endpoint *ep)
{
	d->mem_items++;
	if (ep->mem++ == 0) {
		ep->bprev = NULL;
		ep->bnext = d->busy;
		if (d->busy)
			d->busy->bprev = ep;
		d->busy = ep;
		contend_update(d, ep);
	}
}

static void ep_mem_dec(struct delivery_engine *d, struct endpoint *ep)
{
	assert(ep->mem > 0 && d->mem_items >= ep->mem);
	d->mem_items--;
	if (--ep->mem == 0) {
		if (ep->bprev)
			ep->bprev->bnext = ep->bnext;
		else
			d->busy = ep->bnext;
		if (ep->bnext)
			ep->bnext->bprev = ep->bprev;
		contend_update(d, ep);
	}
}

/* Puts ep at the end of queue `which` unless it is already in it. */
static void epq_push(struct epq *q, int which, struct endpoint *ep)
{
	if (ep->q[which].queued)
		return;
	assert(!q->head == !q->tail && !q->head == (q->n == 0));
	ep->q[which].queued = 1;
	ep->q[which].next = NULL;
	if (q->tail)
		q->tail->q[which].next = ep;
	else
		q->head = ep;
	q->tail = ep;
	q->n++;
}

static struct endpoint *epq_pop(struct epq *q, int which)
{
	struct endpoint *ep = q->head;
	assert(ep && ep->q[which].queued && q->n > 0);
	q->head = ep->q[which].next;
	if (!q->head)
		q->tail = NULL;
	q->n--;
	assert(!q->head == (q->n == 0));
	ep->q[which].queued = 0;
	return ep;
}

/* Marks an endpoint as having pending deliveries on disk past its frontier, and queues it
 * to be read back (read_back drops it from the queue while it is not active). */
static void ep_spill(struct delivery_engine *d, struct endpoint *ep)
{
	ep->spilled = 1;
	epq_push(&d->spill, EPQ_SPILL, ep);
	contend_update(d, ep);
}

/* ---- lanes and endpoints ---- */

/* The endpoint record of sub_id, or NULL when there is none. */
static struct endpoint *endpoint_find(const struct delivery_engine *d, const char *sub_id)
{
	for (struct endpoint *e = d->eps[hash2(sub_id, NULL) % HASH_BUCKETS]; e; e = e->hnext)
		if (strcmp(e->sub_id, sub_id) == 0)
			return e;
	return NULL;
}

/* The endpoint record of sub_id, made if there is none (NULL: out of memory). */
static struct endpoint *endpoint_get(struct delivery_engine *d, const char *sub_id)
{
	struct endpoint *e = endpoint_find(d, sub_id);
	if (e)
		return e;
	uint64_t b = hash2(sub_id, NULL) % HASH_BUCKETS;
	e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	snprintf(e->sub_id, sizeof e->sub_id, "%s", sub_id);
	/* A record made again after an idle one was freed: outcomes of its last attempts may
	 * still be on their way to the store, and a read-back must not find them pending. */
	e->evict_mark = d->results_made;
	e->hnext = d->eps[b];
	d->eps[b] = e;
	return e;
}

static const struct lease *lease_find(const struct lease *l, size_t n, const char *sub_id);

/* The lease this node holds on a subscription, or NULL (always NULL with own_all). */
static const struct lease *lease_of(const struct delivery_engine *d, const char *sub_id)
{
	return lease_find(d->leases, d->nleases, sub_id);
}

static int64_t mono_ms(void)
{
	return util_mono_us() / 1000;
}

static const struct lease *lease_find(const struct lease *l, size_t n, const char *sub_id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(l[mid].sub_id, sub_id);
		if (c == 0)
			return &l[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* 1 if this node sends the subscription's deliveries: it holds the lease, is not giving it
 * back, and the lease cannot have lapsed (checked against a fresh clock, since a store call
 * may have blocked since the loop's own). */
static int owns(const struct delivery_engine *d, const char *sub_id)
{
	if (d->own_all)
		return 1;
	return lease_of(d, sub_id) && !lease_find(d->leaving, d->nleaving, sub_id) &&
	       mono_ms() < d->lease_until_ms;
}

static struct lane *lane_get(struct delivery_engine *d, const char *sub_id, const char *entity_id)
{
	uint64_t b = hash2(sub_id, entity_id) % HASH_BUCKETS;
	for (struct lane *l = d->lanes[b]; l; l = l->hnext)
		if (strcmp(l->sub_id, sub_id) == 0 && strcmp(l->entity_id, entity_id) == 0)
			return l;
	struct lane *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->ep = endpoint_get(d, sub_id);
	if (!l->ep) {
		free(l);
		return NULL;
	}
	snprintf(l->sub_id, sizeof l->sub_id, "%s", sub_id);
	snprintf(l->entity_id, sizeof l->entity_id, "%s", entity_id);
	l->hnext = d->lanes[b];
	d->lanes[b] = l;
	l->enext = l->ep->lanes;
	if (l->ep->lanes)
		l->ep->lanes->eprev = l;
	l->ep->lanes = l;
	return l;
}

/* Keeps a delivery's payload with its item while the budget allows; frees it otherwise. */
static void item_take_payload(struct delivery_engine *d, struct item *it, struct delivery *dl)
{
	size_t len = dl->payload ? strlen(dl->payload) : 0;
	if (dl->payload && d->payload_bytes + len <= PAYLOAD_BUDGET) {
		it->payload = dl->payload;
		it->payload_len = len;
		d->payload_bytes += len;
		assert(d->payload_bytes <= PAYLOAD_BUDGET);
	} else {
		free(dl->payload);
	}
	dl->payload = NULL;
}

/* Adds a pending delivery to its lane in sequence order (taking its payload); a delivery
 * already queued (a retry request for a waiting delivery) just becomes due earlier. */
static void lane_add(struct delivery_engine *d, struct delivery *dl)
{
	struct lane *l = lane_get(d, dl->sub_id, dl->entity_id);
	if (!l) {
		free(dl->payload);
		dl->payload = NULL;
		LOG(LOG_ERROR, "delivery",
		    "delivery=%s out of memory; it stays pending in the store and is sent after restart",
		    dl->delivery_id);
		return;
	}
	struct item **pp = &l->head;
	for (struct item *it = l->head; it; it = it->next)
		if (strcmp(it->delivery_id, dl->delivery_id) == 0) {
			free(dl->payload);
			dl->payload = NULL;
			if (dl->next_at_ms < it->next_at_ms)
				it->next_at_ms = dl->next_at_ms;
			if (it == l->head)
				schedule(d, l);
			return;
		}
	/* In sequence order, but never before an in-flight head. */
	if (l->in_flight && l->head)
		pp = &l->head->next;
	while (*pp && (*pp)->seq <= dl->event_seq)
		pp = &(*pp)->next;
	struct item *it = calloc(1, sizeof *it);
	if (!it) {
		LOG(LOG_ERROR, "delivery", "delivery=%s out of memory", dl->delivery_id);
		free(dl->payload);
		dl->payload = NULL;
		return;
	}
	ep_mem_inc(d, l->ep);
	item_take_payload(d, it, dl);
	snprintf(it->delivery_id, sizeof it->delivery_id, "%s", dl->delivery_id);
	snprintf(it->event_id, sizeof it->event_id, "%s", dl->event_id);
	it->seq = dl->event_seq;
	it->attempts = dl->attempts;
	it->next_at_ms = dl->next_at_ms;
	if (dl->attempts == 0 && !dl->requeued)
		it->next_at_ms += d->cfg->retry_ms[0]; /* the schedule's first entry: usually 0 */
	it->next = *pp;
	*pp = it;
	if (!it->next)
		l->tail = it;
	assert(l->tail && !l->tail->next);
	assert(!l->in_flight || it != l->head); /* never ahead of the one in flight */
	if (it == l->head)
		schedule(d, l);
}

static void item_free(struct delivery_engine *d, struct endpoint *ep, struct item *it)
{
	ep_mem_dec(d, ep);
	assert(d->payload_bytes >= it->payload_len);
	d->payload_bytes -= it->payload_len;
	free(it->payload);
	free(it);
}

static void lane_pop_head(struct delivery_engine *d, struct lane *l)
{
	struct item *it = l->head;
	assert(it);
	l->head = it->next;
	if (!l->head)
		l->tail = NULL;
	item_free(d, l->ep, it);
}

/* Frees a lane nothing refers to any more (no items, nothing in flight, not waiting, no
 * heap entry), so memory follows the pending deliveries, not every entity ever seen. */
static void lane_maybe_free(struct delivery_engine *d, struct lane *l)
{
	if (l->head || l->in_flight || l->waiting || l->inheap)
		return;
	struct lane **pp = &d->lanes[hash2(l->sub_id, l->entity_id) % HASH_BUCKETS];
	while (*pp && *pp != l)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = l->hnext;
	if (l->eprev)
		l->eprev->enext = l->enext;
	else
		l->ep->lanes = l->enext;
	if (l->enext)
		l->enext->eprev = l->eprev;
	free(l);
}

/* Refreshes the cached subscription when any subscription changed since it was read. */
static int endpoint_refresh(struct delivery_engine *d, struct endpoint *ep)
{
	if (ep->loaded && ep->version == d->subs_version)
		return 0;
	enum lh_err e = d->st->ops->sub_get_any(d->st, ep->sub_id, &ep->sub);
	if (e == LH_ENOTFOUND) {
		memset(&ep->sub, 0, sizeof ep->sub);
		ep->sub.status = SUB_DELETED;
	} else if (e != LH_OK) {
		return -1;
	}
	ep->loaded = 1;
	ep->version = d->subs_version;
	return 0;
}

static int cmp_seq(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Takes an endpoint's newest deliveries out of memory until it holds at most keep (those
 * in flight stay). They are still pending in the store: its frontier moves back below
 * them, so pages bring them back in order, and what stays is each lane's oldest. */
static void ep_evict(struct delivery_engine *d, struct endpoint *ep, size_t keep)
{
	size_t m = 0, i = 0;
	int64_t lo = INT64_MAX;
	for (struct lane *l = ep->lanes; l; l = l->enext)
		for (struct item *it = l->in_flight ? l->head->next : l->head; it; it = it->next) {
			m++;
			lo = it->seq < lo ? it->seq : lo;
		}
	if (m == 0 || ep->mem <= keep)
		return;
	size_t k = ep->mem - keep;
	int64_t cut = lo - 1; /* every item past cut leaves */
	int64_t *seqs = k < m ? malloc(m * sizeof *seqs) : NULL;
	if (seqs) { /* (out of memory: all of them leave, which is as correct) */
		for (struct lane *l = ep->lanes; l; l = l->enext)
			for (struct item *it = l->in_flight ? l->head->next : l->head; it;
			     it = it->next)
				seqs[i++] = it->seq;
		qsort(seqs, m, sizeof *seqs, cmp_seq);
		cut = seqs[m - k] - 1;
		free(seqs);
	}
	for (struct lane *l = ep->lanes; l; l = l->enext) {
		struct item *old_head = l->head, *last = l->in_flight ? l->head : NULL;
		struct item **pp = l->in_flight ? &l->head->next : &l->head;
		while (*pp) {
			struct item *it = *pp;
			if (it->seq > cut) {
				*pp = it->next;
				item_free(d, ep, it);
			} else {
				last = it;
				pp = &it->next;
			}
		}
		l->tail = last;
		assert(!l->head == !l->tail);
		assert(!l->in_flight || l->head == old_head); /* the one in flight stays */
		if (l->head && l->head != old_head)
			schedule(d, l);
		/* An emptied lane is freed by whoever holds it (a heap entry, a queue, an
		 * attempt, or the caller that is starting it), not here. */
	}
	LOG(LOG_DEBUG, "delivery", "sub=%s kept=%zu share=%zu evicted: waits on disk", ep->sub_id,
	    ep->mem, keep);
	if (cut < ep->loaded_seq)
		ep->loaded_seq = cut;
	/* Outcomes of its deliveries may still be on their way to the store: reading them
	 * back before those are recorded would send them again. */
	ep->evict_mark = d->results_made;
	ep->page_gen++;
	ep_spill(d, ep);
}

/* ---- results ---- */

static void news_lost_set(struct delivery_engine *d);

/* Outcomes that could not be recorded (any thread): their deliveries are still pending in
 * the store, but those delivered or given up left memory, behind the frontier, where no
 * page reads them again. Every backlog is read again from its start (news_lost), after the
 * outcomes counted as recorded: they are sent again, at least once, not left pending
 * until a restart. */
static void outcomes_lost(struct delivery_engine *d)
{
	news_lost_set(d);
	curl_multi_wakeup(d->multi);
}

/* Hands the buffered outcomes to the recorder thread (waiting only if it is far behind). */
static void flush_results(struct delivery_engine *d)
{
	if (!d->nresults)
		return;
	struct rec_batch *b = malloc(sizeof *b + d->nresults * sizeof b->r[0]);
	if (!b) {
		/* Not recorded: the deliveries stay pending in the store, to be read back and
		 * sent again (at least once, never lost). */
		LOG(LOG_ERROR, "delivery", "n=%zu out of memory recording outcomes", d->nresults);
		pthread_mutex_lock(&d->rec_mu);
		d->recorded += d->nresults; /* as done as they will be */
		pthread_mutex_unlock(&d->rec_mu);
		d->nresults = 0;
		outcomes_lost(d);
		return;
	}
	b->next = NULL;
	b->n = d->nresults;
	memcpy(b->r, d->results, d->nresults * sizeof b->r[0]);
	d->nresults = 0;
	pthread_mutex_lock(&d->rec_mu);
	while (d->rec_queued > RECORD_QUEUE_CAP)
		pthread_cond_wait(&d->rec_room, &d->rec_mu);
	if (d->rec_tail)
		d->rec_tail->next = b;
	else
		d->rec_head = b;
	d->rec_tail = b;
	d->rec_queued += b->n;
	pthread_cond_signal(&d->rec_cv);
	pthread_mutex_unlock(&d->rec_mu);
}

/* Records one batch. While the store's disk is full or failing (503: it comes back on its
 * own) it tries again every second, so the outcomes are not left pending in the store
 * until a restart. Any other error (a statement the database refused) gets RECORD_TRIES
 * tries, a second apart, and twice as far apart for each batch given up since the last
 * one recorded (*given_up), up to 64 s: a store that keeps refusing has the
 * deliveries sent again at most about once a minute, not every two seconds. A stop ends
 * the wait (then they are sent again after the restart). */
static enum lh_err record_batch(struct delivery_engine *d, const struct rec_batch *b, int *given_up)
{
	enum lh_err e;
	int tries = 0;
	while ((e = d->st->ops->delivery_record(d->st, b->r, b->n)) != LH_OK &&
	       (err_http_status(e) == 503 || ++tries < RECORD_TRIES)) {
		struct timespec until;
		long wait_s = err_http_status(e) == 503 ? 1 : 1L << *given_up;
		LOG(LOG_WARN, "delivery", "n=%zu err=%s wait_s=%ld outcomes wait for the store",
		    b->n, err_code(e), wait_s);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += wait_s;
		pthread_mutex_lock(&d->rec_mu);
		/* rec_cv also says that a batch was queued: only a stop cuts the wait short. */
		while (!d->rec_stop &&
		       pthread_cond_timedwait(&d->rec_cv, &d->rec_mu, &until) != ETIMEDOUT)
			;
		int stop = d->rec_stop;
		pthread_mutex_unlock(&d->rec_mu);
		if (stop)
			break;
	}
	if (e == LH_OK)
		*given_up = 0;
	else if (err_http_status(e) != 503 && *given_up < RECORD_BACKOFF)
		(*given_up)++;
	return e;
}

static void *recorder_main(void *arg)
{
	struct delivery_engine *d = arg;
	pthread_setname_np(pthread_self(), "lh-recorder");
	int given_up = 0; /* batches given up since the last one recorded */
	for (;;) {
		pthread_mutex_lock(&d->rec_mu);
		while (!d->rec_head && !d->rec_stop)
			pthread_cond_wait(&d->rec_cv, &d->rec_mu);
		struct rec_batch *list = d->rec_head;
		d->rec_head = d->rec_tail = NULL;
		int stop = d->rec_stop;
		pthread_mutex_unlock(&d->rec_mu);
		if (!list && stop)
			return NULL;
		for (struct rec_batch *b = list, *next; b; b = next) {
			next = b->next;
			enum lh_err e = record_batch(d, b, &given_up);
			if (e != LH_OK)
				LOG(LOG_ERROR, "delivery",
				    "n=%zu err=%s cannot record outcomes: their deliveries are"
				    " read back and sent again",
				    b->n, err_code(e));
			pthread_mutex_lock(&d->rec_mu);
			d->rec_queued -= b->n;
			d->recorded += b->n;
			pthread_cond_signal(&d->rec_room);
			int stopping = d->rec_stop;
			pthread_mutex_unlock(&d->rec_mu);
			if (e != LH_OK && !stopping)
				outcomes_lost(d);
			free(b);
		}
	}
}

static void add_result(struct delivery_engine *d, const struct delivery_result *r)
{
	if (d->nresults == 0)
		d->first_result_ms = util_now_ms();
	d->results[d->nresults++] = *r;
	d->results_made++;
	if (d->nresults == RESULT_BATCH)
		flush_results(d);
}

/* ---- one attempt ---- */

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *sa)
{
	struct attempt_ctx *a = clientp;
	struct ip_addr ip;
	(void)purpose;
	memset(&ip, 0, sizeof ip);
	ip.family = sa->family;
	if (sa->family == AF_INET)
		memcpy(ip.addr, &((struct sockaddr_in *)(void *)&sa->addr)->sin_addr, 4);
	else if (sa->family == AF_INET6)
		memcpy(ip.addr, &((struct sockaddr_in6 *)(void *)&sa->addr)->sin6_addr, 16);
	/* Checked on the address being connected to, so what was checked is what is used:
	 * no second lookup for DNS rebinding to slip through. */
	const char *why = addr_blocked_reason(&ip, a->d->cfg->allow_net, a->d->cfg->n_allow_net);
	if (why) {
		a->blocked = why;
		return CURL_SOCKET_BAD;
	}
	return socket(sa->family, sa->socktype, sa->protocol);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct attempt_ctx *a = ud;
	size_t len = size * n;
	if (a->resp_len < sizeof a->resp - 1) {
		size_t take = sizeof a->resp - 1 - a->resp_len;
		if (take > len)
			take = len;
		memcpy(a->resp + a->resp_len, p, take);
		a->resp_len += take;
		a->resp[a->resp_len] = '\0';
	}
	a->resp_total += len;
	return a->resp_total > RESPONSE_READ_CAP ? 0 : len; /* enough: stop reading */
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct attempt_ctx *a = ud;
	size_t len = size * n;
	if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
		/* Uncapped here: retry_policy_next caps it (RETRY_AFTER_MAX_S). */
		util_parse_retry_after(p + 12, len - 12, util_now(), INT_MAX, &a->retry_after_s);
	return len;
}

/* Destroys a context and its handle (its slot's cache keeps the connection). */
static void attempt_destroy(struct attempt_ctx *a)
{
	if (a->h)
		curl_easy_cleanup(a->h);
	free(a);
}

/* Ends an attempt: its payload goes, and the context is kept for the next attempt on its
 * slot (up to SPARE_MAX in all). */
static void attempt_free(struct attempt_ctx *a)
{
	if (!a)
		return;
	struct delivery_engine *d = a->d;
	if (a->payload_counted) {
		assert(d->payload_bytes >= a->payload_len);
		d->payload_bytes -= a->payload_len;
	}
	free(a->payload);
	a->payload = NULL;
	if (d->nspare >= SPARE_MAX) {
		attempt_destroy(a);
		return;
	}
	a->next = d->spare[a->slot];
	d->spare[a->slot] = a;
	d->nspare++;
}

/* A new context on slot k: an easy handle with every option that does not change between
 * attempts, the ones that keep it safe among them (HTTPS only, no redirects, no proxy, the
 * address check, the caps on time and on what is read). NULL out of memory. */
static struct attempt_ctx *attempt_make(struct delivery_engine *d, int k)
{
	struct attempt_ctx *a = calloc(1, sizeof *a);
	if (!a || !(a->h = curl_easy_init())) {
		free(a);
		return NULL;
	}
	a->d = d;
	a->slot = k;
	CURL *c = a->h;
	curl_easy_setopt(c, CURLOPT_SHARE, d->caches[k]);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "labhook/" LABHOOK_VERSION);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	/* No proxy, whatever HTTPS_PROXY or ALL_PROXY say: through one, open_socket would see
	 * only the proxy's address, and the proxy would connect wherever we asked. */
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (d->cfg->ca_file[0]) {
		/* Extra CAs on top of the system store, whatever the libcurl build's default. */
		curl_easy_setopt(c, CURLOPT_CAINFO, d->cfg->ca_file);
		curl_easy_setopt(c, CURLOPT_CAPATH, "/etc/ssl/certs");
	}
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->cfg->delivery_timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)d->cfg->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, a);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	curl_easy_setopt(c, CURLOPT_PRIVATE, a);
	return a;
}

/* The slot for the endpoint's next attempt: the lowest with none of its attempts in flight
 * (the least used when every one has some). */
static int slot_pick(const struct endpoint *ep)
{
	int best = 0;
	for (int k = 0; k < SLOT_CACHES; k++) {
		if (ep->slot_use[k] == 0)
			return k;
		if (ep->slot_use[k] < ep->slot_use[best])
			best = k;
	}
	return best;
}

/* Links a started attempt into the running list and counts it in flight: in its lane (only
 * the head, and only one at a time), its endpoint and the engine, each under its cap. */
static void attempt_track(struct delivery_engine *d, struct attempt_ctx *a)
{
	struct lane *l = a->lane;
	assert(a->item == l->head && !l->in_flight);
	assert(l->ep->in_flight < endpoint_cap(d, l->ep));
	assert(d->in_flight < d->cfg->max_in_flight);
	l->in_flight = 1;
	d->starts++;
	l->ep->in_flight++;
	assert(l->ep->slot_use[a->slot] < USHRT_MAX);
	l->ep->slot_use[a->slot]++;
	d->in_flight++;
	a->prev = NULL;
	a->next = d->running;
	if (d->running)
		d->running->prev = a;
	d->running = a;
}

/* The reverse of attempt_track, when the attempt has finished. */
static void attempt_untrack(struct delivery_engine *d, struct attempt_ctx *a)
{
	struct lane *l = a->lane;
	assert(l->in_flight && a->item == l->head);
	assert(l->ep->in_flight > 0 && d->in_flight > 0);
	l->in_flight = 0;
	l->ep->in_flight--;
	assert(l->ep->slot_use[a->slot] > 0);
	l->ep->slot_use[a->slot]--;
	d->in_flight--;
	if (a->prev)
		a->prev->next = a->next;
	else
		d->running = a->next;
	if (a->next)
		a->next->prev = a->prev;
}

/* A new attempt at the lane's head, with its payload: the one its item kept (which then
 * counts for the attempt), or read from the store. Returns owned, free with attempt_free;
 * LH_ENOTFOUND when the event has no payload. */
static enum lh_err attempt_new(struct delivery_engine *d, struct lane *l, struct attempt_ctx **out)
{
	struct item *it = l->head;
	int k = slot_pick(l->ep);
	struct attempt_ctx *a = d->spare[k];
	enum lh_err e = LH_OK;

	if (a) {
		d->spare[k] = a->next;
		d->nspare--;
		_Static_assert(offsetof(struct attempt_ctx, lane) <
		                   offsetof(struct attempt_ctx, resp),
		               "the per-attempt fields lie between lane and resp");
		memset(&a->lane, 0,
		       offsetof(struct attempt_ctx, resp) - offsetof(struct attempt_ctx, lane));
		a->resp[0] = '\0';
	} else if (!(a = attempt_make(d, k))) {
		return LH_ENOMEM;
	}
	a->lane = l;
	a->item = it;
	if (it->payload) { /* came with the delivery: no read */
		a->payload = it->payload;
		a->payload_len = it->payload_len;
		a->payload_counted = 1;
		it->payload = NULL;
		it->payload_len = 0;
	} else {
		e = d->st->ops->event_payload(d->st, it->event_id, &a->payload);
		a->payload_len = a->payload ? strlen(a->payload) : 0;
	}
	if (e != LH_OK) {
		attempt_free(a);
		return e;
	}
	*out = a;
	return LH_OK;
}

/* The signed headers of the attempt's request (Standard Webhooks; a second signature
 * while the previous secret is still valid), built in the context. NULL if it cannot
 * sign. */
static struct curl_slist *request_headers(struct attempt_ctx *a, const struct subscription *sub,
                                          int64_t now_s)
{
	const char *event_id = a->item->event_id;
	char sig[SIG_CAP], sig2[SIG_CAP];
	const char *lines[COUNTOF(a->hnode)];
	size_t n = 0;

	if (sig_sign_v1(sub->secret, event_id, now_s, a->payload, a->payload_len, sig) != 0)
		return NULL;
	if (sub->prev_secret[0] && sub->prev_secret_until > now_s &&
	    sig_sign_v1(sub->prev_secret, event_id, now_s, a->payload, a->payload_len, sig2) == 0)
		snprintf(a->h_sig, sizeof a->h_sig, "webhook-signature: %s %s", sig, sig2);
	else
		snprintf(a->h_sig, sizeof a->h_sig, "webhook-signature: %s", sig);
	snprintf(a->h_id, sizeof a->h_id, "webhook-id: %s", event_id);
	snprintf(a->h_ts, sizeof a->h_ts, "webhook-timestamp: %lld", (long long)now_s);
	lines[n++] = "Content-Type: application/json";
	lines[n++] = a->h_id;
	lines[n++] = a->h_ts;
	lines[n++] = a->h_sig;
	lines[n++] = "Expect:";
	if (sub->auth_token[0]) {
		snprintf(a->h_auth, sizeof a->h_auth, "Authorization: Bearer %s", sub->auth_token);
		lines[n++] = a->h_auth;
	}
	for (size_t i = 0; i < n; i++) {
		a->hnode[i].data = (char *)lines[i];
		a->hnode[i].next = i + 1 < n ? &a->hnode[i + 1] : NULL;
	}
	return a->hnode;
}

/* The attempt's request on its handle, which keeps every other option (attempt_make).
 * Returns 0, or -1. */
static int request_build(struct attempt_ctx *a, const struct subscription *sub)
{
	struct curl_slist *hdrs = request_headers(a, sub, util_now());
	if (!hdrs)
		return -1;
	CURL *c = a->h;
	curl_easy_setopt(c, CURLOPT_URL, sub->endpoint);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, a->payload);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)a->payload_len);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	return 0;
}

/* Starts the lane's head; returns 0 if started, -1 if it must wait. from_ring: it was
 * given a global slot in its endpoint's turn (others may not take that slot first). */
static int start_attempt(struct delivery_engine *d, struct lane *l, int from_ring)
{
	struct endpoint *ep = l->ep;
	struct attempt_ctx *a = NULL;

	assert(l->head && !l->in_flight && !l->waiting);
	if (!owns(d, l->sub_id)) {
		/* Its lease went (or is being given back, or may have lapsed): the deliveries
		 * stay pending in the store for the holder. */
		while (l->head)
			lane_pop_head(d, l);
		return -1;
	}
	if (endpoint_refresh(d, ep) != 0) {
		heap_push(d, l, util_now_ms() + 1000); /* store trouble: try again shortly */
		return -1;
	}
	if (ep->sub.status == SUB_DELETED) {
		while (l->head) /* cancelled in the store when the subscription was deleted */
			lane_pop_head(d, l);
		return -1;
	}
	if (ep->sub.status != SUB_ACTIVE) {
		/* Paused or disabled: the deliveries stay pending in the store, out of the
		 * window, and are read back (in order) when the subscription is active again. */
		ep_evict(d, ep, 0);
		return -1;
	}
	if (ep->in_flight >= endpoint_cap(d, ep)) {
		wait_lane(&ep->waiting, l);
		return -1;
	}
	if (d->in_flight >= d->cfg->max_in_flight || (d->ring.head && !from_ring)) {
		/* No slot, or endpoints waiting for one: they take turns (pump_ring). */
		wait_lane(&ep->gwaiting, l);
		epq_push(&d->ring, EPQ_RING, ep);
		return -1;
	}
	enum lh_err e = attempt_new(d, l, &a);
	if (e == LH_ENOTFOUND) {
		LOG(LOG_ERROR, "delivery", "delivery=%s event=%s has no payload; dropped",
		    l->head->delivery_id, l->head->event_id);
		lane_pop_head(d, l);
		schedule(d, l);
		return -1;
	}
	if (e != LH_OK || request_build(a, &ep->sub) != 0)
		goto fail;
	a->started_ms = util_now_ms();
	a->started_us = util_mono_us();
	const struct lease *lease = lease_of(d, l->sub_id);
	a->epoch = lease ? lease->epoch : 0;
	if (curl_multi_add_handle(d->multi, a->h) != CURLM_OK)
		goto fail;
	attempt_track(d, a);
	return 0;
fail:
	LOG(LOG_ERROR, "delivery", "delivery=%s cannot start an attempt; retrying shortly",
	    l->head->delivery_id);
	attempt_free(a);
	heap_push(d, l, util_now_ms() + 1000);
	return -1;
}

/* Why libcurl got no answer, as the attempt log names it. */
static enum retry_transport classify(CURLcode cc, const struct attempt_ctx *a)
{
	if (a->blocked)
		return RETRY_BLOCKED;
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return RETRY_TIMEOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
		return RETRY_DNS;
	case CURLE_COULDNT_CONNECT:
		return RETRY_CONNECT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return RETRY_TLS;
	case CURLE_GOT_NOTHING:
		return RETRY_EMPTY_REPLY;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		return RETRY_RESET;
	case CURLE_UNSUPPORTED_PROTOCOL:
		return RETRY_PROTOCOL;
	default:
		return RETRY_NETWORK;
	}
}

/* The attempt's outcome as labhook_delivery_attempts_total names it. */
static enum metrics_outcome metrics_outcome_of(const struct retry_attempt *at)
{
	switch (at->transport) {
	case RETRY_ANSWERED:
		if (at->status >= 200 && at->status < 300)
			return MO_SUCCESS;
		if (at->status >= 300 && at->status < 600)
			return (enum metrics_outcome)(MO_HTTP_3XX + (at->status / 100 - 3));
		return MO_OTHER;
	case RETRY_TIMEOUT:
		return MO_TIMEOUT;
	case RETRY_DNS:
		return MO_DNS;
	case RETRY_CONNECT:
		return MO_CONNECT;
	case RETRY_TLS:
		return MO_TLS;
	case RETRY_BLOCKED:
		return MO_BLOCKED;
	default: /* empty reply, reset, protocol, network */
		return MO_OTHER;
	}
}

/* The attempt's outcome for the recorder, as retry_policy_next decided it. */
static void record_attempt(struct delivery_engine *d, const struct attempt_ctx *a,
                           const struct retry_attempt *at, const struct retry_decision *dec)
{
	struct delivery_result r;

	memset(&r, 0, sizeof r);
	snprintf(r.a.delivery_id, sizeof r.a.delivery_id, "%s", a->item->delivery_id);
	snprintf(r.sub_id, sizeof r.sub_id, "%s", a->lane->sub_id);
	r.a.n = at->attempts;
	r.a.started_at_ms = a->started_ms;
	r.a.duration_ms = (int)((util_mono_us() - a->started_us) / 1000);
	r.a.status_code = at->transport == RETRY_ANSWERED ? at->status : 0;
	util_utf8_clean(a->resp, a->resp_len, r.a.response, sizeof r.a.response);
	snprintf(r.a.error, sizeof r.a.error, "%s", dec->error);
	r.now = at->now_ms / 1000;
	r.status = dec->status;
	r.next_at_ms = dec->next_at_ms;
	r.sub = dec->sub;
	r.epoch = a->epoch; /* the store refuses it if the lease changed hands meanwhile */
	a->lane->ep->outcome_mark = d->results_made + 1; /* this outcome's number */
	LOG(LOG_DEBUG, "delivery", "delivery=%s sub=%s attempt=%d status=%d error=%s dur_ms=%d",
	    r.a.delivery_id, r.sub_id, r.a.n, at->status, r.a.error[0] ? r.a.error : "-",
	    r.a.duration_ms);
	add_result(d, &r);
}

/* Applies what follows a finished attempt (retry_policy_next decides it), records it, and
 * lets the lane and the endpoint's waiting lanes go on. */
static void finish_attempt(struct delivery_engine *d, CURLMsg *msg)
{
	struct attempt_ctx *a = NULL;
	long code = 0;
	unsigned char rnd[2] = {0, 0};
	curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&a);
	curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
	CURLcode cc = msg->data.result;
	struct lane *l = a->lane;
	struct endpoint *ep = l->ep;
	struct item *it = a->item;
	/* A body we stopped reading on purpose is not a transport failure. */
	int got_answer = code > 0 && (cc == CURLE_OK || cc == CURLE_WRITE_ERROR);
	struct retry_attempt at = {
	    .status = (int)code,
	    .transport = got_answer ? RETRY_ANSWERED : classify(cc, a),
	    .retry_after_s = a->retry_after_s,
	    .attempts = ++it->attempts,
	    .started_ms = a->started_ms,
	    .failing_since = ep->sub.failing_since,
	    .now_ms = util_now_ms(),
	};
	struct retry_decision dec;

	curl_multi_remove_handle(d->multi, msg->easy_handle);
	attempt_untrack(d, a);
	util_random(rnd, sizeof rnd);
	at.jitter = (unsigned)(rnd[0] << 8 | rnd[1]);
	retry_policy_next(d->cfg, &ep->health, &at, &dec);
	ep->health = dec.ep;
	ep->sub.failing_since = dec.failing_since;
	if (dec.status == DLV_PENDING)
		it->next_at_ms = dec.next_at_ms;
	if (a->blocked && dec.status != DLV_DELIVERED)
		LOG(LOG_WARN, "delivery",
		    "delivery=%s sub=%s range=%s blocked_address: the endpoint resolved to a refused address range",
		    it->delivery_id, l->sub_id, a->blocked);
	if (dec.sub == SUBO_DISABLE)
		LOG(LOG_WARN, "delivery", "sub=%s reason=%s subscription disabled", l->sub_id,
		    code == 410 ? "gone" : "failing");
	record_attempt(d, a, &at, &dec);
	/* An attempt that was in flight when its endpoint was evicted may sit past the new
	 * frontier: until this outcome is recorded, a read-back would find the delivery still
	 * pending and send it again. One at or below the frontier cannot be read back: marking
	 * every outcome made each read-back of a backlog wait for the recorder's commit, and
	 * the sending stopped at every page (18-20 ms). */
	if (ep->spilled && it->seq > ep->loaded_seq) {
		ep->evict_mark = d->results_made;
		ep->page_gen++;
	}
	const struct lease *now_lease = lease_of(d, l->sub_id);
	int lease_moved =
	    !d->own_all && (!owns(d, l->sub_id) || !now_lease || now_lease->epoch != a->epoch);
	metrics_attempt(metrics_outcome_of(&at), util_mono_us() - a->started_us);
	if (!lease_moved) { /* else the store refuses the outcome; the holder sends it again */
		int64_t made_ms = util_id_time_ms(it->event_id); /* the event's id says when */
		if (dec.status == DLV_DELIVERED && made_ms >= 0)
			metrics_delivered(at.now_ms - made_ms);
		else if (dec.status == DLV_FAILED)
			metrics_gave_up();
	}
	if (dec.status != DLV_PENDING || lease_moved) {
		/* Delivered or given up: the next event of the entity may go. Or the lease was
		 * lost (or taken back under a new epoch) while it was on the wire: its outcome
		 * is refused by the store, the delivery stays pending there for the holder, and
		 * nothing of it is retried from here. */
		lane_pop_head(d, l);
		if (lease_moved && owns(d, l->sub_id)) {
			/* Ours again, under a new epoch: what is in memory may now run ahead of
			 * this delivery. All of it is read back, in order, from the store. */
			ep_evict(d, ep, 0);
			ep_rescan(d, ep);
		}
	} else if (a->payload_counted) { /* kept for the next attempt */
		it->payload = a->payload;
		it->payload_len = a->payload_len;
		a->payload = NULL;
		a->payload_counted = 0;
	}
	attempt_free(a);
	schedule(d, l);
	lane_maybe_free(d, l);
	/* As many waiting lanes as there is room for now (not all: that was quadratic), started
	 * here: woken through the heap, they were not in flight yet when the next attempt of the
	 * same pass finished, which counted their room again (each finished attempt woke one
	 * more lane than the one before it: 235,660 start_attempt calls for 30,000 starts). */
	long room = d->winding_down ? 0 : endpoint_cap(d, ep) - ep->in_flight;
	while (room > 0 && ep->waiting.head) {
		struct lane *w = waitq_pop(&ep->waiting);
		int waits = 0;
		if (w->head && !w->in_flight) {
			if (w->head->next_at_ms > at.now_ms ||
			    ep->health.backoff_until_ms > at.now_ms) {
				schedule(d, w);
				room--;
			} else if (start_attempt(d, w, 0) == 0) {
				room--;
			} else {
				/* Waiting again (for a global slot): so would the rest. Otherwise
				 * it was dropped or put off, and the room is still there. */
				waits = w->waiting;
			}
		}
		lane_maybe_free(d, w);
		if (waits)
			break;
	}
	/* A global slot it freed goes to the ring of waiting endpoints (pump_ring). */
}

/* ---- invariants ---- */

#ifndef NDEBUG
/* Checks a first-in-first-out queue of waiting lanes; returns its length. */
static size_t check_waitq(const struct waitq *q, const struct endpoint *ep)
{
	size_t n = 0;
	const struct lane *last = NULL;
	for (const struct lane *l = q->head; l; l = l->wnext, n++) {
		assert(l->waiting && !l->in_flight && l->ep == ep);
		last = l;
	}
	assert(q->tail == last && q->n == n);
	return n;
}

static void check_epq(const struct epq *q, int which)
{
	size_t n = 0;
	const struct endpoint *last = NULL;
	for (const struct endpoint *ep = q->head; ep; ep = ep->q[which].next, n++) {
		assert(ep->q[which].queued);
		last = ep;
	}
	assert(q->tail == last && q->n == n);
}

/* Checks one endpoint and its lanes; adds what they hold to the totals. */
static void check_endpoint(const struct delivery_engine *d, const struct endpoint *ep, size_t *mem,
                           size_t *payload, size_t *inheap, size_t *lanes)
{
	size_t ep_mem = 0, ep_waiting = 0;
	int ep_in_flight = 0;
	for (const struct lane *l = ep->lanes; l; l = l->enext, (*lanes)++) {
		const struct item *last = NULL;
		assert(l->ep == ep && (!l->enext || l->enext->eprev == l));
		assert(!l->in_flight || (l->head && !l->waiting));
		for (const struct item *it = l->head; it; it = it->next, ep_mem++) {
			*payload += it->payload_len;
			last = it;
		}
		assert(l->tail == last);
		ep_in_flight += l->in_flight;
		ep_waiting += l->waiting;
		*inheap += (size_t)l->inheap;
	}
	assert(ep->mem == ep_mem && ep->in_flight == ep_in_flight);
	assert(ep->in_flight >= 0 && ep->in_flight <= endpoint_slots(d));
	assert(check_waitq(&ep->waiting, ep) + check_waitq(&ep->gwaiting, ep) == ep_waiting);
	assert(ep->contending == (ep->mem > 0 || ep->q[EPQ_SPILL].queued || ep->loading));
	assert(!ep->gwaiting.head || ep->q[EPQ_RING].queued);
	*mem += ep_mem;
}

/* The engine's invariants that take a walk over everything it holds: the counts kept as
 * things change (in flight, in memory, in the heap, contending, payload bytes) equal what
 * is there, every queue's links agree with its length, and the heap is a heap. O(n), so
 * only in debug builds and only at a few points (the dispatcher thread, or before it
 * runs or after it stopped). */
static void check_engine(const struct delivery_engine *d)
{
	size_t mem = 0, payload = 0, inheap = 0, lanes = 0, hashed = 0, busy = 0, contend = 0;
	size_t reserved = 0;
	int in_flight = 0, running = 0;
	for (size_t i = 1; i < d->nheap; i++)
		assert(d->heap[(i - 1) / 2].due <= d->heap[i].due);
	for (size_t b = 0; b < HASH_BUCKETS; b++) {
		for (const struct lane *l = d->lanes[b]; l; l = l->hnext)
			hashed++;
		for (const struct endpoint *ep = d->eps[b]; ep; ep = ep->hnext) {
			check_endpoint(d, ep, &mem, &payload, &inheap, &lanes);
			in_flight += ep->in_flight;
			busy += ep->mem > 0;
			contend += (size_t)ep->contending;
			reserved += ep->loading ? ep->loading->want : 0;
		}
	}
	assert(hashed == lanes); /* every lane is in its endpoint's list */
	assert(inheap == d->nheap);
	assert(mem == d->mem_items && contend == d->n_contend && reserved == d->reserved);
	for (const struct endpoint *ep = d->busy; ep; ep = ep->bnext, busy--)
		assert(ep->mem > 0 && (!ep->bnext || ep->bnext->bprev == ep));
	assert(busy == 0);
	for (const struct attempt_ctx *a = d->running; a; a = a->next, running++) {
		assert(a->lane->in_flight && a->item == a->lane->head); /* only a lane's head */
		if (a->payload_counted)
			payload += a->payload_len;
	}
	/* The running attempts are the lanes in flight, counted the same by the engine. */
	assert(running == d->in_flight && in_flight == d->in_flight);
	assert(d->in_flight >= 0 && d->in_flight <= d->cfg->max_in_flight);
	assert(payload == d->payload_bytes && payload <= PAYLOAD_BUDGET);
	check_epq(&d->spill, EPQ_SPILL);
	check_epq(&d->ring, EPQ_RING);
}
#define CHECK_ENGINE(d) check_engine(d)
#else
#define CHECK_ENGINE(d) ((void)0)
#endif

/* ---- the thread ---- */

static void drain_inbox(struct delivery_engine *d)
{
	struct delivery *batch;
	size_t n;
	pthread_mutex_lock(&d->inbox_mu);
	batch = d->inbox;
	n = d->ninbox;
	d->inbox = NULL;
	d->ninbox = d->cap_inbox = 0;
	pthread_mutex_unlock(&d->inbox_mu);
	for (size_t i = 0; i < n; i++) {
		struct delivery *dl = &batch[i];
		if (!owns(d, dl->sub_id)) { /* another node sends it: it hears of it itself */
			free(dl->payload);
			continue;
		}
		struct endpoint *ep = endpoint_get(d, dl->sub_id);
		int join;
		/* Past the endpoint's frontier, while it has deliveries on disk, a later page
		 * brings it in order. At or below it, it is in memory (a requeued one then just
		 * moves up) or came with a page already. A fresh one joins the window only
		 * within the endpoint's share, and only while it is active. */
		if (!ep) /* out of memory: still pending in the store, sent after restart */
			join = 0;
		else if (dl->requeued)
			join = dl->event_seq <= ep->loaded_seq || !ep->spilled;
		else if (dl->event_seq <= ep->loaded_seq) {
			free(dl->payload);
			continue;
		} else if (!d->own_all)
			/* Other nodes commit too: a delivery of theirs with a lower seq may not
			 * have been heard of yet, and joining would move the frontier past it. From
			 * the store, in seq order, nothing is skipped. */
			join = 0;
		else
			join = !ep->spilled && d->mem_items < (size_t)d->cfg->delivery_window &&
			       ep->mem < ep_share(d, ep) && endpoint_refresh(d, ep) == 0 &&
			       (ep->sub.status == SUB_ACTIVE || ep->sub.status == SUB_DELETED);
		if (!join) {
			if (ep)
				ep_spill(d, ep);
			/* A page being read may end past it without it (committed after the read):
			 * the page is cut before it (apply_pages). */
			if (ep && ep->loading && dl->event_seq < ep->missed_min)
				ep->missed_min = dl->event_seq;
			free(dl->payload);
			continue;
		}
		if (!dl->requeued)
			ep->loaded_seq = dl->event_seq;
		lane_add(d, dl);
	}
	free(batch);
}

/* Makes room in the window for an endpoint below its share: the endpoint holding the most
 * over its share gives back its newest deliveries (they stay pending on disk). */
static void make_room(struct delivery_engine *d, const struct endpoint *self)
{
	size_t share = ep_share(d, self);
	struct endpoint *victim = NULL;
	for (struct endpoint *ep = d->busy; ep; ep = ep->bnext)
		if (ep != self && ep->mem > share && (!victim || ep->mem > victim->mem))
			victim = ep;
	if (victim)
		ep_evict(d, victim, share);
}

/* Reads spilled endpoints' pending deliveries back from the store, in turns: each, once it
 * holds half its share or less, gets a page up to its share, so a backlog (or a failing
 * endpoint's deliveries waiting through their retries) of one subscription never keeps
 * another's out of memory. Paused, disabled and deleted ones leave the queue (a
 * subscription change puts them back). */
static void read_back(struct delivery_engine *d)
{
	/* Pages leave an eighth of the window to fresh commits, so another endpoint's new
	 * delivery joins at once rather than making one give back its share. */
	size_t window = (size_t)d->cfg->delivery_window;
	window -= window / 8;
	uint64_t recorded;
	d->recorder_wait = 0;
	if (!d->spill.head)
		return;
	pthread_mutex_lock(&d->rec_mu);
	recorded = d->recorded;
	pthread_mutex_unlock(&d->rec_mu);
	for (size_t turns = d->spill.n; turns > 0 && d->spill.head; turns--) {
		struct endpoint *ep = epq_pop(&d->spill, EPQ_SPILL);
		if (ep->loading) { /* one page at a time: back in the queue once it is applied */
			ep->respill = 1;
			continue;
		}
		if (!owns(d, ep->sub_id)) { /* its lease went to another node */
			ep->spilled = 0;
			contend_update(d, ep);
			continue;
		}
		if (endpoint_refresh(d, ep) != 0) {
			ep_spill(d, ep); /* store trouble: the next turn tries again */
			continue;
		}
		if (ep->sub.status != SUB_ACTIVE) {
			if (ep->sub.status == SUB_DELETED)
				ep->spilled = 0; /* its deliveries were cancelled */
			contend_update(d, ep);
			continue;
		}
		size_t share = ep_share(d, ep);
		if (ep->evict_mark > recorded || ep->mem > share / 2) {
			d->recorder_wait |= ep->evict_mark > recorded;
			ep_spill(d, ep); /* not now: to the end of the queue */
			continue;
		}
		size_t want = share - ep->mem;
		/* A short first page (a resumed backlog's first webhook waited 30-70 ms for a
		 * whole share of 17,500), then a turn of READ_PAGE_MAX each. */
		size_t most = ep->mem ? READ_PAGE_MAX : READ_PAGE_FIRST;
		if (want > most)
			want = most;
		if (d->mem_items + d->reserved + want > window)
			make_room(d, ep);
		size_t held = d->mem_items + d->reserved;
		size_t room = held < window ? window - held : 0;
		if (room < want)
			want = room;
		struct page_req *r = want ? calloc(1, sizeof *r) : NULL;
		if (!r) {
			ep_spill(d, ep);
			continue;
		}
		r->ep = ep;
		snprintf(r->sub_id, sizeof r->sub_id, "%s", ep->sub_id);
		r->after_seq = ep->loaded_seq;
		r->page_gen = ep->page_gen;
		ep->missed_min = INT64_MAX;
		r->want = want;
		/* Spilled while it loads (it may have caught up, then been queued again): a fresh
		 * delivery joining directly now would move the frontier past what the page
		 * brings, and the page would be dropped with deliveries below it unread. */
		ep->spilled = 1;
		ep->loading = r;
		d->reserved += want;
		contend_update(d, ep);
		pthread_mutex_lock(&d->ld_mu);
		if (d->ld_todo_tail)
			d->ld_todo_tail->next = r;
		else
			d->ld_todo = r;
		d->ld_todo_tail = r;
		pthread_cond_signal(&d->ld_cv);
		pthread_mutex_unlock(&d->ld_mu);
	}
}

static void page_free(struct delivery *page, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++)
		free(page[i].payload);
	free(page);
}

/* Takes the pages the loader read. One is applied if its endpoint still wants it: still
 * this node's, active, and its frontier where it was when asked (an eviction or a rescan
 * meanwhile moved it: the page may overlap what is in memory now), with no outcome made
 * past that frontier since; otherwise it is dropped for the next read. The window may have
 * filled with fresh deliveries meanwhile: what does not fit is dropped too, and read again. */
static void apply_pages(struct delivery_engine *d)
{
	size_t window = (size_t)d->cfg->delivery_window;
	window -= window / 8;
	pthread_mutex_lock(&d->ld_mu);
	struct page_req *list = d->ld_done;
	d->ld_done = NULL;
	pthread_mutex_unlock(&d->ld_mu);
	for (struct page_req *r = list, *next; r; r = next) {
		next = r->next;
		struct endpoint *ep = r->ep;
		assert(ep->loading == r && d->reserved >= r->want);
		ep->loading = NULL;
		d->reserved -= r->want;
		int respill = ep->respill;
		ep->respill = 0;
		/* An outcome made past the frontier while it loaded (after a rescan, every one in
		 * memory is) may not have been recorded when the page was read: the page could
		 * hold that delivery as pending, and send it again. */
		if (r->e != LH_OK || !owns(d, ep->sub_id) || ep->loaded_seq != r->after_seq ||
		    ep->page_gen != r->page_gen || endpoint_refresh(d, ep) != 0 ||
		    ep->sub.status != SUB_ACTIVE) {
			page_free(r->page, 0, r->n);
			free(r);
			ep_spill(d, ep); /* read_back sorts it out at its turn */
			continue;
		}
		/* A delivery that came pending meanwhile (re-queued, recovered) below the page's
		 * end was not joined and is not in the page: the page stops before it, and the
		 * next read brings it. */
		size_t take = 0;
		while (take < r->n && r->page[take].event_seq < ep->missed_min)
			take++;
		if (d->mem_items + take > window)
			take = d->mem_items < window ? window - d->mem_items : 0;
		for (size_t i = 0; i < take; i++)
			lane_add(d, &r->page[i]);
		assert(take == 0 || d->mem_items <= window); /* a page never overfills it */
		if (take)
			ep->loaded_seq = r->page[take - 1].event_seq;
		if (r->n < r->want && take == r->n && !respill) {
			ep->spilled = 0; /* caught up: fresh commits join directly again */
		} else {
			ep_spill(d, ep); /* the next page: asked for in this same pass */
		}
		contend_update(d, ep);
		page_free(r->page, take, r->n);
		free(r);
	}
}

static void *loader_main(void *arg)
{
	struct delivery_engine *d = arg;
	pthread_setname_np(pthread_self(), "lh-loader");
	pthread_mutex_lock(&d->ld_mu);
	for (;;) {
		while (!d->ld_todo && !d->ld_stop)
			pthread_cond_wait(&d->ld_cv, &d->ld_mu);
		if (d->ld_stop)
			break;
		struct page_req *r = d->ld_todo;
		if (!(d->ld_todo = r->next))
			d->ld_todo_tail = NULL;
		pthread_mutex_unlock(&d->ld_mu);
		r->e = d->st->ops->delivery_pending(d->st, r->after_seq, r->sub_id, r->want,
		                                    &r->page, &r->n);
		pthread_mutex_lock(&d->ld_mu);
		r->next = d->ld_done;
		d->ld_done = r;
		curl_multi_wakeup(d->multi);
	}
	pthread_mutex_unlock(&d->ld_mu);
	return NULL;
}

/* 1 if nothing refers to ep and it holds nothing worth keeping: no lanes, nothing in
 * flight or queued, nothing of it on disk past its frontier, and no failure streak or
 * backoff to remember unless its subscription is gone, and every outcome of it recorded
 * (lease_rebalance gives a lease without a record back at once). Its record is then freed,
 * so memory follows the live subscriptions with deliveries, not every subscription ever
 * seen. */
static int ep_idle(struct delivery_engine *d, struct endpoint *ep, int64_t now, uint64_t recorded)
{
	if (ep->lanes || ep->in_flight || ep->mem || ep->spilled || ep->contending || ep->loading ||
	    ep->q[EPQ_SPILL].queued || ep->q[EPQ_RING].queued || ep->waiting.head ||
	    ep->gwaiting.head || ep->outcome_mark > recorded)
		return 0;
	if (ep->health.streak == 0 && ep->health.backoff_until_ms <= now)
		return 1;
	return endpoint_refresh(d, ep) == 0 && ep->sub.status == SUB_DELETED;
}

/* After a subscription change: every waiting lane tries again (paused ones leave memory,
 * resumed ones may go), endpoints with deliveries on disk that are active again return to
 * the spill queue, and idle endpoint records are freed. */
static void subs_changed(struct delivery_engine *d)
{
	int64_t now = util_now_ms();
	size_t kept = 0, freed = 0;
	pthread_mutex_lock(&d->rec_mu);
	uint64_t recorded = d->recorded;
	pthread_mutex_unlock(&d->rec_mu);
	for (size_t b = 0; b < HASH_BUCKETS; b++)
		for (struct endpoint **pp = &d->eps[b], *ep; (ep = *pp) != NULL;) {
			if (ep_idle(d, ep, now, recorded)) {
				*pp = ep->hnext;
				free(ep);
				freed++;
				continue;
			}
			kept++;
			wake_all(d, &ep->waiting);
			wake_all(d, &ep->gwaiting);
			if (ep->spilled)
				ep_spill(d, ep);
			pp = &ep->hnext;
		}
	LOG(LOG_DEBUG, "delivery", "endpoints=%zu freed=%zu subscriptions changed", kept, freed);
}

/* Hands free global slots to the endpoints waiting for one, one lane each in turn, so an
 * endpoint with thousands of lanes waiting cannot make another's single one wait behind
 * them. */
static void pump_ring(struct delivery_engine *d, int64_t now)
{
	while (d->ring.head && d->in_flight < d->cfg->max_in_flight) {
		struct endpoint *ep = epq_pop(&d->ring, EPQ_RING);
		if (!ep->gwaiting.head)
			continue;
		struct lane *l = waitq_pop(&ep->gwaiting);
		if (ep->gwaiting.head)
			epq_push(&d->ring, EPQ_RING, ep);
		if (l->head && !l->in_flight) {
			if (l->head->next_at_ms > now || ep->health.backoff_until_ms > now)
				schedule(d, l);
			else
				start_attempt(d, l, 1);
		}
		lane_maybe_free(d, l);
	}
}

/* ---- news from other nodes, and leases ---- */

/* Every backlog is to be read again at the next turn (news may have been lost, or a
 * read-back could not be made): under inbox_mu, since the hook sets it too. */
static void news_lost_set(struct delivery_engine *d)
{
	pthread_mutex_lock(&d->inbox_mu);
	d->news_lost = 1;
	pthread_mutex_unlock(&d->inbox_mu);
}

/* Makes the engine read a subscription's whole backlog again from its start: deliveries
 * older than its frontier may be pending again (or were never heard of). What is already
 * in memory is matched by delivery id, not added twice. */
static void ep_rescan(struct delivery_engine *d, struct endpoint *ep)
{
	ep->loaded_seq = 0;
	/* Outcomes on their way to the store: those deliveries must not be read as pending. */
	ep->evict_mark = d->results_made;
	ep->page_gen++;
	ep_spill(d, ep);
}

/* Reads again the backlog of every subscription this node sends that has one (after news
 * may have been lost, and for newly taken leases: only (only) if set, those in it). */
static void rescan_pending(struct delivery_engine *d, const struct lease *only, size_t nonly)
{
	struct sub_ref *subs = NULL;
	size_t n = 0;
	if (d->st->ops->delivery_pending_subs(d->st, &subs, &n) != LH_OK) {
		news_lost_set(d); /* try again at the next turn of the loop */
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!owns(d, subs[i].sub_id))
			continue;
		if (only) {
			size_t k = 0;
			while (k < nonly && strcmp(only[k].sub_id, subs[i].sub_id) != 0)
				k++;
			if (k == nonly)
				continue;
		}
		struct endpoint *ep = endpoint_get(d, subs[i].sub_id);
		if (ep)
			ep_rescan(d, ep);
	}
	free(subs);
}

/* Takes the news the hook queued: other nodes' deliveries to read back. */
static void drain_news(struct delivery_engine *d)
{
	pthread_mutex_lock(&d->inbox_mu);
	struct sub_news *news = d->news;
	size_t n = d->nnews;
	int lost = d->news_lost;
	d->news = NULL;
	d->nnews = d->cap_news = 0;
	d->news_lost = 0;
	pthread_mutex_unlock(&d->inbox_mu);
	if (lost)
		rescan_pending(d, NULL, 0);
	for (size_t i = 0; i < n; i++) {
		if (!owns(d, news[i].sub_id))
			continue;
		struct endpoint *ep = endpoint_get(d, news[i].sub_id);
		if (!ep)
			news_lost_set(d); /* out of memory: every backlog again, later */
		else if (news[i].rescan)
			ep_rescan(d, ep);
		else
			ep_spill(d, ep); /* read from its frontier on */
	}
	free(news);
}

/* Stops sending a subscription's deliveries: those in memory leave it (they stay pending
 * in the store for the next holder); attempts in flight finish, and their outcomes are
 * refused by the store if the lease has passed on meanwhile. */
static void ep_disown(struct delivery_engine *d, const char *sub_id)
{
	struct endpoint *ep = endpoint_find(d, sub_id);
	if (ep)
		ep_evict(d, ep, 0); /* read_back drops it from the queue: not owned */
}

/* Replaces the leases held with `got` (ordered by sub_id): lost ones stop, new ones (or
 * ones lost and taken again: another node may have sent meanwhile) are read from the
 * start of their backlog. */
static void lease_apply(struct delivery_engine *d, struct lease *got, size_t n)
{
	struct lease *old = d->leases, *gained = NULL;
	size_t nold = d->nleases, ngained = 0, i = 0, j = 0;
	if (n)
		gained = malloc(n * sizeof *gained);
	d->leases = got; /* from here on, owns() answers for the new set */
	d->nleases = n;
	size_t still = 0;
	for (size_t k = 0; k < d->nleaving; k++) {
		const struct lease *h = lease_find(got, n, d->leaving[k].sub_id);
		if (h && h->epoch == d->leaving[k].epoch)
			d->leaving[still++] = d->leaving[k];
	}
	d->nleaving = still;
	while (i < nold || j < n) {
		int c = i == nold ? 1 : j == n ? -1 : strcmp(old[i].sub_id, got[j].sub_id);
		if (c < 0 || (c == 0 && old[i].epoch != got[j].epoch))
			ep_disown(d, old[i].sub_id);
		if ((c > 0 || (c == 0 && old[i].epoch != got[j].epoch)) && gained)
			gained[ngained++] = got[j];
		i += c <= 0;
		j += c >= 0;
	}
	if (ngained)
		rescan_pending(d, gained, ngained);
	else if (n && !gained)
		news_lost_set(d); /* out of memory: read every backlog again */
	if (nold != n || ngained)
		LOG(LOG_INFO, "delivery", "held=%zu taken=%zu lost=%zu leases changed", n, ngained,
		    nold + ngained - n);
	free(gained);
	free(old);
}

/* Drops every lease held (not renewed in time): nothing more is sent under them. */
static void lease_drop_all(struct delivery_engine *d)
{
	LOG(LOG_WARN, "delivery",
	    "held=%zu the leases were not renewed in time: sending stops until they are",
	    d->nleases);
	lease_apply(d, NULL, 0);
}

static int cmp_lease(const void *a, const void *b)
{
	return strcmp(((const struct lease *)a)->sub_id, ((const struct lease *)b)->sub_id);
}

/* Gives back leases over this node's share, so that a node that joined gets its part, in
 * two steps: a subscription chosen to leave starts nothing new (owns() says no, and its
 * deliveries leave memory), and its lease is given back once nothing of it is in flight
 * and every outcome is recorded (the next holder would otherwise find a delivery just
 * answered still pending, and send it again). */
static void lease_rebalance(struct delivery_engine *d, size_t share)
{
	pthread_mutex_lock(&d->rec_mu);
	uint64_t recorded = d->recorded;
	pthread_mutex_unlock(&d->rec_mu);
	/* Those that have drained go back. */
	struct lease *give = d->nleaving ? malloc(d->nleaving * sizeof *give) : NULL;
	size_t k = 0, still = 0;
	for (size_t i = 0; i < d->nleaving; i++) {
		struct lease lv = d->leaving[i];
		struct endpoint *ep = endpoint_find(d, lv.sub_id);
		if (give && (!ep || (ep->in_flight == 0 && ep->outcome_mark <= recorded)))
			give[k++] = lv;
		else
			d->leaving[still++] = lv;
	}
	d->nleaving = still;
	if (k && d->st->ops->lease_release(d->st, give, k) == LH_OK) {
		/* The set without them, still ordered. */
		struct lease *keep = malloc((d->nleases - k) * sizeof *keep + 1);
		if (keep) {
			size_t m = 0;
			for (size_t i = 0; i < d->nleases; i++)
				if (!lease_find(give, k, d->leases[i].sub_id))
					keep[m++] = d->leases[i];
			LOG(LOG_INFO, "delivery", "released=%zu share=%zu leases given back", k,
			    share);
			lease_apply(d, keep, m);
		}
	} else {
		for (size_t i = 0; i < k; i++) /* not given back: try again next time */
			d->leaving[d->nleaving++] = give[i];
		if (k)
			qsort(d->leaving, d->nleaving, sizeof *d->leaving, cmp_lease);
	}
	free(give);
	/* Over the share (those already leaving aside): more start leaving, the idle first. */
	if (d->nleases <= share + d->nleaving)
		return;
	size_t more = d->nleases - share - d->nleaving;
	struct lease *grown = realloc(d->leaving, (d->nleaving + more) * sizeof *grown);
	if (!grown)
		return;
	d->leaving = grown;
	for (int pass = 0; pass < 2 && more; pass++)
		for (size_t i = 0; i < d->nleases && more; i++) {
			const struct lease *l = &d->leases[i];
			if (lease_find(d->leaving, d->nleaving, l->sub_id))
				continue;
			struct endpoint *ep = endpoint_find(d, l->sub_id);
			if (pass == 0 && ep && ep->in_flight)
				continue;
			d->leaving[d->nleaving++] = *l;
			qsort(d->leaving, d->nleaving, sizeof *d->leaving, cmp_lease);
			ep_disown(d, l->sub_id);
			more--;
		}
}

/* Renews the leases every third of lease-time and takes free ones up to this node's share;
 * stops sending under them two thirds of lease-time after the last renewal began, so a node
 * cut off from the store stops before another node can take them over. */
static void lease_tick(struct delivery_engine *d)
{
	if (d->own_all)
		return;
	int64_t now = mono_ms();
	/* Past the deadline on this node's own clock (it could not renew, or it stalled: a
	 * turn of the loop that outlasted a third of lease-time). Meanwhile owns() said no, so
	 * attempts that ended and lanes that were to start let their deliveries go from
	 * memory, pending in the store "for the holder". This node may well be the holder
	 * again, under the same epochs: dropped here, every lease it takes back is read from
	 * the start of its backlog, and nothing stays pending until a restart. */
	if (d->nleases && now >= d->lease_until_ms)
		lease_drop_all(d);
	if (now < d->lease_next_ms)
		return;
	struct lease *got = NULL;
	size_t n = 0, share = 0;
	int all = 0;
	int64_t expiry = -1;
	enum lh_err e =
	    d->st->ops->lease_sync(d->st, d->cfg->lease_ms, &got, &n, &share, &all, &expiry);
	if (e != LH_OK) {
		if (!d->lease_failing)
			LOG(LOG_WARN, "delivery",
			    "err=%s the leases could not be renewed; trying again", err_code(e));
		d->lease_failing = 1;
		d->lease_next_ms = now + 1000;
		return;
	}
	if (d->lease_failing)
		LOG(LOG_INFO, "delivery", "held=%zu the leases are renewed again", n);
	if (mono_ms() - now > d->cfg->lease_ms / 3) {
		/* The renewal itself took long: the store's clock began the new leases when
		 * it started, which is what the deadline below counts from. */
		LOG(LOG_WARN, "delivery", "ms=%lld a lease renewal took long",
		    (long long)(mono_ms() - now));
	}
	d->lease_failing = 0;
	if (all) {
		d->own_all = 1;
		free(got);
		return;
	}
	d->lease_until_ms = now + d->cfg->lease_ms * 2 / 3;
	d->lease_next_ms = now + d->cfg->lease_ms / 3;
	/* Another node's lease runs out before that (it died, or stalled): look again right
	 * after, so its subscriptions are taken over a lease-time after its last renewal, not
	 * up to a third later. */
	if (expiry >= 0 && now + expiry + LEASE_SOON_MS / 4 < d->lease_next_ms)
		d->lease_next_ms = now + expiry + LEASE_SOON_MS / 4;
	lease_apply(d, got, n);
	lease_rebalance(d, share);
}

static void *dispatch_main(void *arg)
{
	struct delivery_engine *d = arg;
	pthread_setname_np(pthread_self(), "lh-dispatch");
	int64_t stop_deadline = 0;
	unsigned loops = 0;

	for (;;) {
		pthread_mutex_lock(&d->inbox_mu);
		int stopping = d->stopping;
		pthread_mutex_unlock(&d->inbox_mu);
		int64_t now = util_now_ms();
		if (stopping && !stop_deadline)
			stop_deadline = now + STOP_GRACE_MS;
		d->winding_down = stopping;
		if (stopping && (d->in_flight == 0 || now >= stop_deadline))
			break;
		lease_tick(d);
		drain_news(d);
		drain_inbox(d);
		uint64_t v = d->st->ops->subs_version(d->st);
		if (v != d->subs_version) {
			d->subs_version = v;
			subs_changed(d);
			CHECK_ENGINE(d);
			/* A new (or re-enabled) subscription has no lease yet: every node looks at
			 * once (at most five times a second), not a third of lease-time later. */
			if (!d->own_all && d->lease_next_ms > mono_ms() + LEASE_SOON_MS)
				d->lease_next_ms = mono_ms() + LEASE_SOON_MS;
		}
		apply_pages(d);
		read_back(d);
		while (!stopping && d->nheap && d->heap[0].due <= now) {
			struct heap_ent top = d->heap[0];
			heap_pop(d);
			assert(top.lane->inheap > 0);
			top.lane->inheap--;
			if (top.gen != top.lane->gen || top.lane->in_flight || !top.lane->head) {
				lane_maybe_free(d, top.lane); /* stale entry */
				continue;
			}
			if (top.lane->head->next_at_ms > now ||
			    top.lane->ep->health.backoff_until_ms > now)
				schedule(d, top.lane);
			else
				start_attempt(d, top.lane, 0);
			lane_maybe_free(d, top.lane);
		}
		if (!stopping)
			pump_ring(d, now);
		if (d->nresults && (now - d->first_result_ms >= FLUSH_MS || stopping))
			flush_results(d);
		int64_t wait = 1000;
		if (d->nheap && !stopping)
			wait = d->heap[0].due - now;
		if (d->nresults && FLUSH_MS < wait)
			wait = FLUSH_MS;
		if (d->recorder_wait && FLUSH_MS < wait)
			wait = FLUSH_MS; /* a read-back waits for outcomes to be recorded */
		if (!d->own_all && d->lease_next_ms - mono_ms() < wait)
			wait = d->lease_next_ms - mono_ms();
		if (wait < 0)
			wait = 0;
		int running = 0;
		curl_multi_poll(d->multi, NULL, 0, (int)wait, NULL);
		/* The attempts that finished ones started (finish_attempt) go out in the same
		 * turn, not after another pass of the loop and another poll: a few rounds at
		 * most, so new deliveries, read-backs and flushes keep their turn. */
		for (int round = 0; round < PERFORM_ROUNDS; round++) {
			uint64_t starts = d->starts;
			curl_multi_perform(d->multi, &running);
			CURLMsg *msg;
			int left;
			while ((msg = curl_multi_info_read(d->multi, &left)))
				if (msg->msg == CURLMSG_DONE)
					finish_attempt(d, msg);
			if (d->starts == starts)
				break;
		}
		if (++loops % 64 == 0) /* often enough to catch a drift, cheap enough to run */
			CHECK_ENGINE(d);
	}
	/* Attempts still running past the grace period are abandoned (delivery_stop frees
	 * them): not recorded, so they stay pending in the store and go out after restart. */
	flush_results(d);
	return NULL;
}

/* The store's commit hook (any thread): fresh deliveries join the inbox, taking their
 * payloads, and other nodes' news its own queue; either way the loop wakes (a subscription
 * change too: it then sees the new subs_version, so a resumed one's deliveries go at once).
 * Out of memory, what cannot be queued is read from the store again (news_lost). */
static void on_commit(void *ctx, struct store_news *nw)
{
	struct delivery_engine *d = ctx;
	pthread_mutex_lock(&d->inbox_mu);
	if (nw->nfresh) {
		if (UTIL_GROW(d->inbox, d->cap_inbox, d->ninbox + nw->nfresh, 256)) {
			for (size_t i = 0; i < nw->nfresh; i++)
				free(nw->fresh[i].payload);
			d->news_lost = 1;
		} else {
			memcpy(d->inbox + d->ninbox, nw->fresh, nw->nfresh * sizeof *nw->fresh);
			d->ninbox += nw->nfresh;
		}
	}
	if (nw->nsubs) {
		if (UTIL_GROW(d->news, d->cap_news, d->nnews + nw->nsubs, 64)) {
			d->news_lost = 1;
		} else {
			memcpy(d->news + d->nnews, nw->subs, nw->nsubs * sizeof *nw->subs);
			d->nnews += nw->nsubs;
		}
	}
	d->news_lost |= nw->lost;
	pthread_mutex_unlock(&d->inbox_mu);
	curl_multi_wakeup(d->multi);
}

enum lh_err delivery_start(struct store *st, const struct config *cfg, struct delivery_engine **out)
{
	struct delivery_engine *d = calloc(1, sizeof *d);
	enum lh_err e;

	if (!d)
		return LH_ENOMEM;
	d->st = st;
	d->cfg = cfg;
	pthread_mutex_init(&d->inbox_mu, NULL);
	pthread_mutex_init(&d->rec_mu, NULL);
	pthread_cond_init(&d->rec_cv, NULL);
	pthread_cond_init(&d->rec_room, NULL);
	pthread_mutex_init(&d->ld_mu, NULL);
	pthread_cond_init(&d->ld_cv, NULL);
	d->results = calloc(RESULT_BATCH, sizeof *d->results);
	d->multi = curl_multi_init();
	if (!d->results || !d->multi) {
		e = LH_ENOMEM;
		goto fail;
	}
	for (int k = 0; k < SLOT_CACHES; k++) {
		/* Used by the dispatcher thread only: no lock functions. */
		if (!(d->caches[k] = curl_share_init()) ||
		    curl_share_setopt(d->caches[k], CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) !=
		        CURLSHE_OK) {
			e = LH_ENOMEM;
			goto fail;
		}
	}
	curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)cfg->max_in_flight);
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_in_flight);
	d->subs_version = st->ops->subs_version(st);
	/* The hook first, then the subscriptions with a backlog and their first pages: a
	 * delivery committed in between is either in a page or past its endpoint's frontier
	 * (then a page brings it), never lost or doubled. */
	st->ops->set_commit_hook(st, on_commit, d);
	/* On a shared store, the leases first: only their subscriptions' backlogs are ours. */
	lease_tick(d);
	struct sub_ref *subs = NULL;
	size_t nsubs = 0;
	e = st->ops->delivery_pending_subs(st, &subs, &nsubs);
	if (e != LH_OK)
		goto fail;
	for (size_t i = 0; i < nsubs; i++) {
		if (!owns(d, subs[i].sub_id))
			continue;
		struct endpoint *ep = endpoint_get(d, subs[i].sub_id);
		if (!ep) {
			free(subs);
			e = LH_ENOMEM;
			goto fail;
		}
		ep_spill(d, ep);
	}
	free(subs);
	if (pthread_create(&d->loader, NULL, loader_main, d) != 0) {
		e = LH_EIO;
		goto fail;
	}
	d->loader_started = 1;
	read_back(d); /* the first pages are asked for; the dispatcher applies them */
	CHECK_ENGINE(d);
	LOG(LOG_INFO, "delivery",
	    "reading=%zu subs_with_backlog=%zu window=%d max_in_flight=%d delivery engine ready",
	    d->reserved, nsubs, cfg->delivery_window, cfg->max_in_flight);
	if (pthread_create(&d->recorder, NULL, recorder_main, d) != 0) {
		e = LH_EIO;
		goto fail;
	}
	d->recorder_started = 1;
	if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
		e = LH_EIO;
		goto fail;
	}
	d->started = 1;
	*out = d;
	return LH_OK;
fail:
	st->ops->set_commit_hook(st, NULL, NULL);
	delivery_stop(d);
	return e;
}

void delivery_stop(struct delivery_engine *d)
{
	if (!d)
		return;
	d->st->ops->set_commit_hook(d->st, NULL, NULL);
	if (d->started) {
		pthread_mutex_lock(&d->inbox_mu);
		d->stopping = 1;
		pthread_mutex_unlock(&d->inbox_mu);
		curl_multi_wakeup(d->multi);
		pthread_join(d->thread, NULL);
	}
	if (d->recorder_started) {
		/* The dispatcher has handed over its last outcomes: record them, then stop. */
		pthread_mutex_lock(&d->rec_mu);
		d->rec_stop = 1;
		pthread_cond_signal(&d->rec_cv);
		pthread_mutex_unlock(&d->rec_mu);
		pthread_join(d->recorder, NULL);
	}
	if (d->loader_started) {
		pthread_mutex_lock(&d->ld_mu);
		d->ld_stop = 1;
		pthread_cond_signal(&d->ld_cv);
		pthread_mutex_unlock(&d->ld_mu);
		pthread_join(d->loader, NULL);
	}
	for (struct page_req *lists[] = {d->ld_todo, d->ld_done}, **l = lists; l < lists + 2; l++)
		for (struct page_req *r = *l, *next; r; r = next) {
			next = r->next;
			r->ep->loading = NULL;
			d->reserved -= r->want;
			contend_update(d, r->ep);
			page_free(r->page, 0, r->n);
			free(r);
		}
	d->ld_todo = d->ld_done = NULL;
	/* Every outcome is recorded: the other nodes may take these over at once. */
	if (d->nleases && d->st->ops->lease_release(d->st, d->leases, d->nleases) == LH_OK)
		LOG(LOG_INFO, "delivery", "released=%zu leases given back at stop", d->nleases);
	free(d->leases);
	free(d->leaving);
	free(d->news);
	pthread_mutex_destroy(&d->rec_mu);
	pthread_cond_destroy(&d->rec_cv);
	pthread_cond_destroy(&d->rec_room);
	pthread_mutex_destroy(&d->ld_mu);
	pthread_cond_destroy(&d->ld_cv);
	CHECK_ENGINE(d);
	/* Free what is left; anything unsent is still pending in the store. */
	for (struct attempt_ctx *a = d->running, *next; a; a = next) {
		next = a->next;
		curl_multi_remove_handle(d->multi, a->h);
		attempt_free(a);
	}
	for (size_t b = 0; b < HASH_BUCKETS; b++) {
		for (struct lane *l = d->lanes[b], *next; l; l = next) {
			next = l->hnext;
			while (l->head)
				lane_pop_head(d, l);
			free(l);
		}
	}
	for (size_t b = 0; b < HASH_BUCKETS; b++) { /* after every lane: lanes point at them */
		for (struct endpoint *e = d->eps[b], *next; e; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	for (int k = 0; k < SLOT_CACHES; k++)
		for (struct attempt_ctx *a = d->spare[k], *next; a; a = next) {
			next = a->next;
			attempt_destroy(a);
		}
	if (d->multi)
		curl_multi_cleanup(d->multi);
	for (int k = 0; k < SLOT_CACHES; k++) /* after every handle that used them */
		if (d->caches[k])
			curl_share_cleanup(d->caches[k]);
	pthread_mutex_destroy(&d->inbox_mu);
	for (size_t i = 0; i < d->ninbox; i++)
		free(d->inbox[i].payload); /* committed after the thread's last look */
	free(d->heap);
	free(d->inbox);
	free(d->results);
	free(d);
}
