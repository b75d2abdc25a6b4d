/* auth.h: client credentials, access tokens (JWT HS256, algorithm pinned), refresh tokens
 * with rotation and reuse detection, and the failed-login limiter (API.md 2).
 *
 * The signing key lives in the store (so every node shares it); client secrets and refresh
 * tokens are stored only as SHA-256 hashes of 256-bit random values and compared in constant
 * time. The limiter is in memory, per node. All functions are thread-safe.
 */
#ifndef LH_AUTH_H
#define LH_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

#define AUTH_ACCESS_TTL 600 /* seconds; Flabs: 10 minutes */
#define AUTH_TOKEN_CAP  1024
#define AUTH_SECRET_CAP 64

struct auth;

/* Returns owned, free with auth_free. */
enum lh_err auth_new(struct store *st, const struct config *cfg, struct auth **out);
void auth_free(struct auth *a);

/* New random client secret ("cs_...") and its hash. */
enum lh_err auth_new_client_secret(char out[AUTH_SECRET_CAP], unsigned char hash[32]);
void auth_hash_secret(const char *secret, unsigned char out[32]);

/* Checks clientID + secret in constant time. LH_EUNAUTH for any mismatch; *acct on LH_OK. */
enum lh_err auth_check_client(struct auth *a, const char *client_id, const char *secret,
                              struct account *acct);
/* Issues an access token and a refresh token of a new family for acct. */
enum lh_err auth_issue(struct auth *a, const struct account *acct, char access[AUTH_TOKEN_CAP],
                       char refresh[AUTH_SECRET_CAP]);
/* Rotates a refresh token into a new pair. LH_EUNAUTH when unknown, expired, revoked or
 * replayed (a replay revokes the family); *why gets a short reason for the log. */
enum lh_err auth_refresh(struct auth *a, const char *client_id, const char *refresh_token,
                         char access[AUTH_TOKEN_CAP], char refresh_out[AUTH_SECRET_CAP],
                         const char **why);
/* What a checked access token says. */
struct auth_claims {
	char sub[ID_CAP];
	long exp, ver;
};

/* The token in an Authorization value "Bearer <jwt>" (scheme case-insensitive), borrowed
 * from header; NULL unless it is 1..AUTH_TOKEN_CAP-1 characters of base64url and dots. */
const char *auth_bearer_token(const char *header);
/* Checks a JWT against a key of keylen bytes: the header must be exactly HS256, then the
 * signature and the issuer; fills *out (expiry and account are the caller's to check).
 * Pure and thread-safe: it touches no store. 1 if it passes, 0 otherwise. */
int auth_token_check(const unsigned char *key, size_t keylen, const char *tok,
                     struct auth_claims *out);
/* Verifies "Bearer <jwt>" and loads its account; LH_EUNAUTH on anything wrong. */
enum lh_err auth_verify_bearer(struct auth *a, const char *header, struct account *acct);

/* Failed-login limiter: throttles the guesser, never the client guessed at (its id is no
 * secret). auth_limited returns seconds to wait (> 0) when this address has max-failures
 * failures against client_id in the window, or 10 x max-failures against all ids (an
 * address trying many ids); else 0. A failure from another address never holds this one
 * back. A NULL client_id checks the address only. auth_note_failure counts a failure
 * (against the address, and client_id unless NULL; 10 x max-failures against one id from
 * all addresses is logged); auth_note_success clears the address's failures against
 * client_id. The table is fixed in size and keyed with a random basis; entries holding
 * someone back are the last to be reused. Behind a reverse proxy, set trusted-proxy, or
 * every client has the proxy's address. */
int auth_limited(struct auth *a, const char *client_id, const char *ip);
void auth_note_failure(struct auth *a, const char *client_id, const char *ip);
void auth_note_success(struct auth *a, const char *client_id, const char *ip);

#endif
