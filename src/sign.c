/* sign.c: see sign.h. */
#include "sign.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "util.h"

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
	/* Fetching an algorithm is a costly lookup: once per process, not per signature. */
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

int sig_sign_v1(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                size_t body_len, char out[SIG_CAP])
{
	unsigned char key[64], mac[EVP_MAX_MD_SIZE];
	char head[128];
	long klen;
	int rc = -1;

	if (strncmp(secret, "whsec_", 6) != 0)
		return -1;
	klen = util_b64_decode(secret + 6, strlen(secret + 6), key, sizeof key);
	if (klen <= 0)
		return -1;
	int hlen = snprintf(head, sizeof head, "%s.%lld.", msg_id, (long long)timestamp);
	if (hlen < 0 || (size_t)hlen >= sizeof head)
		goto out;
	pthread_once(&hmac_once, hmac_fetch);
	EVP_MAC_CTX *ctx = hmac_alg ? EVP_MAC_CTX_new(hmac_alg) : NULL;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	size_t maclen = 0;
	if (ctx && EVP_MAC_init(ctx, key, (size_t)klen, params) == 1 &&
	    EVP_MAC_update(ctx, (const unsigned char *)head, (size_t)hlen) == 1 &&
	    EVP_MAC_update(ctx, (const unsigned char *)body, body_len) == 1 &&
	    EVP_MAC_final(ctx, mac, &maclen, sizeof mac) == 1) {
		memcpy(out, "v1,", 3);
		if (util_b64_encode(mac, maclen, out + 3, SIG_CAP - 3) > 0)
			rc = 0;
	}
	EVP_MAC_CTX_free(ctx);
out:
	OPENSSL_cleanse(key, sizeof key);
	return rc;
}
