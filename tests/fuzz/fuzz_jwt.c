/* fuzz_jwt.c: libFuzzer target for the bearer-token path of auth_verify_bearer up to the
 * store lookup: the Authorization value, the JWT header rule (exactly HS256), the
 * signature and the claims.
 *
 * First byte even: the rest is the Authorization value as sent. First byte odd: the rest is
 * "header.payload" (or any text), which the target signs with the key, so the fuzzer gets
 * past the signature into the header and claim checks. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char key[32] = "labhook-fuzz-key-0123456789abcd";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_claims c;
	char *hdr = NULL;

	if (size < 1 || size > 2 * AUTH_TOKEN_CAP)
		return 0;
	size_t n = size - 1;
	hdr = malloc(n + 128);
	if (!hdr)
		return 0;
	if (data[0] & 1) {
		unsigned char mac[32];
		unsigned int maclen = 0;
		size_t k = (size_t)snprintf(hdr, n + 128, "Bearer ");
		memcpy(hdr + k, data + 1, n);
		HMAC(EVP_sha256(), key, sizeof key, data + 1, n, mac, &maclen);
		hdr[k + n] = '.';
		size_t s = util_b64url_encode(mac, maclen, hdr + k + n + 1, 128 - k - 1);
		assert(s > 0);
	} else {
		memcpy(hdr, data + 1, n);
		hdr[n] = '\0';
	}
	const char *tok = auth_bearer_token(hdr);
	if (tok) {
		size_t len = strlen(tok);
		assert(len > 0 && len < AUTH_TOKEN_CAP);
		memset(&c, 0, sizeof c);
		if (auth_token_check(key, sizeof key, tok, &c)) {
			/* Only a token of three parts can carry a checked signature. */
			const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
			assert(d1 && d2 && !strchr(d2 + 1, '.'));
			assert(strlen(c.sub) < sizeof c.sub);
		}
	}
	free(hdr);
	return 0;
}
