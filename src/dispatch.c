/* dispatch.c: see dispatch.h.
 *
 * Data, all owned by the dispatcher thread:
 * - lanes: hash of (sub, entity) -> FIFO of pending items ordered by event sequence;
 * - endpoints: hash of sub -> cached subscription, in-flight count, failure streak;
 * - a min-heap of (due time, lane) for lanes whose head may start; lanes that cannot start
 *   wait in a FIFO: their endpoint's (its cap reached, or older deliveries still coming back
 *   from disk) or the global one (the global cap). A finished attempt lets as many lanes
 *   try again as it freed room for; a subscription change or a reload lets all of them.
 *   Heap entries are lazy: a lane's `gen` invalidates old ones.
 * The inbox (new deliveries from other threads) is the only shared state, under inbox_mu.
 */
#define _GNU_SOURCE
#include "dispatch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "addr.h"
#include "app.h"
#include "events.h"
#include "log.h"
#include "sign.h"

#define HASH_BUCKETS      65536
#define RESULT_BATCH      512
#define FLUSH_MS          20
#define STREAK_BACKOFF    5 /* consecutive failures before an endpoint is backed off */
#define BACKOFF_MAX_MS    60000
#define RESPONSE_READ_CAP (1 << 20)
#define STOP_GRACE_MS     10000
#define PAYLOAD_BUDGET    (32u << 20) /* payload bytes kept in memory; past it, read at send */

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

/* Lanes waiting for room, first in first out (linked through lane.wnext). */
struct waitq {
	struct lane *head, *tail;
	size_t n;
};

struct lane {
	struct lane *hnext; /* hash chain */
	struct lane *wnext; /* waiting list */
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
	int streak; /* consecutive failures */
	int64_t backoff_until_ms;
	int64_t backoff_since_ms; /* when the current backoff began (0: none) */
	int backoff_level;        /* doublings of the pause: grows only when a probe fails */
	int evicted;              /* its items left memory while paused or disabled */
	int64_t reload_seq;       /* reloading them: the last event_seq brought back so far */
	struct waitq waiting;     /* its lanes waiting for room under its cap */
	struct waitq held;        /* its lanes waiting for older deliveries still on disk */
	size_t lanes_busy;        /* its lanes with deliveries in memory */
};

struct heap_ent {
	int64_t due;
	struct lane *lane;
	unsigned gen;
};

struct attempt_ctx {
	struct lane *lane;
	struct item *item;
	CURL *h;
	struct curl_slist *hdrs;
	char *payload;
	size_t payload_len;
	int payload_counted; /* taken from its item: counts in the dispatcher's payload_bytes */
	int64_t started_ms, started_us;
	char resp[ATTEMPT_BODY_CAP];
	size_t resp_len, resp_total;
	int retry_after_s;
	const char *blocked;
	struct dispatcher *d;
	struct attempt_ctx *prev, *next; /* the dispatcher's list of running attempts */
};

struct rec_batch {
	struct rec_batch *next;
	size_t n;
	struct delivery_result r[];
};

#define RECORD_QUEUE_CAP 65536 /* results; past it the dispatcher waits for the recorder */

struct dispatcher {
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
	struct waitq waiting; /* lanes waiting for room under the global cap */
	struct attempt_ctx *running;
	CURL *idle[64]; /* easy handles kept for reuse (curl_easy_reset keeps their caches) */
	int nidle;
	int in_flight;
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

	/* The window: at most cfg->delivery_window items in memory. Pending deliveries past
	 * it stay in the store (spilled) and are paged in by event_seq as the window drains. */
	size_t mem_items;
	size_t payload_bytes; /* payloads held by items and attempts, at most PAYLOAD_BUDGET */
	int64_t loaded_seq;   /* every pending delivery with event_seq <= this is in memory */
	int spilled;
	int reloading;  /* some active subscription still has evicted deliveries on disk */
	int reload_now; /* one of those has nothing in memory that may go: reload more now */
};

static uint64_t hash2(const char *a, const char *b)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *a; a++)
		h = (h ^ (unsigned char)*a) * 1099511628211ULL;
	h = (h ^ 0x1f) * 1099511628211ULL;
	for (; b && *b; b++)
		h = (h ^ (unsigned char)*b) * 1099511628211ULL;
	return h;
}

/* ---- heap ---- */

static int heap_push(struct dispatcher *d, struct lane *l, int64_t due)
{
	if (d->nheap == d->cap_heap) {
		size_t ncap = d->cap_heap ? d->cap_heap * 2 : 1024;
		struct heap_ent *nh = realloc(d->heap, ncap * sizeof *nh);
		if (!nh)
			return -1;
		d->heap = nh;
		d->cap_heap = ncap;
	}
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
	return 0;
}

static void heap_pop(struct dispatcher *d)
{
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
}

/* Puts a lane whose head may be attempted at its due time into the heap. */
static void schedule(struct dispatcher *d, struct lane *l)
{
	if (!l->head || l->in_flight || l->waiting)
		return;
	int64_t due = l->head->next_at_ms;
	if (l->ep->backoff_until_ms > due)
		due = l->ep->backoff_until_ms;
	if (heap_push(d, l, due) != 0)
		LOG(LOG_ERROR, "dispatch", "out of memory scheduling a lane");
}

static void wait_lane(struct waitq *q, struct lane *l)
{
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

static void lane_maybe_free(struct dispatcher *d, struct lane *l);

/* Lets the first n waiting lanes of q try again (n < 0: all of them). */
static void wake(struct dispatcher *d, struct waitq *q, long n)
{
	for (; q->head && n != 0; n--) {
		struct lane *l = q->head;
		q->head = l->wnext;
		if (!q->head)
			q->tail = NULL;
		q->n--;
		l->waiting = 0;
		schedule(d, l);
		lane_maybe_free(d, l);
	}
}

static int endpoint_cap(const struct dispatcher *d, const struct endpoint *ep)
{
	return ep->streak >= STREAK_BACKOFF ? 1 : d->cfg->max_in_flight_per_endpoint;
}

/* ---- lanes and endpoints ---- */

static struct endpoint *endpoint_get(struct dispatcher *d, const char *sub_id)
{
	uint64_t b = hash2(sub_id, NULL) % HASH_BUCKETS;
	for (struct endpoint *e = d->eps[b]; e; e = e->hnext)
		if (strcmp(e->sub_id, sub_id) == 0)
			return e;
	struct endpoint *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	snprintf(e->sub_id, sizeof e->sub_id, "%s", sub_id);
	e->hnext = d->eps[b];
	d->eps[b] = e;
	return e;
}

static struct lane *lane_get(struct dispatcher *d, const char *sub_id, const char *entity_id)
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
	return l;
}

/* Keeps a delivery's payload with its item while the budget allows; frees it otherwise. */
static void item_take_payload(struct dispatcher *d, struct item *it, struct delivery *dl)
{
	size_t len = dl->payload ? strlen(dl->payload) : 0;
	if (dl->payload && d->payload_bytes + len <= PAYLOAD_BUDGET) {
		it->payload = dl->payload;
		it->payload_len = len;
		d->payload_bytes += len;
	} else {
		free(dl->payload);
	}
	dl->payload = NULL;
}

/* Adds a pending delivery to its lane in sequence order (taking its payload); a delivery
 * already queued (a retry request for a waiting delivery) just becomes due earlier. */
static void lane_add(struct dispatcher *d, struct delivery *dl)
{
	struct lane *l = lane_get(d, dl->sub_id, dl->entity_id);
	if (!l) {
		free(dl->payload);
		dl->payload = NULL;
		LOG(LOG_ERROR, "dispatch",
		    "delivery=%s out of memory; it stays pending in the store "
		    "and is sent after restart",
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
		LOG(LOG_ERROR, "dispatch", "delivery=%s out of memory", dl->delivery_id);
		free(dl->payload);
		dl->payload = NULL;
		return;
	}
	d->mem_items++;
	l->ep->lanes_busy += !l->head;
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
	if (it == l->head)
		schedule(d, l);
}

static void lane_pop_head(struct dispatcher *d, struct lane *l)
{
	struct item *it = l->head;
	d->mem_items--;
	l->head = it->next;
	if (!l->head) {
		l->tail = NULL;
		l->ep->lanes_busy--;
	}
	if (l->ep->evicted && l->ep->sub.status == SUB_ACTIVE && l->ep->held.n >= l->ep->lanes_busy)
		d->reload_now = 1; /* what may go of a reloading subscription is gone */
	d->payload_bytes -= it->payload_len;
	free(it->payload);
	free(it);
}

/* Frees a lane nothing refers to any more (no items, nothing in flight, not waiting, no
 * heap entry), so memory follows the pending deliveries, not every entity ever seen. */
static void lane_maybe_free(struct dispatcher *d, struct lane *l)
{
	if (l->head || l->in_flight || l->waiting || l->inheap)
		return;
	struct lane **pp = &d->lanes[hash2(l->sub_id, l->entity_id) % HASH_BUCKETS];
	while (*pp && *pp != l)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = l->hnext;
	free(l);
}

/* Refreshes the cached subscription when any subscription changed since it was read. */
static int endpoint_refresh(struct dispatcher *d, struct endpoint *ep)
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

/* ---- results ---- */

/* Hands the buffered outcomes to the recorder thread (waiting only if it is far behind). */
static void flush_results(struct dispatcher *d)
{
	if (!d->nresults)
		return;
	struct rec_batch *b = malloc(sizeof *b + d->nresults * sizeof b->r[0]);
	if (!b) {
		/* Not recorded: the deliveries stay pending in the store and go out again after
		 * a restart (at least once, never lost). */
		LOG(LOG_ERROR, "dispatch", "n=%zu out of memory recording outcomes", d->nresults);
		d->nresults = 0;
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

static void *recorder_main(void *arg)
{
	struct dispatcher *d = arg;
	pthread_setname_np(pthread_self(), "lh-recorder");
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
			enum lh_err e = d->st->ops->delivery_record(d->st, b->r, b->n);
			if (e != LH_OK)
				/* Not recorded: still pending in the store, sent again after a
				 * restart (at least once, never lost). */
				LOG(LOG_ERROR, "dispatch", "n=%zu err=%s cannot record outcomes",
				    b->n, err_code(e));
			pthread_mutex_lock(&d->rec_mu);
			d->rec_queued -= b->n;
			pthread_cond_signal(&d->rec_room);
			pthread_mutex_unlock(&d->rec_mu);
			free(b);
		}
	}
}

static void add_result(struct dispatcher *d, const struct delivery_result *r)
{
	if (d->nresults == 0)
		d->first_result_ms = util_now_ms();
	d->results[d->nresults++] = *r;
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
		util_parse_retry_after(p + 12, len - 12, util_now(), 86400, &a->retry_after_s);
	return len;
}

static void attempt_free(struct attempt_ctx *a)
{
	if (!a)
		return;
	curl_slist_free_all(a->hdrs);
	if (a->h) {
		if (a->d->nidle < (int)(sizeof a->d->idle / sizeof a->d->idle[0])) {
			curl_easy_reset(a->h);
			a->d->idle[a->d->nidle++] = a->h;
		} else {
			curl_easy_cleanup(a->h);
		}
	}
	if (a->payload_counted)
		a->d->payload_bytes -= a->payload_len;
	free(a->payload);
	free(a);
}

static CURL *handle_get(struct dispatcher *d)
{
	return d->nidle ? d->idle[--d->nidle] : curl_easy_init();
}

/* Starts the lane's head; returns 0 if started, -1 if it must wait. */
static int start_attempt(struct dispatcher *d, struct lane *l)
{
	struct endpoint *ep = l->ep;
	struct item *it = l->head;
	struct attempt_ctx *a = NULL;
	char hdr[AUTHTOKEN_CAP + 64], sig[SIG_CAP], sig2[SIG_CAP], ts[24];
	int64_t now_s = util_now();

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
		 * window, and are reloaded (in order) when the subscription is active again. */
		while (l->head)
			lane_pop_head(d, l);
		ep->evicted = 1;
		ep->reload_seq = 0;
		return -1;
	}
	if (ep->evicted && it->seq > ep->reload_seq) {
		/* Active again, and its deliveries are coming back from disk in sequence order:
		 * up to reload_seq every older delivery of this lane is in memory, past it one
		 * could still be on disk, and nothing may overtake it. When every lane of it
		 * with deliveries in memory waits so, the next piece must come whatever the
		 * window says, or nothing of it would ever move. */
		wait_lane(&ep->held, l);
		if (ep->held.n >= ep->lanes_busy)
			d->reload_now = 1;
		return -1;
	}
	if (ep->in_flight >= endpoint_cap(d, ep)) {
		wait_lane(&ep->waiting, l);
		return -1;
	}
	if (d->in_flight >= d->cfg->max_in_flight) {
		wait_lane(&d->waiting, l);
		return -1;
	}
	a = calloc(1, sizeof *a);
	if (!a)
		goto fail;
	a->d = d;
	a->lane = l;
	a->item = it;
	enum lh_err e = LH_OK;
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
	if (e == LH_ENOTFOUND) {
		LOG(LOG_ERROR, "dispatch", "delivery=%s event=%s has no payload; dropped",
		    it->delivery_id, it->event_id);
		lane_pop_head(d, l);
		attempt_free(a);
		schedule(d, l);
		return -1;
	}
	if (e != LH_OK || !(a->h = handle_get(d)))
		goto fail;
	snprintf(ts, sizeof ts, "%lld", (long long)now_s);
	size_t plen = a->payload_len;
	if (sig_sign_v1(ep->sub.secret, it->event_id, now_s, a->payload, plen, sig) != 0)
		goto fail;
	snprintf(hdr, sizeof hdr, "webhook-signature: %s", sig);
	if (ep->sub.prev_secret[0] && ep->sub.prev_secret_until > now_s &&
	    sig_sign_v1(ep->sub.prev_secret, it->event_id, now_s, a->payload, plen, sig2) == 0)
		snprintf(hdr, sizeof hdr, "webhook-signature: %s %s", sig, sig2);
	struct curl_slist *h = NULL;
	char idh[ID_CAP + 16], tsh[48];
	snprintf(idh, sizeof idh, "webhook-id: %s", it->event_id);
	snprintf(tsh, sizeof tsh, "webhook-timestamp: %s", ts);
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, idh);
	h = curl_slist_append(h, tsh);
	h = curl_slist_append(h, hdr);
	h = curl_slist_append(h, "Expect:");
	if (ep->sub.auth_token[0]) {
		snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", ep->sub.auth_token);
		h = curl_slist_append(h, hdr);
	}
	a->hdrs = h;
	if (!h)
		goto fail;
	CURL *c = a->h;
	curl_easy_setopt(c, CURLOPT_URL, ep->sub.endpoint);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, a->payload);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)plen);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, a->hdrs);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "labhook/" LABHOOK_VERSION);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
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
	a->started_ms = util_now_ms();
	a->started_us = util_mono_us();
	if (curl_multi_add_handle(d->multi, c) != CURLM_OK)
		goto fail;
	l->in_flight = 1;
	ep->in_flight++;
	d->in_flight++;
	a->next = d->running;
	if (d->running)
		d->running->prev = a;
	d->running = a;
	return 0;
fail:
	LOG(LOG_ERROR, "dispatch", "delivery=%s cannot start an attempt; retrying shortly",
	    it->delivery_id);
	attempt_free(a);
	heap_push(d, l, util_now_ms() + 1000);
	return -1;
}

static const char *classify(CURLcode cc, const struct attempt_ctx *a)
{
	if (a->blocked)
		return "blocked_address";
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return "timeout";
	case CURLE_COULDNT_RESOLVE_HOST:
		return "dns";
	case CURLE_COULDNT_CONNECT:
		return "connect";
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return "tls";
	case CURLE_GOT_NOTHING:
		return "empty_reply";
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		return "reset";
	case CURLE_UNSUPPORTED_PROTOCOL:
		return "protocol";
	default:
		return "network";
	}
}

static int64_t retry_delay_ms(const struct dispatcher *d, int attempts, int retry_after_s)
{
	int64_t base = d->cfg->retry_ms[attempts];
	unsigned char r[2] = {0, 0};
	util_random(r, sizeof r);
	/* +-20% jitter so failed endpoints are not hit by synchronised waves. */
	double f = 0.8 + 0.4 * ((double)((r[0] << 8) | r[1]) / 65535.0);
	int64_t delay = (int64_t)((double)base * f);
	if ((int64_t)retry_after_s * 1000 > delay)
		delay = (int64_t)retry_after_s * 1000;
	return delay;
}

static void finish_attempt(struct dispatcher *d, CURLMsg *msg)
{
	struct attempt_ctx *a = NULL;
	long code = 0;
	curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&a);
	curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
	CURLcode cc = msg->data.result;
	struct lane *l = a->lane;
	struct endpoint *ep = l->ep;
	struct item *it = a->item;
	struct delivery_result r;
	int64_t now_ms = util_now_ms();

	curl_multi_remove_handle(d->multi, msg->easy_handle);
	if (a->prev)
		a->prev->next = a->next;
	else
		d->running = a->next;
	if (a->next)
		a->next->prev = a->prev;
	memset(&r, 0, sizeof r);
	snprintf(r.a.delivery_id, sizeof r.a.delivery_id, "%s", it->delivery_id);
	snprintf(r.sub_id, sizeof r.sub_id, "%s", l->sub_id);
	r.a.n = ++it->attempts;
	r.a.started_at_ms = a->started_ms;
	r.a.duration_ms = (int)((util_mono_us() - a->started_us) / 1000);
	r.now = now_ms / 1000;
	/* A body we stopped reading on purpose is not a transport failure. */
	int got_answer = code > 0 && (cc == CURLE_OK || cc == CURLE_WRITE_ERROR);
	r.a.status_code = got_answer ? (int)code : 0;
	snprintf(r.a.response, sizeof r.a.response, "%s", a->resp);
	int ok = got_answer && code >= 200 && code < 300;
	if (ok) {
		r.status = DLV_DELIVERED;
		r.sub = ep->streak > 0 || ep->sub.failing_since ? SUBO_SUCCESS : SUBO_NONE;
		ep->streak = 0;
		ep->backoff_until_ms = 0;
		ep->backoff_since_ms = 0;
		ep->backoff_level = 0;
		ep->sub.failing_since = 0;
	} else {
		if (got_answer)
			snprintf(r.a.error, sizeof r.a.error, "%s%ld",
			         code >= 300 && code < 400 ? "redirect_" : "http_", code);
		else
			snprintf(r.a.error, sizeof r.a.error, "%s", classify(cc, a));
		if (a->blocked)
			LOG(LOG_WARN, "dispatch",
			    "delivery=%s sub=%s range=%s blocked_address: the endpoint resolved to "
			    "a "
			    "refused address range",
			    it->delivery_id, l->sub_id, a->blocked);
		ep->streak++;
		if (ep->streak >= STREAK_BACKOFF) {
			/* Backed off as a whole: one probe at a time after a pause. Only a probe
			 * (an attempt started after the backoff began) that fails doubles the
			 * pause; the other requests that were in flight when it began do not. */
			if (!ep->backoff_since_ms)
				ep->backoff_since_ms = now_ms;
			else if (a->started_ms >= ep->backoff_since_ms && ep->backoff_level < 16)
				ep->backoff_level++;
			int64_t b = 1000LL << ep->backoff_level;
			ep->backoff_until_ms = now_ms + (b > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b);
		}
		if (!ep->sub.failing_since)
			ep->sub.failing_since = r.now;
		r.sub = SUBO_FAILURE;
		int64_t span = r.now - ep->sub.failing_since;
		if (code == 410 || (span * 1000 >= d->cfg->disable_after_ms &&
		                    span * 1000 >= d->cfg->disable_min_span_ms)) {
			r.sub = SUBO_DISABLE;
			LOG(LOG_WARN, "dispatch", "sub=%s reason=%s subscription disabled",
			    l->sub_id, code == 410 ? "gone" : "failing");
		}
		if (code == 410 || (size_t)it->attempts >= d->cfg->n_retry) {
			r.status = DLV_FAILED;
		} else {
			r.status = DLV_PENDING;
			int ra = (code == 429 || code == 503) ? a->retry_after_s : 0;
			it->next_at_ms = now_ms + retry_delay_ms(d, it->attempts, ra);
			r.next_at_ms = it->next_at_ms;
		}
	}
	LOG(LOG_DEBUG, "dispatch", "delivery=%s sub=%s attempt=%d status=%ld error=%s dur_ms=%d",
	    it->delivery_id, l->sub_id, r.a.n, code, r.a.error[0] ? r.a.error : "-",
	    r.a.duration_ms);
	add_result(d, &r);
	l->in_flight = 0;
	ep->in_flight--;
	d->in_flight--;
	if (r.status != DLV_PENDING) {
		lane_pop_head(d,
		              l); /* delivered or given up: the next event of the entity may go */
	} else if (a->payload_counted) { /* kept for the next attempt */
		it->payload = a->payload;
		it->payload_len = a->payload_len;
		a->payload = NULL;
		a->payload_counted = 0;
	}
	attempt_free(a);
	schedule(d, l);
	lane_maybe_free(d, l);
	/* As many waiting lanes as there is room for now (not all: that was quadratic). */
	long room = endpoint_cap(d, ep) - ep->in_flight;
	if (room > 0)
		wake(d, &ep->waiting, room);
	room = d->cfg->max_in_flight - d->in_flight;
	if (room > 0)
		wake(d, &d->waiting, room);
}

/* ---- the thread ---- */

static void drain_inbox(struct dispatcher *d)
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
		if (dl->requeued) {
			lane_add(d, dl); /* asked for again: always (a queued one just moves up) */
			continue;
		}
		/* A fresh commit: at or below loaded_seq it came in with a page already; above
		 * it, it joins the window unless the window is full or spilled, in which case
		 * a later page brings it in order. */
		if (dl->event_seq <= d->loaded_seq) {
			free(dl->payload);
			continue;
		}
		if (d->spilled || d->mem_items >= (size_t)d->cfg->delivery_window) {
			d->spilled = 1;
			free(dl->payload);
			continue;
		}
		d->loaded_seq = dl->event_seq;
		struct endpoint *ep = endpoint_get(d, dl->sub_id);
		if (ep && endpoint_refresh(d, ep) == 0 && ep->sub.status != SUB_ACTIVE &&
		    ep->sub.status != SUB_DELETED) {
			/* Paused or disabled: it waits in the store, as start_attempt would have
			 * left it, and comes back (in order) when the subscription is active. */
			ep->evicted = 1;
			ep->reload_seq = 0;
			free(dl->payload);
			continue;
		}
		lane_add(d, dl);
	}
	free(batch);
}

/* Pages spilled deliveries into the window while it has room. */
static void load_page(struct dispatcher *d)
{
	size_t window = (size_t)d->cfg->delivery_window;
	struct delivery *page = NULL;
	size_t n = 0;
	if (!d->spilled || d->mem_items > window / 2)
		return;
	size_t room = window - d->mem_items;
	enum lh_err e = d->st->ops->delivery_pending(d->st, d->loaded_seq, "", room, &page, &n);
	if (e != LH_OK) {
		LOG(LOG_ERROR, "dispatch", "err=%s cannot page in pending deliveries", err_code(e));
		return;
	}
	for (size_t i = 0; i < n; i++)
		lane_add(d, &page[i]);
	if (n)
		d->loaded_seq = page[n - 1].event_seq;
	if (n < room)
		d->spilled = 0; /* caught up: fresh commits join directly again */
	free(page);
}

/* After a subscription change: subscriptions whose deliveries were evicted while paused or
 * disabled and that are active again get them back, in order, a window's room at a time
 * (the reloaded ones are sent meanwhile). */
static void reload_evicted(struct dispatcher *d)
{
	size_t window = (size_t)d->cfg->delivery_window;
	d->reloading = 0;
	d->reload_now = 0;
	for (size_t b = 0; b < HASH_BUCKETS; b++) {
		for (struct endpoint *ep = d->eps[b]; ep; ep = ep->hnext) {
			if (!ep->evicted || endpoint_refresh(d, ep) != 0 ||
			    ep->sub.status != SUB_ACTIVE)
				continue;
			/* In window-sized pieces, so a large paused backlog cannot fill memory. */
			size_t room = d->mem_items < window ? window - d->mem_items : 0;
			if (room < 256)
				room = 256; /* held (see start_attempt): always progress */
			struct delivery *list = NULL;
			size_t n = 0;
			if (d->st->ops->delivery_pending(d->st, ep->reload_seq, ep->sub_id, room,
			                                 &list, &n) != LH_OK) {
				d->reloading = 1;
				continue;
			}
			size_t i;
			for (i = 0; i < n && list[i].event_seq <= d->loaded_seq; i++)
				lane_add(d, &list[i]);
			if (i > 0)
				ep->reload_seq = list[i - 1].event_seq;
			for (size_t k = i; k < n; k++)
				free(list[k].payload);
			/* Done when the store has no more, or the rest is past loaded_seq (pages
			 * and fresh commits bring those). */
			if (n < room || i < n) {
				ep->evicted = 0;
				ep->reload_seq = 0;
			} else {
				d->reloading = 1;
			}
			free(list);
		}
	}
	/* Every held lane tries again: paused ones leave memory, resumed ones may go. */
	wake(d, &d->waiting, -1);
	for (size_t b = 0; b < HASH_BUCKETS; b++)
		for (struct endpoint *ep = d->eps[b]; ep; ep = ep->hnext) {
			wake(d, &ep->waiting, -1);
			wake(d, &ep->held, -1);
		}
}

static void *dispatch_main(void *arg)
{
	struct dispatcher *d = arg;
	pthread_setname_np(pthread_self(), "lh-dispatch");
	int64_t stop_deadline = 0;

	for (;;) {
		pthread_mutex_lock(&d->inbox_mu);
		int stopping = d->stopping;
		pthread_mutex_unlock(&d->inbox_mu);
		int64_t now = util_now_ms();
		if (stopping && !stop_deadline)
			stop_deadline = now + STOP_GRACE_MS;
		if (stopping && (d->in_flight == 0 || now >= stop_deadline))
			break;
		drain_inbox(d);
		load_page(d);
		uint64_t v = d->st->ops->subs_version(d->st);
		/* More of a reloading backlog once half the window is free, or at once when a
		 * reloading subscription has nothing in memory that may go (reload_now). */
		if (v != d->subs_version ||
		    (d->reloading &&
		     (d->mem_items < (size_t)d->cfg->delivery_window / 2 || d->reload_now))) {
			d->subs_version = v;
			reload_evicted(d);
		}
		while (!stopping && d->nheap && d->heap[0].due <= now) {
			struct heap_ent top = d->heap[0];
			heap_pop(d);
			top.lane->inheap--;
			if (top.gen != top.lane->gen || top.lane->in_flight || !top.lane->head) {
				lane_maybe_free(d, top.lane); /* stale entry */
				continue;
			}
			if (top.lane->head->next_at_ms > now ||
			    top.lane->ep->backoff_until_ms > now)
				schedule(d, top.lane);
			else
				start_attempt(d, top.lane);
			lane_maybe_free(d, top.lane);
		}
		if (d->nresults && (now - d->first_result_ms >= FLUSH_MS || stopping))
			flush_results(d);
		int64_t wait = 1000;
		if (d->nheap && !stopping)
			wait = d->heap[0].due - now;
		if (d->nresults && FLUSH_MS < wait)
			wait = FLUSH_MS;
		if ((d->spilled || d->reloading) &&
		    d->mem_items < (size_t)d->cfg->delivery_window / 2)
			wait = 0; /* room in the window and more on disk: bring it in at once */
		if (wait < 0)
			wait = 0;
		int running = 0;
		curl_multi_poll(d->multi, NULL, 0, (int)wait, NULL);
		curl_multi_perform(d->multi, &running);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(d->multi, &left)))
			if (msg->msg == CURLMSG_DONE)
				finish_attempt(d, msg);
	}
	/* Attempts still running past the grace period are abandoned (dispatch_stop frees
	 * them): not recorded, so they stay pending in the store and go out after restart. */
	flush_results(d);
	return NULL;
}

static void on_commit(void *ctx, const struct delivery *dl, size_t n)
{
	dispatch_enqueue(ctx, dl, n);
}

void dispatch_wake(struct dispatcher *d)
{
	if (d)
		curl_multi_wakeup(d->multi);
}

void dispatch_enqueue(struct dispatcher *d, const struct delivery *dl, size_t n)
{
	if (!d) {
		for (size_t i = 0; i < n; i++)
			free(dl[i].payload);
		return;
	}
	if (n == 0)
		return;
	pthread_mutex_lock(&d->inbox_mu);
	if (d->ninbox + n > d->cap_inbox) {
		size_t ncap = d->cap_inbox ? d->cap_inbox : 256;
		while (ncap < d->ninbox + n)
			ncap *= 2;
		struct delivery *ni = realloc(d->inbox, ncap * sizeof *ni);
		if (!ni) {
			pthread_mutex_unlock(&d->inbox_mu);
			for (size_t i = 0; i < n; i++)
				free(dl[i].payload);
			LOG(LOG_ERROR, "dispatch",
			    "n=%zu out of memory; the deliveries stay pending in "
			    "the store and are sent after restart",
			    n);
			return;
		}
		d->inbox = ni;
		d->cap_inbox = ncap;
	}
	memcpy(d->inbox + d->ninbox, dl, n * sizeof *dl);
	d->ninbox += n;
	pthread_mutex_unlock(&d->inbox_mu);
	curl_multi_wakeup(d->multi);
}

enum lh_err dispatch_start(struct store *st, const struct config *cfg, struct dispatcher **out)
{
	struct dispatcher *d = calloc(1, sizeof *d);
	enum lh_err e;

	if (!d)
		return LH_ENOMEM;
	d->st = st;
	d->cfg = cfg;
	pthread_mutex_init(&d->inbox_mu, NULL);
	pthread_mutex_init(&d->rec_mu, NULL);
	pthread_cond_init(&d->rec_cv, NULL);
	pthread_cond_init(&d->rec_room, NULL);
	d->results = calloc(RESULT_BATCH, sizeof *d->results);
	d->multi = curl_multi_init();
	if (!d->results || !d->multi) {
		e = LH_ENOMEM;
		goto fail;
	}
	curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)cfg->max_in_flight);
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_in_flight);
	d->subs_version = st->ops->subs_version(st);
	/* The hook first, then the backlog's first page: a delivery committed in between is
	 * either in the page or above loaded_seq, never lost or doubled. */
	st->ops->set_commit_hook(st, on_commit, d);
	d->spilled = 1;
	load_page(d);
	LOG(LOG_INFO, "dispatch",
	    "loaded=%zu more_in_store=%d window=%d max_in_flight=%d "
	    "delivery engine ready",
	    d->mem_items, d->spilled, cfg->delivery_window, cfg->max_in_flight);
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
	dispatch_stop(d);
	return e;
}

void dispatch_stop(struct dispatcher *d)
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
	pthread_mutex_destroy(&d->rec_mu);
	pthread_cond_destroy(&d->rec_cv);
	pthread_cond_destroy(&d->rec_room);
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
	while (d->nidle)
		curl_easy_cleanup(d->idle[--d->nidle]);
	if (d->multi)
		curl_multi_cleanup(d->multi);
	pthread_mutex_destroy(&d->inbox_mu);
	for (size_t i = 0; i < d->ninbox; i++)
		free(d->inbox[i].payload); /* committed after the thread's last look */
	free(d->heap);
	free(d->inbox);
	free(d->results);
	free(d);
}
