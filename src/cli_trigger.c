/* cli_trigger.c: see cli_trigger.h. Each event is a short recipe of lab-side calls; every
 * recipe starts from a new bill or lead, so triggering twice never collides (a lead's
 * contact is random: the same-day rule refuses a repeated one).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_trigger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli_lab.h"
#include "demo.h"
#include "util.h"

static const char *const events[] = {"bill.created", "report.completed", "bill.completed",
                                     "bill.deleted", "lead.created",     "booking.created"};

static void usage(FILE *f)
{
	fprintf(f, "Usage: labhook trigger [--data-dir DIR] [--url URL] [--client CLIENT_ID"
	           " --lab LAB_ID] [--json] EVENT\n"
	           "Makes the lab do what causes EVENT, on the demo's lab (serve --demo in the same"
	           " --data-dir)\nor the account's lab given, with the admin key of DIR/admin.key,"
	           " and prints the ids it made.\nEVENT is one of:");
	for (size_t i = 0; i < COUNTOF(events); i++)
		fprintf(f, " %s", events[i]);
	fprintf(f, "\nExit codes: 0 ok, 1 the service refused, 2 usage, 3 cannot reach it.\n");
}

/* Prints an answer: its JSON with --json, else "EVENT  KIND ID". */
static void show(struct cli_lab *l, const struct cli_resp *r, const char *event, const char *kind,
                 const char *id)
{
	if (l->json)
		printf("%s\n", r->body);
	else
		printf("%-17s %s %s\n", event, kind, id);
}

static const char *field(const struct cli_resp *r, const char *name)
{
	const char *v = json_string_value(json_object_get(r->json, name));
	return v ? v : "";
}

/* A new bill of two reports on the account's lab; *bill gets the answer of GET /lab/bills. */
static int new_bill(struct cli_lab *l, const char *client, const char *lab, struct cli_resp *bill)
{
	struct cli_resp r;
	char ref[64], path[256];
	snprintf(ref, sizeof ref, "trigger-%lld", (long long)util_now_ms());
	json_t *body = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:i, s:s}, s:[s, s]}", "clientID",
	                         client, "labID", lab, "integrator_id", ref, "patient_details",
	                         "first_name", "Asha", "gender", "female", "age", 34, "age_type",
	                         "year", "unmapped_tests", "CBC", "Lipid Profile");
	int rc = cli_lab_call(l, "POST", "/lab/bills", body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	show(l, &r, "bill.created", "bill", field(&r, "billID"));
	snprintf(path, sizeof path, "/lab/bills/%s", field(&r, "billID"));
	cli_resp_free(&r);
	return cli_lab_call(l, "GET", path, NULL, bill);
}

/* Completes the bill's first report, or all of them. */
static int complete(struct cli_lab *l, json_t *bill, int all)
{
	json_t *reports = json_object_get(json_object_get(bill, "billData"), "testData"), *t;
	const char *bill_id = json_string_value(json_object_get(bill, "billID"));
	size_t i, done = 0;
	json_array_foreach(reports, i, t)
	{
		struct cli_resp r;
		char path[256];
		const char *rep = json_string_value(json_object_get(t, "_id"));
		if (!bill_id || !rep)
			break;
		snprintf(path, sizeof path, "/lab/bills/%s/reports/%s/complete", bill_id, rep);
		int rc = cli_lab_call(l, "POST", path, NULL, &r);
		if (rc != CLI_OK)
			return rc;
		show(l, &r, "report.completed", "report", rep);
		if (!l->json && !strcmp(field(&r, "billStatus"), "completed"))
			printf("%-17s bill %s\n", "bill.completed", bill_id);
		cli_resp_free(&r);
		done++;
		if (!all)
			break;
	}
	if (!done) {
		fprintf(stderr,
		        "labhook trigger: the service's bill names no report to complete\n");
		return CLI_EAPI;
	}
	return CLI_OK;
}

static int new_lead(struct cli_lab *l, const char *client, const char *lab, int booking)
{
	unsigned char rnd[10];
	char contact[11], ref[64], path[256], when[32];
	struct cli_resp r;
	if (util_random(rnd, sizeof rnd) != LH_OK)
		return CLI_EAPI;
	contact[0] = '9';
	for (int i = 1; i < 10; i++)
		contact[i] = (char)('0' + rnd[i] % 10);
	contact[10] = '\0';
	snprintf(ref, sizeof ref, "trigger-%lld", (long long)util_now_ms());
	json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "clientID", client,
	                         "branchID", lab, "integratorID", ref, "first_name", "Ravi",
	                         "contact", contact, "age", 41, "age_type", "year");
	int rc = cli_lab_call(l, "POST", "/lab/leads", body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	show(l, &r, "lead.created", "lead", field(&r, "leadID"));
	snprintf(path, sizeof path, "/lab/leads/%s/convert", field(&r, "leadID"));
	cli_resp_free(&r);
	if (!booking)
		return CLI_OK;
	util_rfc3339(util_now() + 86400, when);
	body = json_pack("{s:s, s:s}", "bookingType", "home_collection", "scheduledAt", when);
	rc = cli_lab_call(l, "POST", path, body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	show(l, &r, "booking.created", "booking", field(&r, "bookingID"));
	cli_resp_free(&r);
	return CLI_OK;
}

int cli_trigger_main(int argc, char **argv, char **env)
{
	struct config cfg;
	size_t ev = 0;
	char client[ID_CAP], lab[ID_CAP];
	struct cli_words w;
	struct cli_lab l;
	struct demo_state d;
	int rc = cli_start("trigger", argc, argv, env, "json", usage, &cfg, &w);

	if (rc >= 0)
		return rc;
	const char *url = cli_flag(&w, "url"), *c = cli_flag(&w, "client"),
	           *lb = cli_flag(&w, "lab");
	int json = cli_flag(&w, "json") != NULL;
	if (cli_words_check("trigger", &w))
		return CLI_EUSAGE;
	while (w.npos == 1 && ev < COUNTOF(events) && strcmp(w.pos[0], events[ev]))
		ev++;
	if (w.npos != 1 || ev == COUNTOF(events)) {
		if (w.npos == 1)
			fprintf(stderr, "labhook trigger: unknown event '%s'\n", w.pos[0]);
		usage(stderr);
		return CLI_EUSAGE;
	}
	if (!c || !lb) {
		if (demo_state_read(cfg.data_dir, &d) != 0) {
			fprintf(stderr,
			        "labhook trigger: no demo in %s (start `labhook serve --demo`"
			        " there, or give --client CLIENT_ID --lab LAB_ID)\n",
			        cfg.data_dir);
			return CLI_EUSAGE;
		}
		snprintf(client, sizeof client, "%s", c ? c : d.client_id);
		snprintf(lab, sizeof lab, "%s", lb ? lb : d.lab_id);
		demo_state_clear(&d);
	} else {
		snprintf(client, sizeof client, "%s", c);
		snprintf(lab, sizeof lab, "%s", lb);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cli_lab_open("trigger", &cfg, url, &l);
	if (rc != CLI_OK)
		return rc;
	l.json = json;
	const char *e = events[ev];
	if (!strcmp(e, "lead.created") || !strcmp(e, "booking.created")) {
		rc = new_lead(&l, client, lab, e[0] == 'b');
	} else {
		struct cli_resp bill = {0, NULL, 0, NULL};
		rc = new_bill(&l, client, lab, &bill);
		if (rc == CLI_OK && !strcmp(e, "bill.deleted")) {
			struct cli_resp r = {0, NULL, 0, NULL};
			char path[256];
			const char *id = json_string_value(
			    json_object_get(json_object_get(bill.json, "bill"), "billID"));
			snprintf(path, sizeof path, "/lab/bills/%s", id ? id : "");
			if (!id) {
				fprintf(stderr,
				        "labhook trigger: the service's bill has no billID\n");
				rc = CLI_EAPI;
			} else if ((rc = cli_lab_call(&l, "DELETE", path, NULL, &r)) == CLI_OK) {
				show(&l, &r, "bill.deleted", "bill", id);
			}
			cli_resp_free(&r);
		} else if (rc == CLI_OK && strcmp(e, "bill.created") != 0) {
			rc = complete(&l, json_object_get(bill.json, "bill"),
			              !strcmp(e, "bill.completed"));
		}
		cli_resp_free(&bill);
	}
	cli_lab_close(&l);
	curl_global_cleanup();
	return rc;
}
