/* validate.c: see validate.h. */
#define _POSIX_C_SOURCE 200809L
#include "validate.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "events.h"
#include "store.h"

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
	char path[sizeof err->field];

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
