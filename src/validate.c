/* validate.c: see validate.h. */
#define _POSIX_C_SOURCE 200809L
#include "validate.h"

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "domain.h"
#include "events.h"
#include "store.h"
#include "util.h"

int verr_set(struct verr *err, enum lh_err e, const char *code, const char *field, const char *fmt,
             ...)
{
	va_list ap;
	err->err = e;
	snprintf(err->code, sizeof err->code, "%s", code);
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return -1;
}

/* Finds a string holding a NUL ("\u0000" is valid JSON, but no field may hold one) and
 * writes its path ("events[2]", "patient_details.first_name") into path; 1 if found. */
static int find_nul(json_t *v, char *path, size_t cap, size_t at)
{
	const char *key;
	json_t *m;
	size_t i;

	if (json_is_string(v))
		return strlen(json_string_value(v)) != json_string_length(v);
	if (json_is_object(v)) {
		json_object_foreach(v, key, m)
		{
			size_t k = at;
			if (at && k + 1 < cap)
				path[k++] = '.';
			/* It goes in the answer: printable, and an empty key shown as "". */
			for (const char *p = *key ? key : "\"\""; *p && k + 1 < cap; p++)
				path[k++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
			path[k] = '\0';
			if (find_nul(m, path, cap, strlen(path)))
				return 1;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, m)
		{
			snprintf(path + at, cap - at, "[%zu]", i);
			if (find_nul(m, path, cap, strlen(path)))
				return 1;
		}
	}
	path[at] = '\0';
	return 0;
}

int validate_parse_object(const char *body, size_t len, json_t **out, struct verr *err)
{
	json_error_t je;
	json_t *j;
	char path[64]; /* a longer path is cut here, as it always was */

	if (len == 0)
		return verr_set(err, LH_EJSON, "invalid_json", NULL,
		                "request body is empty; send a JSON object");
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
	if (!j)
		return verr_set(err, LH_EJSON, "invalid_json", NULL,
		                "request body is not valid JSON: %s at line %d column %d", je.text,
		                je.line, je.column);
	if (!json_is_object(j)) {
		json_decref(j);
		return verr_set(err, LH_EJSON, "invalid_json", NULL,
		                "request body must be a JSON object");
	}
	path[0] = '\0';
	if (find_nul(j, path, sizeof path, 0)) {
		json_decref(j);
		return verr_set(err, LH_EINVAL, "invalid_value", path,
		                "'%s' must not contain NUL characters", path);
	}
	*out = j;
	return 0;
}

static const char *type_name(enum ftype t)
{
	static const char *const names[] = {"a string",   "an array", "an object",
	                                    "an integer", "a number", "a boolean"};
	return names[t];
}

static int type_ok(const json_t *v, enum ftype t)
{
	switch (t) {
	case F_STRING:
		return json_is_string(v);
	case F_ARRAY:
		return json_is_array(v);
	case F_OBJECT:
		return json_is_object(v);
	case F_INTEGER:
		return json_is_integer(v);
	case F_NUMBER:
		return json_is_number(v);
	case F_BOOL:
		return json_is_boolean(v);
	}
	return 0;
}

int validate_object(const json_t *obj, const struct field_spec *specs, size_t n, struct verr *err)
{
	const char *key;
	json_t *v;
	char esc[64];

	json_object_foreach((json_t *)obj, key, v)
	{
		size_t i;
		for (i = 0; i < n; i++)
			if (strcmp(key, specs[i].name) == 0)
				break;
		if (i == n) {
			size_t k = 0;
			for (const char *p = key; *p && k + 4 < sizeof esc; p++)
				esc[k++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
			esc[k] = '\0';
			return verr_set(err, LH_EINVAL, "unknown_field", esc, "unknown field '%s'",
			                esc);
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct field_spec *s = &specs[i];
		v = json_object_get(obj, s->name);
		if (!v || (json_is_null(v) && !s->nullable)) {
			if (s->required)
				return verr_set(err, LH_EINVAL, "missing_field", s->name,
				                "'%s' is required", s->name);
			if (v)
				return verr_set(err, LH_EINVAL, "invalid_type", s->name,
				                "'%s' must be %s, not null", s->name,
				                type_name(s->type));
			continue;
		}
		if (json_is_null(v))
			continue;
		if (!type_ok(v, s->type))
			return verr_set(err, LH_EINVAL, "invalid_type", s->name, "'%s' must be %s",
			                s->name, type_name(s->type));
		if (s->type == F_STRING) {
			size_t len = json_string_length(v);
			if (s->max && len > s->max)
				return verr_set(err, LH_EINVAL, "too_long", s->name,
				                "'%s' is longer than %zu bytes", s->name, s->max);
			if (len == 0 && s->required)
				return verr_set(err, LH_EINVAL, "invalid_value", s->name,
				                "'%s' must not be empty", s->name);
			if (strlen(json_string_value(v)) != len)
				return verr_set(err, LH_EINVAL, "invalid_value", s->name,
				                "'%s' must not contain NUL characters", s->name);
		}
		if (s->type == F_ARRAY && s->max && json_array_size(v) > s->max)
			return verr_set(err, LH_EINVAL, "too_long", s->name,
			                "'%s' has more than %zu items", s->name, s->max);
	}
	return 0;
}

int validate_events(const json_t *arr, const char *field, unsigned *out, struct verr *err)
{
	size_t i;
	json_t *v;
	unsigned mask = 0;

	if (json_array_size(arr) == 0)
		return verr_set(err, LH_EINVAL, "invalid_value", field,
		                "'%s' must list at least one event", field);
	json_array_foreach(arr, i, v)
	{
		char path[64];
		snprintf(path, sizeof path, "%s[%zu]", field, i);
		if (!json_is_string(v))
			return verr_set(err, LH_EINVAL, "invalid_type", path,
			                "'%s' must be a string", path);
		int ev = event_from_name(json_string_value(v));
		if (ev < 0 || strlen(json_string_value(v)) != json_string_length(v))
			return verr_set(
			    err, LH_EINVAL, "unknown_event", path,
			    "'%s' is not an event; use bill.created, bill.completed, bill.deleted, report.completed, lead.created or booking.created",
			    path);
		mask |= 1u << ev;
	}
	*out = mask;
	return 0;
}

/* A DNS name (labels of 1-63 letters, digits, '-' or '_', not starting or ending with '-',
 * 253 bytes at most) or an address; a dotted number that is no IPv4 address is neither. */
static int host_syntax_ok(const char *host)
{
	struct ip_addr a;
	size_t n = strlen(host);
	if (host[0] == '[')
		return addr_parse_literal(host, &a) == 0;
	if (n > 0 && host[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return 0;
	char tmp[256];
	memcpy(tmp, host, n);
	tmp[n] = '\0';
	size_t label = 0;
	for (size_t i = 0; i <= n; i++) {
		char ch = tmp[i] ? tmp[i] : '.';
		if (ch == '.') {
			if (label == 0 || label > 63 || tmp[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)ch) && ch != '-' && ch != '_')
			return 0;
		if (label == 0 && ch == '-')
			return 0;
		label++;
	}
	/* The last label numeric (or hex): resolvers read it as an address, so it must be one. */
	const char *lastl = strrchr(tmp, '.');
	lastl = lastl ? lastl + 1 : tmp;
	int numeric = strspn(lastl, "0123456789") == strlen(lastl) ||
	              (lastl[0] == '0' && (lastl[1] == 'x' || lastl[1] == 'X'));
	if (numeric)
		return addr_parse_literal(tmp, &a) == 0;
	return 1;
}

int validate_endpoint(const char *url, const char *field, const struct cidr *allow, size_t nallow,
                      struct verr *err)
{
	CURLU *u = NULL;
	char *host = NULL, *user = NULL, *pass = NULL, *frag = NULL;
	int rc = -1;
	size_t len = strlen(url);

	if (len > ENDPOINT_CAP - 1)
		return verr_set(err, LH_EINVAL, "too_long", field, "'%s' is longer than %d bytes",
		                field, ENDPOINT_CAP - 1);
	for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
		if (*p <= 0x20 || *p == 0x7f)
			return verr_set(err, LH_EINVAL, "invalid_endpoint", field,
			                "'%s' must not contain spaces or control characters",
			                field);
		/* Unicode look-alikes ("１２７.０.０.１", "127。0。0。1") become other hosts
		 * after IDN mapping, past any check of the text: ASCII only. */
		if (*p >= 0x80)
			return verr_set(
			    err, LH_EINVAL, "invalid_endpoint", field,
			    "'%s' must be ASCII: percent-encode the path and write international host names in punycode (xn--...)",
			    field);
	}
	if (strncasecmp(url, "https://", 8) != 0)
		return verr_set(err, LH_EINVAL, "invalid_endpoint", field,
		                "'%s' must be an absolute https:// URL", field);
	if (strchr(url, '#'))
		return verr_set(err, LH_EINVAL, "invalid_endpoint", field,
		                "'%s' must not have a fragment (#...)", field);
	if (url[8] == '/' || url[8] == '?' || url[8] == '\0')
		return verr_set(err, LH_EINVAL, "invalid_endpoint", field, "'%s' must have a host",
		                field);
	size_t alen = strcspn(url + 8, "/?");
	if (alen > 0 && url[8 + alen - 1] == ':')
		return verr_set(err, LH_EINVAL, "invalid_endpoint", field, "'%s' has an empty port",
		                field);
	/* Parse with libcurl, the same parser the delivery engine uses, so the host we check
	 * is the host it will connect to. */
	u = curl_url();
	if (!u)
		return verr_set(err, LH_ENOMEM, "out_of_memory", NULL, "out of memory");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		verr_set(err, LH_EINVAL, "invalid_endpoint", field, "'%s' is not a valid URL",
		         field);
		goto out;
	}
	curl_url_get(u, CURLUPART_USER, &user, 0);
	curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
	curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
	if (user || pass || strchr(url + 8, '@') != NULL) {
		const char *at = strchr(url + 8, '@');
		const char *slash = strpbrk(url + 8, "/?");
		if (user || pass || (at && (!slash || at < slash))) {
			verr_set(err, LH_EINVAL, "invalid_endpoint", field,
			         "'%s' must not contain user information (user:password@)", field);
			goto out;
		}
	}
	if (frag) {
		verr_set(err, LH_EINVAL, "invalid_endpoint", field,
		         "'%s' must not have a fragment (#...)", field);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
		verr_set(err, LH_EINVAL, "invalid_endpoint", field, "'%s' must have a host", field);
		goto out;
	}
	if (strchr(host, '%')) {
		verr_set(err, LH_EINVAL, "invalid_endpoint", field,
		         "'%s' host must not be percent-encoded or carry a zone id", field);
		goto out;
	}
	if (!host_syntax_ok(host)) {
		verr_set(err, LH_EINVAL, "invalid_endpoint", field,
		         "'%s' host is not a valid name or address", field);
		goto out;
	}
	char *port = NULL;
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK && port && atoi(port) == 0) {
		curl_free(port);
		verr_set(err, LH_EINVAL, "invalid_endpoint", field, "'%s' has port 0", field);
		goto out;
	}
	curl_free(port);
	const char *why = addr_host_blocked_reason(host, allow, nallow);
	if (why) {
		verr_set(
		    err, LH_EINVAL, "blocked_address", field,
		    "'%s' points at a blocked address range (%s), which webhooks may not reach",
		    field, why);
		goto out;
	}
	rc = 0;
out:
	curl_free(host);
	curl_free(user);
	curl_free(pass);
	curl_free(frag);
	curl_url_cleanup(u);
	return rc;
}

static const struct field_spec subscribe_fields[] = {
    {"labID", F_STRING, 1, 64, 0},        {"events", F_ARRAY, 1, 64, 0},
    {"endpoint", F_STRING, 1, 0, 0}, /* validate_endpoint caps it with a clearer message */
    {"protocol", F_STRING, 1, 16, 0},     {"corporateUser", F_STRING, 0, 64, 0},
    {"organization", F_STRING, 0, 64, 0}, {"authToken", F_STRING, 0, AUTHTOKEN_CAP - 1, 0},
};

static const char *opt_string(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

int validate_subscribe(const json_t *obj, const struct cidr *allow, size_t nallow,
                       struct sub_request *out, struct verr *err)
{
	struct sub_request r;

	memset(&r, 0, sizeof r);
	if (validate_object(obj, subscribe_fields, COUNTOF(subscribe_fields), err))
		return -1;
	if (strcmp(json_string_value(json_object_get(obj, "protocol")), "https") != 0)
		return verr_set(err, LH_EINVAL, "invalid_value", "protocol",
		                "'protocol' must be \"https\"");
	if (validate_events(json_object_get(obj, "events"), "events", &r.events, err))
		return -1;
	r.lab_id = opt_string(obj, "labID");
	r.endpoint = opt_string(obj, "endpoint");
	if (validate_endpoint(r.endpoint, "endpoint", allow, nallow, err))
		return -1;
	r.corporate_user = opt_string(obj, "corporateUser");
	r.organization = opt_string(obj, "organization");
	r.auth_token = opt_string(obj, "authToken");
	if (r.corporate_user && !*r.corporate_user)
		return verr_set(err, LH_EINVAL, "invalid_value", "corporateUser",
		                "'corporateUser' must not be empty");
	if (r.organization && !*r.organization)
		return verr_set(err, LH_EINVAL, "invalid_value", "organization",
		                "'organization' must not be empty");
	if (r.auth_token && validate_auth_token(r.auth_token, "authToken", err))
		return -1;
	if (r.corporate_user && r.organization)
		return verr_set(err, LH_EINVAL, "too_many_parties", "organization",
		                "send either 'corporateUser' or 'organization', not both");
	*out = r;
	return 0;
}

int validate_auth_token(const char *tok, const char *field, struct verr *err)
{
	/* It goes into an Authorization header: visible ASCII only, so no header injection. */
	for (const unsigned char *p = (const unsigned char *)tok; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return verr_set(err, LH_EINVAL, "invalid_value", field,
			                "'%s' may hold only visible ASCII characters", field);
	return 0;
}

/* ---- bills, leads and bookings (API.md 5) ---- */

static const struct field_spec bill_fields[] = {
    {"labID", F_STRING, 1, 64, 0},
    {"patient_details", F_OBJECT, 1, 0, 0},
    {"integrator_id", F_STRING, 1, NAME_CAP - 1, 0},
    {"lead_source", F_STRING, 0, NAME_CAP - 1, 0},
    {"mapped_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
    {"unmapped_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
    {"mapped_packages", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
    {"unmapped_packages", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
    {"unmapped_packages_with_tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
    {"barCode", F_STRING, 0, NAME_CAP - 1, 0},
    {"corporateUser", F_STRING, 0, 64, 0},
    {"referredOrganization", F_STRING, 0, 64, 0},
    {"referredHospitalOrganization", F_STRING, 0, 64, 0},
    {"clientID", F_STRING, 1, 64, 0}, /* the lab route's only */
};
const struct field_table validate_bill_table = {bill_fields, COUNTOF(bill_fields) - 1};
const struct field_table validate_lab_bill_table = {bill_fields, COUNTOF(bill_fields)};

static const struct field_spec patient_fields[] = {
    {"first_name", F_STRING, 1, NAME_CAP - 1, 0},
    {"last_name", F_STRING, 0, NAME_CAP - 1, 0},
    {"gender", F_STRING, 1, 16, 0},
    {"age", F_INTEGER, 1, 0, 0},
    {"age_type", F_STRING, 1, 16, 0},
};

static const struct field_spec lead_fields[] = {
    {"branchID", F_STRING, 1, 64, 0},
    {"integratorID", F_STRING, 1, NAME_CAP - 1, 0},
    {"first_name", F_STRING, 1, NAME_CAP - 1, 0},
    {"last_name", F_STRING, 0, NAME_CAP - 1, 0},
    {"contact", F_STRING, 1, 32, 0},
    {"email", F_STRING, 0, EMAIL_CAP - 1, 0},
    {"gender", F_STRING, 0, 16, 0},
    {"age", F_INTEGER, 1, 0, 0},
    {"age_type", F_STRING, 1, 16, 0},
    {"address", F_STRING, 0, 1000, 0},
    {"pincode", F_STRING, 0, 12, 0},
    {"source", F_STRING, 0, NAME_CAP - 1, 0},
    {"priority", F_STRING, 0, 16, 0},
    {"tests", F_ARRAY, 0, 100, 0},
    {"packages", F_ARRAY, 0, 100, 0},
    {"phase", F_STRING, 0, 16, 0},
    {"bookingType", F_STRING, 0, 64, 0},
    {"scheduledAt", F_STRING, 0, 40, 0},
    {"corporateUser", F_STRING, 0, 64, 0},
    {"referredOrganization", F_STRING, 0, 64, 0},
    {"referredHospitalOrganization", F_STRING, 0, 64, 0},
    {"clientID", F_STRING, 1, 64, 0}, /* the lab route's only */
};
const struct field_table validate_lead_table = {lead_fields, COUNTOF(lead_fields) - 1};
const struct field_table validate_lab_lead_table = {lead_fields, COUNTOF(lead_fields)};

static const struct field_spec booking_fields[] = {
    {"bookingType", F_STRING, 1, 64, 0},
    {"scheduledAt", F_STRING, 1, 40, 0},
};
const struct field_table validate_booking_table = {booking_fields, COUNTOF(booking_fields)};

const struct party_slot validate_party_slots[VALIDATE_PARTY_SLOTS] = {
    {"corporateUser", PARTY_CORPORATE_USER, offsetof(struct parties, corporate_user)},
    {"referredOrganization", PARTY_ORGANIZATION, offsetof(struct parties, referred_org)},
    {"referredHospitalOrganization", PARTY_ORGANIZATION,
     offsetof(struct parties, referred_hospital_org)},
};

static void party_refs(const json_t *obj, struct party_refs *out)
{
	for (size_t i = 0; i < VALIDATE_PARTY_SLOTS; i++) {
		const char *id = opt_string(obj, validate_party_slots[i].field);
		out->id[i] = id && *id ? id : NULL;
	}
}

static int one_of(const char *v, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (strcmp(v, *allowed) == 0)
			return 1;
	return 0;
}

/* An enumerated string field, when present: names the allowed values. */
static int check_enum(const json_t *o, const char *key, const char *path,
                      const char *const *allowed, const char *list, struct verr *err)
{
	const char *v = opt_string(o, key);
	if (v && !one_of(v, allowed))
		return verr_set(err, LH_EINVAL, "invalid_value", path, "'%s' must be one of %s",
		                path, list);
	return 0;
}

static const char *const genders[] = {"male", "female", "other", NULL};
static const char *const age_types[] = {"year", "month", "day", NULL};

/* A test or package reference: a string, or an integer written as one. */
static int ref_text(const json_t *v, char *out, size_t cap)
{
	if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < cap &&
	    strlen(json_string_value(v)) == json_string_length(v)) {
		snprintf(out, cap, "%s", json_string_value(v));
		return 0;
	}
	if (json_is_integer(v)) {
		snprintf(out, cap, "%lld", (long long)json_integer_value(v));
		return 0;
	}
	return -1;
}

/* Adds a report named name (of package, or none), made from ref (NULL: free text). */
static int add_report(struct bill_request *b, size_t *cap, const char *name, const char *package,
                      const struct bill_ref *ref, struct verr *err)
{
	size_t rcap = *cap;
	if (b->n_reports >= DOMAIN_MAX_REPORTS)
		return verr_set(err, LH_EINVAL, "too_many_tests", NULL,
		                "a bill may hold at most %d tests", DOMAIN_MAX_REPORTS);
	if (UTIL_GROW(b->reports, *cap, b->n_reports + 1, 4) ||
	    UTIL_GROW(b->refs, rcap, *cap, *cap))
		return verr_set(err, LH_ENOMEM, "out_of_memory", NULL, "out of memory");
	assert(b->n_reports < *cap);
	struct report *r = &b->reports[b->n_reports];
	memset(r, 0, sizeof *r);
	r->seq = (int)b->n_reports;
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->package, sizeof r->package, "%s", package ? package : "");
	struct bill_ref *f = &b->refs[b->n_reports];
	memset(f, 0, sizeof *f);
	f->kind = -1;
	if (ref)
		*f = *ref;
	b->n_reports++;
	return 0;
}

/* The kinds of test and package list a bill may carry. */
enum list_kind {
	L_TEST_NAMES,    /* plain test names */
	L_PACKAGE_NAMES, /* plain package names: one report each, named as the package */
	L_MAPPED_TESTS,  /* {flabs_id | id, name?} */
	L_MAPPED_PKGS,   /* {id, name?}: one report each, of package id */
	L_PKGS_TESTS,    /* {package_name, tests?}: a report per test, or one for the package */
};

/* A mapped test or package: {flabs_id | id, name?}; flabs_id for tests only. */
static int mapped_ref(struct bill_request *b, size_t *cap, const json_t *v, const char *path,
                      enum list_kind kind, struct verr *err)
{
	static const char *const keys[] = {"flabs_id", "id", "name"};
	int tests = kind == L_MAPPED_TESTS;
	const char *key;
	json_t *x;
	json_object_foreach((json_t *)v, key, x)
	{
		int known = 0;
		for (size_t k = tests ? 0 : 1; k < COUNTOF(keys); k++)
			known |= strcmp(key, keys[k]) == 0;
		if (!known)
			return verr_set(err, LH_EINVAL, "unknown_field", path,
			                "unknown field '%.40s' in '%s'", key, path);
	}
	const json_t *ref = tests && json_object_get(v, "flabs_id") ? json_object_get(v, "flabs_id")
	                                                            : json_object_get(v, "id");
	char id[NAME_CAP];
	if (!ref || ref_text(ref, id, sizeof id))
		return verr_set(err, LH_EINVAL, ref ? "invalid_value" : "missing_field", path,
		                "'%s' needs %s (a string or integer)", path,
		                tests ? "'flabs_id' or 'id'" : "'id'");
	const char *nm = opt_string(v, "name");
	if (json_object_get(v, "name") && (!nm || !*nm || strlen(nm) >= NAME_CAP))
		return verr_set(err, LH_EINVAL, "invalid_value", path,
		                "'%s.name' must be a non-empty string", path);
	struct bill_ref from = {.kind = tests ? CATALOG_TEST : CATALOG_PACKAGE};
	snprintf(from.id, sizeof from.id, "%s", id);
	snprintf(from.field, sizeof from.field, "%.48s.%s", path,
	         tests && json_object_get(v, "flabs_id") ? "flabs_id" : "id");
	return add_report(b, cap, nm ? nm : id, tests ? NULL : id, &from, err);
}

/* {package_name, tests?}: a report per test, or one for the package when it lists none. */
static int package_tests(struct bill_request *b, size_t *cap, const json_t *v, const char *path,
                         struct verr *err)
{
	static const struct field_spec pk[] = {
	    {"package_name", F_STRING, 1, NAME_CAP - 1, 0},
	    {"tests", F_ARRAY, 0, DOMAIN_MAX_REPORTS, 0},
	};
	char name[NAME_CAP];
	struct verr ve;
	const json_t *t;
	size_t k;
	if (validate_object(v, pk, COUNTOF(pk), &ve)) {
		char f[160]; /* ve.field is an unknown key cut to 60 bytes, or a name above */
		snprintf(f, sizeof f, "%s.%.63s", path, ve.field);
		return verr_set(err, ve.err, ve.code, f, "%s: %s", path, ve.message);
	}
	const char *pkg = opt_string(v, "package_name");
	if (json_array_size(json_object_get(v, "tests")) == 0 &&
	    add_report(b, cap, pkg, pkg, NULL, err))
		return -1;
	json_array_foreach(json_object_get(v, "tests"), k, t)
	{
		if (!json_is_string(t) || ref_text(t, name, sizeof name))
			return verr_set(err, LH_EINVAL, "invalid_value", path,
			                "'%s.tests[%zu]' must be a non-empty string", path, k);
		if (add_report(b, cap, name, pkg, NULL, err))
			return -1;
	}
	return 0;
}

/* Turns the five test and package lists into reports, in this order. */
static int collect_reports(const json_t *obj, struct bill_request *b, struct verr *err)
{
	static const struct {
		const char *field;
		enum list_kind kind;
	} lists[] = {
	    {"mapped_tests", L_MAPPED_TESTS},
	    {"unmapped_tests", L_TEST_NAMES},
	    {"mapped_packages", L_MAPPED_PKGS},
	    {"unmapped_packages", L_PACKAGE_NAMES},
	    {"unmapped_packages_with_tests", L_PKGS_TESTS},
	};
	char path[96], name[NAME_CAP];
	size_t cap = 0;
	for (size_t li = 0; li < COUNTOF(lists); li++) {
		enum list_kind kind = lists[li].kind;
		const json_t *v;
		size_t i;
		json_array_foreach(json_object_get(obj, lists[li].field), i, v)
		{
			snprintf(path, sizeof path, "%s[%zu]", lists[li].field, i);
			if (kind == L_TEST_NAMES || kind == L_PACKAGE_NAMES) {
				if (ref_text(v, name, sizeof name) || !json_is_string(v))
					return verr_set(
					    err, LH_EINVAL, "invalid_value", path,
					    "'%s' must be a non-empty string of at most %d bytes",
					    path, NAME_CAP - 1);
				if (add_report(b, &cap, name, kind == L_PACKAGE_NAMES ? name : NULL,
				               NULL, err))
					return -1;
				continue;
			}
			if (!json_is_object(v))
				return verr_set(err, LH_EINVAL, "invalid_type", path,
				                "'%s' must be an object", path);
			if (kind == L_PKGS_TESTS ? package_tests(b, &cap, v, path, err)
			                         : mapped_ref(b, &cap, v, path, kind, err))
				return -1;
		}
	}
	if (b->n_reports == 0)
		return verr_set(
		    err, LH_EINVAL, "missing_tests", "mapped_tests",
		    "send at least one test or package (mapped_tests, unmapped_tests, mapped_packages, unmapped_packages or unmapped_packages_with_tests)");
	return 0;
}

int validate_bill(const json_t *obj, struct bill_request *out, struct verr *err)
{
	struct bill_request b;
	struct verr ve;
	const json_t *pd = json_object_get(obj, "patient_details");

	memset(&b, 0, sizeof b);
	if (validate_object(pd, patient_fields, COUNTOF(patient_fields), &ve)) {
		char f[96];
		snprintf(f, sizeof f, "patient_details.%.63s", ve.field);
		return verr_set(err, ve.err, ve.code, f, "patient_details: %s", ve.message);
	}
	json_int_t age = json_integer_value(json_object_get(pd, "age"));
	if (age < 0 || age > 200)
		return verr_set(err, LH_EINVAL, "invalid_value", "patient_details.age",
		                "'patient_details.age' must be between 0 and 200");
	if (check_enum(pd, "gender", "patient_details.gender", genders, "male, female, other",
	               err) ||
	    check_enum(pd, "age_type", "patient_details.age_type", age_types, "year, month, day",
	               err))
		return -1;
	if (collect_reports(obj, &b, err)) {
		free(b.reports);
		free(b.refs);
		return -1;
	}
	b.patient = pd;
	b.lab_id = opt_string(obj, "labID");
	b.integrator_id = opt_string(obj, "integrator_id");
	b.lead_source = opt_string(obj, "lead_source") ? opt_string(obj, "lead_source") : "";
	b.bar_code = opt_string(obj, "barCode") ? opt_string(obj, "barCode") : "";
	party_refs(obj, &b.parties);
	*out = b;
	return 0;
}

/* Each item a non-empty string of less than NAME_CAP bytes. */
static int string_list(const json_t *obj, const char *key, struct verr *err)
{
	const json_t *v;
	size_t i;
	json_array_foreach(json_object_get(obj, key), i, v)
	{
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) >= NAME_CAP) {
			char path[64];
			snprintf(path, sizeof path, "%s[%zu]", key, i);
			return verr_set(err, LH_EINVAL, "invalid_value", path,
			                "'%s' must be a non-empty string", path);
		}
	}
	return 0;
}

static int email_ok(const char *e)
{
	const char *at = strchr(e, '@');
	if (!at || at == e || strchr(at + 1, '@') || !strchr(at + 1, '.') || at[1] == '.' ||
	    e[strlen(e) - 1] == '.')
		return 0;
	for (const char *p = e; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return 0;
	return 1;
}

int validate_booking(const json_t *obj, struct booking_request *out, struct verr *err)
{
	const char *type = opt_string(obj, "bookingType"), *when = opt_string(obj, "scheduledAt");
	int64_t t;
	if (!type || !*type)
		return verr_set(err, LH_EINVAL, "missing_field", "bookingType",
		                "'bookingType' is required for a booking");
	if (!when || !*when)
		return verr_set(err, LH_EINVAL, "missing_field", "scheduledAt",
		                "'scheduledAt' is required for a booking");
	if (util_parse_time(when, &t) != 0 || t < 0 || t > 253402300799LL)
		return verr_set(
		    err, LH_EINVAL, "invalid_value", "scheduledAt",
		    "'scheduledAt' must be an RFC 3339 time such as 2026-01-20T10:30:00Z");
	out->type = type;
	out->scheduled_at = t;
	return 0;
}

int validate_lead(const json_t *obj, struct lead_request *out, struct verr *err)
{
	static const char *const phases[] = {"lead", "booking", NULL};
	static const char *const priorities[] = {"urgent", "high", "medium", "low", NULL};
	struct lead_request l;
	const char *contact = opt_string(obj, "contact"), *email = opt_string(obj, "email");

	memset(&l, 0, sizeof l);
	if (strlen(contact) != 10 || strspn(contact, "0123456789") != 10)
		return verr_set(err, LH_EINVAL, "invalid_value", "contact",
		                "'contact' must be exactly 10 digits");
	if (email && *email && !email_ok(email))
		return verr_set(err, LH_EINVAL, "invalid_value", "email",
		                "'email' is not an email address");
	json_int_t age = json_integer_value(json_object_get(obj, "age"));
	if (age < 0 || age > 200)
		return verr_set(err, LH_EINVAL, "invalid_value", "age",
		                "'age' must be between 0 and 200");
	const char *pin = opt_string(obj, "pincode");
	if (pin && strspn(pin, "0123456789") != strlen(pin))
		return verr_set(err, LH_EINVAL, "invalid_value", "pincode",
		                "'pincode' must be digits");
	if (check_enum(obj, "phase", "phase", phases, "lead, booking", err) ||
	    check_enum(obj, "gender", "gender", genders, "male, female, other", err) ||
	    check_enum(obj, "age_type", "age_type", age_types, "year, month, day", err) ||
	    check_enum(obj, "priority", "priority", priorities, "urgent, high, medium, low", err) ||
	    string_list(obj, "tests", err) || string_list(obj, "packages", err))
		return -1;
	l.booking = opt_string(obj, "phase") && strcmp(opt_string(obj, "phase"), "booking") == 0;
	if (l.booking && validate_booking(obj, &l.bk, err))
		return -1;
	l.branch_id = opt_string(obj, "branchID");
	l.integrator_id = opt_string(obj, "integratorID");
	l.contact = contact;
	l.email = email ? email : "";
	party_refs(obj, &l.parties);
	*out = l;
	return 0;
}

/* ---- a lab's catalog ---- */

int validate_price(const json_t *v, const char *field, int64_t *minor, struct verr *err)
{
	const int64_t max_units = CATALOG_PRICE_MAX / 100;
	int64_t cents;
	if (json_is_integer(v)) {
		json_int_t u = json_integer_value(v);
		if (u < 0 || u > max_units)
			goto range;
		cents = (int64_t)u * 100;
	} else if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!(d >= 0.0 && d <= (double)max_units)) /* also refuses NaN */
			goto range;
		cents = (int64_t)(d * 100.0 + 0.5);
		/* Division by 100 rounds correctly, as the JSON parser did: equal only when the
		 * number had at most two decimals. */
		if ((double)cents / 100.0 != d)
			return verr_set(err, LH_EINVAL, "invalid_value", field,
			                "'%s' may have at most two decimals", field);
	} else {
		return verr_set(err, LH_EINVAL, "invalid_type", field,
		                "'%s' must be a number (the price, e.g. 499.50)", field);
	}
	*minor = cents;
	return 0;
range:
	return verr_set(err, LH_EINVAL, "invalid_value", field, "'%s' must be from 0 to %lld",
	                field, (long long)max_units);
}

int validate_catalog_id(const char *id, const char *field, struct verr *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n >= ID_CAP ||
	    strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != n)
		return verr_set(err, LH_EINVAL, "invalid_value", field,
		                "'%s' must be 1 to %d letters, digits, '_' or '-'", field,
		                ID_CAP - 1);
	return 0;
}

void validate_catalog_free(struct catalog_request *r)
{
	if (!r)
		return;
	free(r->items);
	free(r->members);
	memset(r, 0, sizeof *r);
}

/* "path.key", or "key" at the top. */
static void sub_field(char *out, size_t cap, const char *path, const char *key)
{
	/* The callers' caps keep it whole; were it cut, the error would still name a prefix. */
	if (snprintf(out, cap, "%s%s%s", path, *path ? "." : "", key) >= (int)cap)
		out[cap - 1] = '\0';
}

int validate_catalog_item(const json_t *obj, enum catalog_kind kind, const char *id,
                          const char *path, struct catalog_request *out, struct verr *err)
{
	static const struct field_spec spec[] = {
	    {"name", F_STRING, 1, NAME_CAP - 1, 0},
	    {"price", F_NUMBER, 1, 0, 0},
	    {"id", F_STRING, 0, 64, 0},
	    {"tests", F_ARRAY, 0, CATALOG_PKG_TESTS, 0},
	};
	/* A test takes no tests; an item named by its path takes no id. */
	size_t nspec = kind == CATALOG_PACKAGE ? 4 : 3;
	char f[128];
	struct verr ve;
	if (!json_is_object(obj))
		return verr_set(err, LH_EINVAL, "invalid_type", path, "'%s' must be an object",
		                path);
	int bad = validate_object(obj, spec, nspec, &ve);
	if (!bad && id && json_object_get(obj, "id"))
		bad = verr_set(&ve, LH_EINVAL, "unknown_field", "id",
		               "unknown field 'id' (the id is in the path)");
	if (bad) {
		sub_field(f, sizeof f, path, ve.field);
		return verr_set(err, ve.err, ve.code, f, "%s%s%s", path, *path ? ": " : "",
		                ve.message);
	}
	if (!id) {
		id = opt_string(obj, "id");
		sub_field(f, sizeof f, path, "id");
		if (!id)
			return verr_set(err, LH_EINVAL, "missing_field", f, "'%s' is required", f);
		if (validate_catalog_id(id, f, err))
			return -1;
	}
	struct catalog_item it;
	memset(&it, 0, sizeof it);
	it.kind = kind;
	it.party_price = -1;
	snprintf(it.id, sizeof it.id, "%s", id);
	snprintf(it.name, sizeof it.name, "%s", opt_string(obj, "name"));
	sub_field(f, sizeof f, path, "price");
	if (validate_price(json_object_get(obj, "price"), f, &it.price, err))
		return -1;
	const json_t *t;
	size_t i, cap = out->nmembers, start = out->nmembers;
	json_array_foreach(json_object_get(obj, "tests"), i, t)
	{
		char tf[160];
		snprintf(tf, sizeof tf, "%s%stests[%zu]", path, *path ? "." : "", i);
		const char *tid = json_string_value(t);
		if (validate_catalog_id(tid, tf, err))
			return -1;
		for (size_t k = start; k < out->nmembers; k++)
			if (strcmp(out->members[k].test_id, tid) == 0)
				return verr_set(err, LH_EINVAL, "duplicate_value", tf,
				                "'%s': test '%s' is listed twice", tf, tid);
		if (UTIL_GROW(out->members, cap, out->nmembers + 1, 8))
			return verr_set(err, LH_ENOMEM, "out_of_memory", NULL, "out of memory");
		struct catalog_member *m = &out->members[out->nmembers++];
		memset(m, 0, sizeof *m);
		snprintf(m->package_id, sizeof m->package_id, "%s", id);
		snprintf(m->test_id, sizeof m->test_id, "%s", tid);
	}
	cap = out->n;
	if (UTIL_GROW(out->items, cap, out->n + 1, 8))
		return verr_set(err, LH_ENOMEM, "out_of_memory", NULL, "out of memory");
	out->items[out->n++] = it;
	return 0;
}

int validate_catalog_import(const json_t *obj, struct catalog_request *out, struct verr *err)
{
	static const struct field_spec spec[] = {
	    {"tests", F_ARRAY, 0, CATALOG_IMPORT_MAX, 0},
	    {"packages", F_ARRAY, 0, CATALOG_IMPORT_MAX, 0},
	};
	static const struct {
		const char *list;
		enum catalog_kind kind;
	} lists[] = {{"tests", CATALOG_TEST}, {"packages", CATALOG_PACKAGE}};
	struct catalog_request r;
	memset(&r, 0, sizeof r);
	if (validate_object(obj, spec, COUNTOF(spec), err))
		return -1;
	if (json_array_size(json_object_get(obj, "tests")) +
	        json_array_size(json_object_get(obj, "packages")) >
	    CATALOG_IMPORT_MAX)
		return verr_set(err, LH_EINVAL, "too_long", "tests",
		                "at most %d tests and packages in one import", CATALOG_IMPORT_MAX);
	for (size_t l = 0; l < COUNTOF(lists); l++) {
		const json_t *v;
		size_t i, first = r.n;
		json_array_foreach(json_object_get(obj, lists[l].list), i, v)
		{
			char path[48];
			snprintf(path, sizeof path, "%s[%zu]", lists[l].list, i);
			if (validate_catalog_item(v, lists[l].kind, NULL, path, &r, err))
				goto fail;
			/* Sorted ids would be quicker; imports are small and rare. */
			for (size_t k = first; k + 1 < r.n; k++)
				if (strcmp(r.items[k].id, r.items[r.n - 1].id) == 0) {
					char f[64];
					snprintf(f, sizeof f, "%s.id", path);
					verr_set(err, LH_EINVAL, "duplicate_value", f,
					         "'%s': '%s' is listed twice", f, r.items[k].id);
					goto fail;
				}
		}
	}
	if (r.n == 0) {
		verr_set(err, LH_EINVAL, "missing_field", "tests",
		         "send 'tests' or 'packages' with at least one item");
		goto fail;
	}
	*out = r;
	return 0;
fail:
	validate_catalog_free(&r);
	return -1;
}
