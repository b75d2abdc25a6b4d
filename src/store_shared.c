/* store_shared.c: see store_shared.h. */
#include "store_shared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void store_sub_apply(struct subscription *cur, const struct subscription *want, unsigned fields)
{
	if (fields & SUBF_EVENTS)
		cur->events = want->events;
	if (fields & SUBF_ENDPOINT)
		memcpy(cur->endpoint, want->endpoint, sizeof cur->endpoint);
	if (fields & SUBF_AUTH_TOKEN)
		memcpy(cur->auth_token, want->auth_token, sizeof cur->auth_token);
	if (fields & SUBF_STATUS) {
		if (want->status == SUB_ACTIVE && cur->status == SUB_DISABLED)
			cur->failing_since = 0; /* re-enabled: its failures start over */
		cur->status = want->status;
	}
	if (fields & SUBF_SECRET) {
		memcpy(cur->prev_secret, cur->secret, sizeof cur->prev_secret);
		memcpy(cur->secret, want->secret, sizeof cur->secret);
		cur->prev_secret_until = want->prev_secret_until;
	}
	cur->updated_at = want->updated_at;
}

void store_delivery_new(struct delivery *d, const struct event *ev, const char *delivery_id,
                        const char *sub_id, int64_t seq)
{
	memset(d, 0, sizeof *d);
	snprintf(d->delivery_id, sizeof d->delivery_id, "%s", delivery_id);
	snprintf(d->event_id, sizeof d->event_id, "%s", ev->event_id);
	snprintf(d->sub_id, sizeof d->sub_id, "%s", sub_id);
	snprintf(d->entity_id, sizeof d->entity_id, "%s", ev->entity_id);
	d->event_seq = seq;
	d->event_type = ev->type;
	d->status = DLV_PENDING;
	d->next_at_ms = ev->created_at * 1000;
	d->created_at = ev->created_at;
}

enum lh_err store_fresh_delivery(struct store_writer *w, struct delivery *d, const char *payload)
{
	size_t plen = strlen(payload);
	d->payload = NULL;
	if (plen <= DELIVERY_PAYLOAD_INLINE && (d->payload = malloc(plen + 1)))
		memcpy(d->payload, payload, plen + 1);
	enum lh_err e = writer_fresh_push(w, d);
	if (e != LH_OK) {
		free(d->payload);
		d->payload = NULL;
	}
	return e;
}
