/* accounts.h: the domain rules for creating accounts, labs and parties, shared by the admin
 * API and the demo seeding of `labhook serve --demo`. Thread-safe (the store serialises).
 */
#ifndef LH_ACCOUNTS_H
#define LH_ACCOUNTS_H

#include "auth.h"
#include "store.h"

/* "catch-all" / "party-scoped" and back; -1 if unknown. */
int accounts_mode_from_name(const char *s);
const char *accounts_mode_name(enum account_mode m);
int accounts_kind_from_name(const char *s);
const char *accounts_kind_name(enum party_kind k);

/* Creates an account with a fresh secret; *out and secret (shown once) on LH_OK. */
enum lh_err accounts_create(struct store *st, const char *name, enum account_mode mode,
                            struct account *out, char secret[AUTH_SECRET_CAP]);
enum lh_err accounts_add_lab(struct store *st, const char *client_id, const char *name,
                             struct lab *out);
enum lh_err accounts_add_party(struct store *st, const char *client_id, enum party_kind kind,
                               const char *name, struct party *out);

#endif
