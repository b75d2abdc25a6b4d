/* sign.h: Standard Webhooks signatures (webhook-signature: "v1,<base64 HMAC-SHA256>").
 * The signed content is "<webhook-id>.<webhook-timestamp>.<body>" and the key is the
 * base64-decoded part of a "whsec_" secret. Also the signatures of report links
 * (reportURL). Pure functions; thread-safe.
 */
#ifndef LH_SIGN_H
#define LH_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define SIG_CAP 64 /* "v1," + 44 base64 characters + NUL, with room */

/* Writes "v1,<signature>" into out. Returns 0, or -1 if the secret is not a whsec_ key. */
int sig_sign_v1(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                size_t body_len, char out[SIG_CAP]);

/* The signature of a report link (the reportURL): hex HMAC-SHA256 with the service's link
 * key over "report-link/v1/<bill>/<report>/<expires>", so neither id nor the expiry can be
 * changed without the key. Writes 64 hex digits and a NUL; 0, or -1 on failure. */
#define SIG_LINK_HEX 65
int sig_report_link(const unsigned char key[32], const char *bill_id, const char *report_id,
                    int64_t expires, char out[SIG_LINK_HEX]);

#endif
