/* api_catalog.c: a lab's catalog (API.md 9). The lab side keeps it through the admin API
 * (/admin/labs/{labID}/catalog/..., admin key): tests and packages with their prices, and
 * rates per party of the lab's account. Integrators read it as Flabs documents it
 * (GET /client/crm/tests, GET /client/crm/packages with branchID = labID and optionally one
 * party), paged by page and limit. Prices are minor units in the store and decimal numbers
 * on the wire. Runs on HTTP threads; no state between requests.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "api.h"
#include "domain.h"

#define CATALOG_PAGE_DEFAULT 100
#define CATALOG_PAGE_MAX     500
#define CATALOG_PAGES_MAX    1000000 /* keeps page * limit far from overflow */

static const char *const kind_words[] = {"test", "package"};

/* A price in minor units as the decimal number Flabs shows (499.5, or 500 when whole).
 * Answers are dumped with 15 significant digits (http.c), so 399.99 is written 399.99, not
 * 399.99000000000001: prices are at most 10^9 with two decimals, 12 digits. */
static json_t *price_json(int64_t minor)
{
	return minor % 100 == 0 ? json_integer((json_int_t)(minor / 100))
	                        : json_real((double)minor / 100.0);
}

static json_t *item_json(const struct catalog_item *it, int with_kind)
{
	json_t *o = json_pack("{s:s, s:s, s:o}", "_id", it->id, "name", it->name, "price",
	                      price_json(it->party_price >= 0 ? it->party_price : it->price));
	if (!o)
		return NULL;
	json_object_set_new(o, "labPrice", price_json(it->price));
	if (it->party_price >= 0)
		json_object_set_new(o, "partyPrice", price_json(it->party_price));
	if (with_kind)
		json_object_set_new(o, "kind", json_string(kind_words[it->kind]));
	return o;
}

/* page (from 1) and limit (1..CATALOG_PAGE_MAX, default CATALOG_PAGE_DEFAULT); responds 400. */
static int page_args(struct call *c, size_t *page, size_t *limit)
{
	static const struct {
		const char *name;
		long max, dflt;
	} args[] = {{"page", CATALOG_PAGES_MAX, 1},
	            {"limit", CATALOG_PAGE_MAX, CATALOG_PAGE_DEFAULT}};
	size_t *out[] = {page, limit};
	for (size_t i = 0; i < COUNTOF(args); i++) {
		const char *v = http_query(c->rq, args[i].name);
		char *end = NULL;
		long n = v ? strtol(v, &end, 10) : args[i].dflt;
		if (v && (*v == '\0' || *end != '\0' || n < 1 || n > args[i].max))
			return api_fail(c, LH_EINVAL, "invalid_value", args[i].name,
			                "'%s' must be an integer from 1 to %ld", args[i].name,
			                args[i].max);
		*out[i] = (size_t)n;
	}
	return 0;
}

/* Adds each package's tests ({_id, name}) to its JSON (arr holds the items in order). */
static enum lh_err add_members(struct store *st, const char *lab_id,
                               const struct catalog_item *items, size_t n, json_t *arr)
{
	struct catalog_member *m = NULL;
	size_t nm = 0, k = 0;
	if (n == 0)
		return LH_OK;
	enum lh_err e = st->ops->catalog_members(st, lab_id, items[0].id, items[n - 1].id, &m, &nm);
	if (e != LH_OK)
		return e;
	/* Both are ordered by package id: one pass. */
	for (size_t i = 0; i < n; i++) {
		json_t *tests = json_array();
		for (; k < nm && strcmp(m[k].package_id, items[i].id) < 0; k++)
			;
		for (; k < nm && strcmp(m[k].package_id, items[i].id) == 0; k++)
			json_array_append_new(
			    tests, json_pack("{s:s, s:s}", "_id", m[k].test_id, "name", m[k].name));
		json_object_set_new(json_array_get(arr, i), "tests", tests);
	}
	free(m);
	return LH_OK;
}

/* Answers one page of lab_id's items of kind (CATALOG_ANY: rates of party_id only). */
static void send_page(struct call *c, const char *lab_id, int kind, const char *party_id)
{
	struct store *st = c->app->store;
	struct catalog_item *items = NULL;
	size_t page, limit, n = 0;
	int64_t total = 0;
	if (page_args(c, &page, &limit))
		return;
	enum lh_err e = st->ops->catalog_list(st, lab_id, kind, party_id, kind == CATALOG_ANY,
	                                      (page - 1) * limit, limit, &items, &n, &total);
	if (e != LH_OK) {
		api_fail_internal(c, e, "list catalog");
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, item_json(&items[i], kind == CATALOG_ANY));
	if (kind == CATALOG_PACKAGE && (e = add_members(st, lab_id, items, n, arr)) != LH_OK) {
		json_decref(arr);
		free(items);
		api_fail_internal(c, e, "list package tests");
		return;
	}
	int more = (int64_t)((page - 1) * limit + n) < total;
	json_t *f =
	    json_pack("{s:o, s:I, s:I, s:I, s:b}", "data", arr, "page", (json_int_t)page, "limit",
	              (json_int_t)limit, "total", (json_int_t)total, "hasMore", more);
	if (f && more)
		json_object_set_new(f, "nextPage", json_integer((json_int_t)page + 1));
	api_ok(c, "ok", f);
	free(items);
}

/* ---- the integrator's side: GET /client/crm/tests, GET /client/crm/packages ---- */

/* The party the query names (corporateUser or organization, at most one) into party_id
 * ("" when none); it must be a party of the caller's account of that kind, else 404. */
static int query_party(struct call *c, char party_id[ID_CAP])
{
	static const struct {
		const char *arg;
		enum party_kind kind;
	} slots[] = {{"corporateUser", PARTY_CORPORATE_USER}, {"organization", PARTY_ORGANIZATION}};
	const char *id = NULL;
	size_t at = 0;
	party_id[0] = '\0';
	for (size_t i = 0; i < COUNTOF(slots); i++) {
		const char *v = http_query(c->rq, slots[i].arg);
		if (!v || !*v)
			continue;
		if (id)
			return api_fail(
			    c, LH_EINVAL, "too_many_parties", "organization",
			    "send corporateUser or organization, not both: a price is one party's");
		id = v;
		at = i;
	}
	if (!id)
		return 0;
	struct party p;
	enum lh_err e =
	    strlen(id) < ID_CAP
	        ? c->app->store->ops->party_get(c->app->store, c->acct.client_id, id, &p)
	        : LH_ENOTFOUND;
	if (e == LH_OK && p.kind != slots[at].kind)
		e = LH_ENOTFOUND;
	if (e == LH_ENOTFOUND)
		return api_fail(
		    c, e, "party_not_found", slots[at].arg, "no %s with this id in the account",
		    slots[at].kind == PARTY_CORPORATE_USER ? "corporate user" : "organization");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load party");
	memcpy(party_id, p.party_id, ID_CAP);
	return 0;
}

static void crm_list(struct call *c, enum catalog_kind kind)
{
	struct lab lab;
	char party_id[ID_CAP];
	const char *branch = http_query(c->rq, "branchID");
	if (!branch || !*branch) {
		api_fail(c, LH_EINVAL, "missing_field", "branchID",
		         "'branchID' (the labID from GET /client/labs) is required");
		return;
	}
	enum lh_err e =
	    strlen(branch) < ID_CAP
	        ? c->app->store->ops->lab_get(c->app->store, c->acct.client_id, branch, &lab)
	        : LH_ENOTFOUND;
	if (e == LH_ENOTFOUND) {
		api_fail(c, e, "lab_not_found", "branchID", "no lab with this id in the account");
		return;
	}
	if (e != LH_OK) {
		api_fail_internal(c, e, "load lab");
		return;
	}
	if (query_party(c, party_id) == 0)
		send_page(c, lab.lab_id, (int)kind, party_id);
}

void api_crm_tests(struct call *c)
{
	crm_list(c, CATALOG_TEST);
}

void api_crm_packages(struct call *c)
{
	crm_list(c, CATALOG_PACKAGE);
}

/* ---- the lab's side (admin key) ---- */

/* The body as a JSON object, its fields checked by the caller; NULL after answering 400. */
static json_t *parse_body(struct call *c)
{
	json_t *j = NULL;
	struct verr v;
	if (validate_parse_object(c->rq->body, c->rq->body_len, &j, &v)) {
		api_fail_verr(c, &v);
		return NULL;
	}
	return j;
}

/* The lab named by the first path segment, or responds 404. */
static int admin_lab(struct call *c, struct lab *lab)
{
	enum lh_err e = c->app->store->ops->lab_find(c->app->store, c->arg[0], lab);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "lab_not_found", NULL, "no lab with this id");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load lab");
	return 0;
}

/* Puts r's items into lab's catalog; answers 400 naming an unknown test of a package
 * (field(b) names member b) and fails the rest internally. 0 when stored. */
static int put_items(struct call *c, const struct lab *lab, const struct catalog_request *r,
                     void (*field)(const struct catalog_request *r, size_t b, char *out,
                                   size_t cap))
{
	int64_t now = util_now();
	size_t bad = 0;
	for (size_t i = 0; i < r->n; i++) {
		snprintf(r->items[i].lab_id, sizeof r->items[i].lab_id, "%s", lab->lab_id);
		r->items[i].updated_at = now;
	}
	enum lh_err e = c->app->store->ops->catalog_put(c->app->store, lab->lab_id, r->items, r->n,
	                                                r->members, r->nmembers, &bad);
	domain_catalog_changed(lab->lab_id);
	if (e == LH_ENOTFOUND) {
		char f[96];
		field(r, bad, f, sizeof f);
		return api_fail(c, LH_EINVAL, "unknown_catalog_item", f,
		                "%s: unknown test '%s' in the lab's catalog (put the test first)",
		                f, r->members[bad].test_id);
	}
	if (e != LH_OK)
		return api_fail_internal(c, e, "put catalog");
	return 0;
}

/* Member b of a one-package put: "tests[k]". */
static void one_member_field(const struct catalog_request *r, size_t b, char *out, size_t cap)
{
	(void)r;
	snprintf(out, cap, "tests[%zu]", b);
}

/* Member b of an import: "packages[p].tests[k]", p counting packages only. */
static void import_member_field(const struct catalog_request *r, size_t b, char *out, size_t cap)
{
	size_t p = 0, first = 0;
	const char *pkg = r->members[b].package_id;
	for (size_t i = 0; i < r->n; i++) {
		if (r->items[i].kind != CATALOG_PACKAGE)
			continue;
		if (strcmp(r->items[i].id, pkg) == 0)
			break;
		p++;
	}
	while (first < b && strcmp(r->members[first].package_id, pkg) != 0)
		first++;
	snprintf(out, cap, "packages[%zu].tests[%zu]", p, b - first);
}

static void item_put(struct call *c, enum catalog_kind kind)
{
	struct catalog_request r = {0};
	struct lab lab;
	struct verr ve;
	json_t *b = parse_body(c); /* validate_catalog_item checks its fields */
	if (!b)
		return;
	if (validate_catalog_item(b, kind, c->arg[1], "", &r, &ve)) {
		api_fail_verr(c, &ve);
		goto out;
	}
	if (admin_lab(c, &lab) || put_items(c, &lab, &r, one_member_field))
		goto out;
	json_t *it = item_json(&r.items[0], 0);
	if (kind == CATALOG_PACKAGE) {
		json_t *tests = json_array();
		for (size_t i = 0; i < r.nmembers; i++)
			json_array_append_new(tests, json_string(r.members[i].test_id));
		json_object_set_new(it, "tests", tests);
	}
	api_ok(c, kind == CATALOG_TEST ? "Catalog test saved" : "Catalog package saved",
	       json_pack("{s:s, s:o}", "labID", lab.lab_id, kind_words[kind], it));
out:
	validate_catalog_free(&r);
	json_decref(b);
}

void api_admin_catalog_test_put(struct call *c)
{
	item_put(c, CATALOG_TEST);
}

void api_admin_catalog_package_put(struct call *c)
{
	item_put(c, CATALOG_PACKAGE);
}

static void item_delete(struct call *c, enum catalog_kind kind)
{
	struct lab lab;
	char pkg[ID_CAP] = "";
	if (admin_lab(c, &lab))
		return;
	enum lh_err e =
	    c->app->store->ops->catalog_delete(c->app->store, lab.lab_id, kind, c->arg[1], pkg);
	domain_catalog_changed(lab.lab_id);
	if (e == LH_ENOTFOUND)
		api_fail(c, e, "catalog_item_not_found", NULL, "the lab's catalog has no %s '%s'",
		         kind_words[kind], c->arg[1]);
	else if (e == LH_ECONFLICT)
		api_fail(c, e, "test_in_package", NULL,
		         "test '%s' is in package '%s': remove it from the package first",
		         c->arg[1], pkg);
	else if (e != LH_OK)
		api_fail_internal(c, e, "delete catalog item");
	else
		api_ok(c, kind == CATALOG_TEST ? "Catalog test removed" : "Catalog package removed",
		       json_pack("{s:s, s:s}", "labID", lab.lab_id, "_id", c->arg[1]));
}

void api_admin_catalog_test_delete(struct call *c)
{
	item_delete(c, CATALOG_TEST);
}

void api_admin_catalog_package_delete(struct call *c)
{
	item_delete(c, CATALOG_PACKAGE);
}

void api_admin_catalog_import(struct call *c)
{
	struct catalog_request r = {0};
	struct lab lab;
	struct verr ve;
	size_t np = 0;
	json_t *b = parse_body(c); /* validate_catalog_import checks its fields */
	if (!b)
		return;
	if (validate_catalog_import(b, &r, &ve)) {
		api_fail_verr(c, &ve);
		goto out;
	}
	if (admin_lab(c, &lab) || put_items(c, &lab, &r, import_member_field))
		goto out;
	for (size_t i = 0; i < r.n; i++)
		np += r.items[i].kind == CATALOG_PACKAGE;
	api_ok(c, "Catalog imported",
	       json_pack("{s:s, s:I, s:I}", "labID", lab.lab_id, "tests", (json_int_t)(r.n - np),
	                 "packages", (json_int_t)np));
out:
	validate_catalog_free(&r);
	json_decref(b);
}

/* The party id, of the lab's account, or responds 404. */
static int admin_party(struct call *c, const struct lab *lab, const char *id, struct party *p)
{
	enum lh_err e = c->app->store->ops->party_get(c->app->store, lab->client_id, id, p);
	if (e == LH_ENOTFOUND)
		return api_fail(c, e, "party_not_found", NULL,
		                "no party with this id in the lab's account");
	if (e != LH_OK)
		return api_fail_internal(c, e, "load party");
	return 0;
}

/* PUT (body {price}) or DELETE (body NULL) of a party's rate for an item. */
static void rate_set(struct call *c, enum catalog_kind kind, int put)
{
	static const struct field_spec spec[] = {{"price", F_NUMBER, 1, 0, 0}};
	struct lab lab;
	struct party p;
	struct verr ve;
	int64_t price = -1;
	json_t *b = put ? api_body(c, spec, COUNTOF(spec)) : NULL;
	if (put && !b)
		return;
	if (put && validate_price(json_object_get(b, "price"), "price", &price, &ve)) {
		api_fail_verr(c, &ve);
		goto out;
	}
	if (admin_lab(c, &lab) || admin_party(c, &lab, c->arg[2], &p))
		goto out;
	enum lh_err e = c->app->store->ops->catalog_rate_set(c->app->store, lab.lab_id, kind,
	                                                     c->arg[1], p.party_id, price);
	if (e == LH_ENOTFOUND && put)
		api_fail(c, e, "catalog_item_not_found", NULL, "the lab's catalog has no %s '%s'",
		         kind_words[kind], c->arg[1]);
	else if (e == LH_ENOTFOUND)
		api_fail(c, e, "rate_not_found", NULL, "party '%s' has no rate for %s '%s'",
		         p.party_id, kind_words[kind], c->arg[1]);
	else if (e != LH_OK)
		api_fail_internal(c, e, "set rate");
	else
		api_ok(c, put ? "Rate saved" : "Rate removed",
		       json_pack("{s:s, s:s, s:s, s:s, s:o}", "labID", lab.lab_id, "party",
		                 p.party_id, "kind", kind_words[kind], "_id", c->arg[1], "price",
		                 put ? price_json(price) : json_null()));
out:
	json_decref(b);
}

void api_admin_catalog_test_rate_put(struct call *c)
{
	rate_set(c, CATALOG_TEST, 1);
}

void api_admin_catalog_test_rate_delete(struct call *c)
{
	rate_set(c, CATALOG_TEST, 0);
}

void api_admin_catalog_package_rate_put(struct call *c)
{
	rate_set(c, CATALOG_PACKAGE, 1);
}

void api_admin_catalog_package_rate_delete(struct call *c)
{
	rate_set(c, CATALOG_PACKAGE, 0);
}

/* GET .../tests and .../packages: the list as integrators see it, with ?party= for one
 * party's prices (any kind). */
static void admin_list(struct call *c, enum catalog_kind kind)
{
	struct lab lab;
	struct party p;
	const char *party = http_query(c->rq, "party");
	if (admin_lab(c, &lab))
		return;
	if (party && *party && admin_party(c, &lab, party, &p))
		return;
	send_page(c, lab.lab_id, (int)kind, party && *party ? p.party_id : "");
}

void api_admin_catalog_tests(struct call *c)
{
	admin_list(c, CATALOG_TEST);
}

void api_admin_catalog_packages(struct call *c)
{
	admin_list(c, CATALOG_PACKAGE);
}

void api_admin_catalog_rates(struct call *c)
{
	struct lab lab;
	struct party p;
	if (admin_lab(c, &lab) == 0 && admin_party(c, &lab, c->arg[1], &p) == 0)
		send_page(c, lab.lab_id, CATALOG_ANY, p.party_id);
}
