/* metrics.h: the service's Prometheus metrics: a fixed registry of counters and histograms,
 * and their rendering in the text exposition format (version 0.0.4) for GET /metrics.
 *
 * Every series is a cell of a fixed array indexed by small enums (route row, method, status,
 * event type, attempt outcome): no label takes a value that grows with tenants, and the
 * counting functions take no lock and allocate nothing (one relaxed atomic add per cell).
 * Histograms keep per-bucket counts; a scrape sums them, so a bucket and its _count always
 * agree. Counters live for the process and start at zero. Any thread may call anything.
 */
#ifndef LH_METRICS_H
#define LH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_ROUTES 64 /* route table rows + 1: index 0 is "unmatched" */

/* What became of one delivery attempt (labhook_delivery_attempts_total{outcome}). */
enum metrics_outcome {
	MO_SUCCESS = 0,
	MO_HTTP_3XX,
	MO_HTTP_4XX,
	MO_HTTP_5XX,
	MO_TIMEOUT,
	MO_CONNECT,
	MO_TLS,
	MO_DNS,
	MO_BLOCKED,
	MO_OTHER,
	MO__COUNT
};

/* One request answered: route is 0 (no route matched) or 1 + the first row of the route
 * table with its path's pattern, method as received, status as sent, dur_us from its
 * first byte to its answer. */
void metrics_http_request(int route, const char *method, int status, int64_t dur_us);
/* n events of type (enum event_type; webhook.test and other values are not counted)
 * committed. */
void metrics_events(int type, uint64_t n);
/* One delivery attempt finished with outcome after dur_us. */
void metrics_attempt(enum metrics_outcome outcome, int64_t dur_us);
/* A delivery succeeded lag_ms after its event was made. */
void metrics_delivered(int64_t lag_ms);
/* A delivery gave up: its retry schedule is used up (or its endpoint answered 410). */
void metrics_gave_up(void);
/* The writer committed a batch of jobs; the commit itself took commit_us. */
void metrics_batch(size_t jobs, int64_t commit_us);

/* What the store says at scrape time (labhook_deliveries_pending, labhook_subscriptions,
 * labhook_store_bytes); see store_ops.stats. */
struct store_stats;

/* The whole exposition: route_labels[i] is the label of route row i (a row that repeats an
 * earlier row's label is not shown: see metrics_http_request), stats NULL leaves out the store's
 * gauges (the store failed). Returns owned text (*len bytes, NUL-terminated), free with free();
 * NULL if out of memory. */
char *metrics_render(const char *const *route_labels, size_t n_routes,
                     const struct store_stats *stats, size_t *len);

#endif
