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
#include "store.h"

struct verr {
	enum lh_err err;
	char code[48];
	char field[128]; /* room for "unmapped_packages_with_tests[499]." and a nested field */
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

/* ---- bills, leads and bookings (API.md 5) ----
 * Everything about their bodies that needs no store: the field tables (for api_body), then
 * the checks a handler runs on a body that passed its table. What needs the store (the lab,
 * the parties, the account of the lab route) the handler checks after these, in that order. */

struct field_table {
	const struct field_spec *spec;
	size_t n;
};
extern const struct field_table validate_bill_table;     /* POST /client/billing/create */
extern const struct field_table validate_lab_bill_table; /* POST /lab/bills: plus clientID */
extern const struct field_table validate_lead_table;     /* POST /client/crm/lead/create */
extern const struct field_table validate_lab_lead_table; /* POST /lab/leads: plus clientID */
extern const struct field_table validate_booking_table;  /* POST /lab/leads/{id}/convert */

/* The party fields of a bill or lead body, in the order the handler resolves them; off is
 * where the resolved id goes in struct parties. */
#define VALIDATE_PARTY_SLOTS 3
struct party_slot {
	const char *field;
	enum party_kind kind;
	size_t off;
};
extern const struct party_slot validate_party_slots[VALIDATE_PARTY_SLOTS];
/* The ids named, by slot of validate_party_slots; NULL where absent or empty. */
struct party_refs {
	const char *id[VALIDATE_PARTY_SLOTS];
};

/* What a report of a bill was made from: a catalog id (mapped_tests, mapped_packages) that
 * the lab's catalog may name, or free text. */
struct bill_ref {
	int kind;          /* enum catalog_kind, or -1 for free text */
	char id[NAME_CAP]; /* the id as sent */
	char field[64];    /* where it was sent: "mapped_tests[2].flabs_id" */
};

struct bill_request {
	const json_t *patient; /* patient_details, checked */
	const char *lab_id, *integrator_id;
	const char *lead_source, *bar_code; /* "" when absent */
	struct report *reports;             /* name, package and seq set; owned, free() */
	struct bill_ref *refs;              /* one per report; owned, free() */
	size_t n_reports;                   /* 1..DOMAIN_MAX_REPORTS */
	struct party_refs parties;
};

/* A bill body that passed validate_bill_table or validate_lab_bill_table: the patient
 * details and the five test and package lists (turned into reports). On failure nothing is
 * owned; err->err is LH_ENOMEM when memory ran out, LH_EINVAL otherwise. */
int validate_bill(const json_t *obj, struct bill_request *out, struct verr *err);

struct booking_request {
	const char *type;
	int64_t scheduled_at; /* unix seconds, 0..9999-12-31T23:59:59Z */
};

/* bookingType and scheduledAt of a booking (a lead created with phase booking, a convert). */
int validate_booking(const json_t *obj, struct booking_request *out, struct verr *err);

struct lead_request {
	const char *branch_id, *integrator_id, *contact; /* contact: 10 digits */
	const char *email;                               /* checked; "" when absent */
	int booking;                                     /* phase is "booking": bk is set */
	struct booking_request bk;
	struct party_refs parties;
};

/* A lead body that passed validate_lead_table. */
int validate_lead(const json_t *obj, struct lead_request *out, struct verr *err);

/* ---- a lab's catalog (API.md 9) ---- */

/* A price as Flabs shows one: a JSON number, 0 to 1,000,000,000, with at most two decimals;
 * into minor units (1/100). */
int validate_price(const json_t *v, const char *field, int64_t *minor, struct verr *err);
/* A catalog item id: 1 to ID_CAP-1 letters, digits, '_' or '-' (it goes into paths). */
int validate_catalog_id(const char *id, const char *field, struct verr *err);

/* Catalog items and package members checked from a body (owned arrays, free()). */
struct catalog_request {
	struct catalog_item *items;
	size_t n;
	struct catalog_member *members;
	size_t nmembers;
};
#define CATALOG_IMPORT_MAX 5000 /* items one request may put */
/* One item: obj is {name, price} (and tests, for a package) with id from the path, or with
 * id NULL {id, name, price(, tests)}; path ("" or "tests[3]") prefixes the fields named in
 * errors. Appends to out (which starts zeroed). */
int validate_catalog_item(const json_t *obj, enum catalog_kind kind, const char *id,
                          const char *path, struct catalog_request *out, struct verr *err);
/* The import body {tests?: [...], packages?: [...]}: at most CATALOG_IMPORT_MAX items, no
 * id twice in a list. On failure out is freed. */
int validate_catalog_import(const json_t *obj, struct catalog_request *out, struct verr *err);
void validate_catalog_free(struct catalog_request *r);

#endif
