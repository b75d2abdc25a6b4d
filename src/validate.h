/* validate.h: request-body validation shared by every API resource, and the rules of
 * webhook registration (API.md 4.1) as pure functions of the JSON body.
 *
 * Nothing here touches the store or the network, so the whole module is fuzzable
 * (tests/fuzz/fuzz_subscribe.c). Failures fill a struct verr that names the error code,
 * the field at fault and a human message. Results point into the caller's json_t
 * (borrowed for as long as it lives). Thread-safe.
 */
#ifndef LH_VALIDATE_H
#define LH_VALIDATE_H

#include <stddef.h>

#include <jansson.h>

#include "addr.h"
#include "err.h"

struct verr {
	enum lh_err err;
	char code[48];
	char field[64];
	char message[256];
};

enum ftype { F_STRING, F_ARRAY, F_OBJECT, F_INTEGER, F_NUMBER, F_BOOL };

struct field_spec {
	const char *name;
	enum ftype type;
	int required;
	size_t max;   /* strings: bytes; arrays: items; 0 = no cap beyond the body's */
	int nullable; /* JSON null accepted (and means "clear" where the API says so) */
};

/* Fills err and returns -1 (for "return verr_set(...)"). */
int verr_set(struct verr *err, enum lh_err e, const char *code, const char *field, const char *fmt,
             ...) __attribute__((format(printf, 5, 6)));

/* Parses body as a JSON object (duplicate keys rejected). Returns owned, json_decref. */
int validate_parse_object(const char *body, size_t len, json_t **out, struct verr *err);
/* Checks obj against specs: unknown fields, types, required fields, caps, empty strings. */
int validate_object(const json_t *obj, const struct field_spec *specs, size_t n, struct verr *err);

/* Event names array -> bit set (non-empty; duplicates collapse). */
int validate_events(const json_t *arr, const char *field, unsigned *out, struct verr *err);
/* An endpoint URL per 4.1 and the literal-address policy of 7.5. */
int validate_endpoint(const char *url, const char *field, const struct cidr *allow, size_t nallow,
                      struct verr *err);

/* An authToken to send as "Authorization: Bearer <token>": visible ASCII only. */
int validate_auth_token(const char *tok, const char *field, struct verr *err);

struct sub_request {
	const char *lab_id;
	unsigned events;
	const char *endpoint;
	const char *corporate_user; /* NULL when absent */
	const char *organization;   /* NULL when absent */
	const char *auth_token;     /* NULL when absent */
};

/* The body of POST /client/events/subscribe, checked for everything that needs no store. */
int validate_subscribe(const json_t *obj, const struct cidr *allow, size_t nallow,
                       struct sub_request *out, struct verr *err);

#endif
