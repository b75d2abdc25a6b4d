/* events.c: see events.h. */
#include "events.h"

#include <stdio.h>
#include <string.h>

static const char *const names[EV__COUNT + 1] = {
    [EV_BILL_CREATED] = "bill.created", [EV_BILL_COMPLETED] = "bill.completed",
    [EV_BILL_DELETED] = "bill.deleted", [EV_REPORT_COMPLETED] = "report.completed",
    [EV_LEAD_CREATED] = "lead.created", [EV_BOOKING_CREATED] = "booking.created",
    [EV_WEBHOOK_TEST] = "webhook.test",
};

int event_from_name(const char *name)
{
	for (int i = 0; i < EV__COUNT; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *event_name(enum event_type t)
{
	return (unsigned)t <= EV_WEBHOOK_TEST ? names[t] : "unknown";
}

char *event_mask_names(unsigned mask, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	for (int i = 0; i < EV__COUNT; i++) {
		if (!(mask & (1u << i)))
			continue;
		int w = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", names[i]);
		if (w < 0 || (size_t)w >= cap - o)
			break;
		o += (size_t)w;
	}
	return out;
}
