/* metrics_cost.c: what counting costs the hot paths (issue 16). Times the calls the request
 * path (metrics_http_request: one counter and one histogram) and the delivery path
 * (metrics_attempt and metrics_delivered) make, from one thread, then from two threads on
 * the same cells (the worst case: every call contends for one cache line). Prints ns per
 * call; compare with the ~75 us per bill at the 13,000 bills/s of bench.py's ingest_eps.
 * Build and run: make -C bench metrics-cost */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "metrics.h"

#define CALLS 20000000

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *request_path(void *arg)
{
	(void)arg;
	for (int i = 0; i < CALLS; i++)
		metrics_http_request(7, "POST", 200, (int64_t)(i & 4095) * 10);
	return NULL;
}

static void *delivery_path(void *arg)
{
	(void)arg;
	for (int i = 0; i < CALLS; i++) {
		metrics_attempt(MO_SUCCESS, (int64_t)(i & 4095) * 100);
		metrics_delivered(i & 1023);
	}
	return NULL;
}

/* ns per call of fn, run by n threads at once (wall time over one thread's calls). */
static double time_it(void *(*fn)(void *), int n)
{
	pthread_t t[2];
	double t0 = now_s();
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, fn, NULL);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	return (now_s() - t0) / CALLS * 1e9;
}

int main(void)
{
	printf("request path (metrics_http_request), 1 thread: %.1f ns/call\n",
	       time_it(request_path, 1));
	printf("request path, 2 threads on the same cells:     %.1f ns/call\n",
	       time_it(request_path, 2));
	printf("delivery path (attempt + delivered), 1 thread: %.1f ns/delivery\n",
	       time_it(delivery_path, 1));
	printf("delivery path, 2 threads on the same cells:    %.1f ns/delivery\n",
	       time_it(delivery_path, 2));
	return 0;
}
