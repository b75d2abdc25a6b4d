/* cli_lab.c: see cli_lab.h. The bill and lead bodies are made from flags; the defaults are
 * the demo's (its catch-all account and lab, from <data-dir>/demo.json) so that a newcomer
 * types only what matters to them.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_lab.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "demo.h"
#include "util.h"

int cli_lab_open(const char *tool, const struct config *cfg, const char *url_flag,
                 struct cli_lab *out)
{
	char path[CFG_PATH_CAP + 16];
	memset(out, 0, sizeof *out);
	out->tool = tool;
	snprintf(path, sizeof path, "%s/admin.key", cfg->data_dir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(out->key, sizeof out->key, f)) {
		fprintf(
		    stderr,
		    "labhook %s: cannot read %s (has `labhook serve` run with this --data-dir?)\n",
		    tool, path);
		if (f)
			fclose(f);
		return CLI_EAPI;
	}
	fclose(f);
	out->key[strcspn(out->key, "\r\n")] = '\0';
	cli_base_url(cfg, url_flag, 1, out->base, sizeof out->base);
	return CLI_OK;
}

void cli_lab_close(struct cli_lab *l)
{
	OPENSSL_cleanse(l->key, sizeof l->key);
}

int cli_lab_call(struct cli_lab *l, const char *method, const char *path, json_t *body,
                 struct cli_resp *out)
{
	char url[2048];
	struct cli_resp r;
	snprintf(url, sizeof url, "%s%s", l->base, path);
	int rc = cli_http_json(l->tool, method, url, l->key, body, &r);
	if (rc != CLI_OK)
		return rc;
	if (r.status < 200 || r.status > 299) {
		rc = cli_api_error(l->tool, &r);
		cli_resp_free(&r);
		return rc;
	}
	*out = r;
	return CLI_OK;
}

void cli_lab_print_bill(FILE *f, json_t *bill)
{
	json_t *data = json_object_get(bill, "billData"), *t;
	size_t i;
	fprintf(f, "bill    %s  %s  (%zu reports)\n",
	        json_string_value(json_object_get(bill, "billID")),
	        json_string_value(json_object_get(data, "status")),
	        json_array_size(json_object_get(data, "testData")));
	json_array_foreach(json_object_get(data, "testData"), i, t)
	{
		fprintf(f, "report  %s  %-9s  %s\n", json_string_value(json_object_get(t, "_id")),
		        json_string_value(json_object_get(t, "status")),
		        json_string_value(json_object_get(t, "name")));
	}
}

/* One line per command: `labhook lab --help` and the man page print them. */
static const char *const lab_help[] = {
    "create-bill [--client CLIENT_ID --lab LAB_ID] --test ID [--test ID ...] [--package ID ...]"
    " [--unmapped-test NAME ...] [--first-name NAME] [--last-name NAME] [--gender G] [--age N]"
    " [--integrator-id REF] [--bar-code CODE] [--corporate-user CU] [--json]"
    " (--client and --lab default to the demo's; prints the report ids)",
    "get-bill BILL_ID [--json]",
    "create-lead [--client CLIENT_ID --lab LAB_ID] --first-name NAME --contact DIGITS [--age N]"
    " [--email E] [--test ID ...] [--integrator-id REF] [--corporate-user CU]"
    " [--booking --booking-type TYPE --scheduled-at RFC3339] [--json]",
};

void cli_lab_usage(FILE *f)
{
	for (size_t i = 0; i < COUNTOF(lab_help); i++)
		fprintf(f, "  %s\n", lab_help[i]);
}

void cli_lab_print_man(FILE *f)
{
	for (size_t i = 0; i < COUNTOF(lab_help); i++) {
		fprintf(f, "labhook lab ");
		util_roff_text(f, lab_help[i], 1);
		fputc('\n', f);
	}
}

/* --client and --lab, or the demo's catch-all account and lab. -1 after a message. */
static int account_and_lab(const struct config *cfg, struct cli_words *w, char client[ID_CAP],
                           char lab[ID_CAP])
{
	const char *c = cli_flag(w, "client"), *l = cli_flag(w, "lab");
	struct demo_state d;
	int have_demo = (!c || !l) && demo_state_read(cfg->data_dir, &d) == 0;
	if ((!c || !l) && !have_demo) {
		fprintf(stderr, "labhook lab: give --client CLIENT_ID and --lab LAB_ID (no demo"
		                " accounts in this --data-dir to default to)\n");
		return -1;
	}
	snprintf(client, ID_CAP, "%s", c ? c : d.client_id);
	snprintf(lab, ID_CAP, "%s", l ? l : d.lab_id);
	if (have_demo)
		demo_state_clear(&d);
	return 0;
}

/* A number flag's value as JSON (as given when it is not a number, for the service to
 * name), or dflt. */
static json_t *number_flag(struct cli_words *w, const char *name, json_int_t dflt)
{
	const char *v = cli_flag(w, name);
	if (!v)
		return json_integer(dflt);
	json_t *n = json_loads(v, JSON_DECODE_ANY, NULL);
	if (json_is_integer(n))
		return n;
	json_decref(n);
	return json_string(v);
}

static void set_str(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

static int lab_get_bill(struct cli_lab *l, const char *bill_id)
{
	struct cli_resp r;
	char path[256];
	char *esc = curl_easy_escape(NULL, bill_id, 0);
	snprintf(path, sizeof path, "/lab/bills/%s", esc ? esc : "");
	curl_free(esc);
	int rc = cli_lab_call(l, "GET", path, NULL, &r);
	if (rc != CLI_OK)
		return rc;
	if (l->json)
		printf("%s\n", r.body);
	else
		cli_lab_print_bill(stdout, json_object_get(r.json, "bill"));
	cli_resp_free(&r);
	return CLI_OK;
}

static int lab_create_bill(const struct config *cfg, struct cli_lab *l, struct cli_words *w)
{
	char client[ID_CAP], lab[ID_CAP], integ[64];
	const char *v[64];
	size_t n;
	struct cli_resp r;
	if (account_and_lab(cfg, w, client, lab))
		return CLI_EUSAGE;
	const char *first = cli_flag(w, "first-name");
	snprintf(integ, sizeof integ, "cli-%lld", (long long)util_now_ms());
	json_t *patient =
	    json_pack("{s:s, s:s, s:o, s:s}", "first_name", first ? first : "Demo", "gender",
	              cli_flag(w, "gender") ? cli_flag(w, "gender") : "other", "age",
	              number_flag(w, "age", 30), "age_type", "year");
	set_str(patient, "last_name", cli_flag(w, "last-name"));
	const char *ref = cli_flag(w, "integrator-id");
	json_t *body = json_pack("{s:s, s:s, s:s, s:o}", "clientID", client, "labID", lab,
	                         "integrator_id", ref ? ref : integ, "patient_details", patient);
	set_str(body, "barCode", cli_flag(w, "bar-code"));
	set_str(body, "corporateUser", cli_flag(w, "corporate-user"));
	static const struct {
		const char *flag, *field, *key; /* key NULL: a list of strings */
	} lists[] = {{"test", "mapped_tests", "flabs_id"},
	             {"package", "mapped_packages", "id"},
	             {"unmapped-test", "unmapped_tests", NULL}};
	for (size_t k = 0; k < COUNTOF(lists); k++) {
		if (!(n = cli_flag_all(w, lists[k].flag, v, COUNTOF(v))))
			continue;
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, lists[k].key
			                               ? json_pack("{s:s}", lists[k].key, v[i])
			                               : json_string(v[i]));
		json_object_set_new(body, lists[k].field, arr);
	}
	if (cli_words_check("lab", w)) {
		json_decref(body);
		return CLI_EUSAGE;
	}
	int rc = cli_lab_call(l, "POST", "/lab/bills", body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	char bill_id[ID_CAP];
	const char *id = json_string_value(json_object_get(r.json, "billID"));
	snprintf(bill_id, sizeof bill_id, "%s", id ? id : "");
	cli_resp_free(&r);
	return lab_get_bill(l, bill_id);
}

static int lab_create_lead(const struct config *cfg, struct cli_lab *l, struct cli_words *w)
{
	char client[ID_CAP], lab[ID_CAP], integ[64];
	const char *v[64];
	struct cli_resp r;
	if (account_and_lab(cfg, w, client, lab))
		return CLI_EUSAGE;
	const char *first = cli_flag(w, "first-name"), *contact = cli_flag(w, "contact");
	const char *ref = cli_flag(w, "integrator-id");
	snprintf(integ, sizeof integ, "cli-%lld", (long long)util_now_ms());
	json_t *body = json_pack("{s:s, s:s, s:s, s:o, s:s}", "clientID", client, "branchID", lab,
	                         "integratorID", ref ? ref : integ, "age",
	                         number_flag(w, "age", 30), "age_type", "year");
	set_str(body, "first_name", first); /* required: the service names it when missing */
	set_str(body, "contact", contact);
	set_str(body, "email", cli_flag(w, "email"));
	set_str(body, "corporateUser", cli_flag(w, "corporate-user"));
	if (cli_flag(w, "booking")) {
		json_object_set_new(body, "phase", json_string("booking"));
		set_str(body, "bookingType", cli_flag(w, "booking-type"));
		set_str(body, "scheduledAt", cli_flag(w, "scheduled-at"));
	}
	size_t n = cli_flag_all(w, "test", v, COUNTOF(v));
	if (n) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, json_string(v[i]));
		json_object_set_new(body, "tests", arr);
	}
	if (cli_words_check("lab", w)) {
		json_decref(body);
		return CLI_EUSAGE;
	}
	int rc = cli_lab_call(l, "POST", "/lab/leads", body, &r);
	json_decref(body);
	if (rc != CLI_OK)
		return rc;
	if (l->json) {
		printf("%s\n", r.body);
	} else {
		const char *bk = json_string_value(json_object_get(r.json, "bookingID"));
		printf("lead    %s\n", json_string_value(json_object_get(r.json, "leadID")));
		if (bk)
			printf("booking %s\n", bk);
	}
	cli_resp_free(&r);
	return CLI_OK;
}

int cli_lab_main(const struct config *cfg, const char *url_flag, const char *const *words,
                 size_t nw)
{
	struct cli_words w;
	struct cli_lab l;
	const char *moved[CLI_WORDS_CAP];
	/* `lab --json get-bill B`: the switch may come before the command's name */
	if (nw >= 2 && nw <= CLI_WORDS_CAP && !strcmp(words[0], "--json")) {
		moved[0] = words[1];
		moved[1] = words[0];
		for (size_t i = 2; i < nw; i++)
			moved[i] = words[i];
		words = moved;
	}
	if (nw == 0 || (strcmp(words[0], "create-bill") && strcmp(words[0], "get-bill") &&
	                strcmp(words[0], "create-lead")))
		return -1;
	/* create-bill --json TEXT or --file F: the raw body, admin_cli's table row */
	for (size_t i = 1; i < nw && !strcmp(words[0], "create-bill"); i++)
		if (!strcmp(words[i], "--file") || !strncmp(words[i], "--file=", 7) ||
		    !strncmp(words[i], "--json=", 7) ||
		    (!strcmp(words[i], "--json") && i + 1 < nw && strncmp(words[i + 1], "--", 2)))
			return -1;
	if (cli_words_read("lab", words + 1, nw - 1, "json,booking", &w))
		return CLI_EUSAGE;
	int rc = cli_lab_open("lab", cfg, url_flag, &l);
	if (rc != CLI_OK)
		return rc;
	l.json = cli_flag(&w, "json") != NULL;
	if (!strcmp(words[0], "get-bill")) {
		if (w.npos != 1 || cli_words_check("lab", &w)) {
			fprintf(stderr, "Usage: labhook lab get-bill BILL_ID\n");
			rc = CLI_EUSAGE;
		} else {
			rc = lab_get_bill(&l, w.pos[0]);
		}
	} else if (w.npos != 0) {
		fprintf(stderr, "labhook lab: unexpected argument '%s'\n", w.pos[0]);
		rc = CLI_EUSAGE;
	} else if (!strcmp(words[0], "create-bill")) {
		rc = lab_create_bill(cfg, &l, &w);
	} else {
		rc = lab_create_lead(cfg, &l, &w);
	}
	cli_lab_close(&l);
	return rc;
}
