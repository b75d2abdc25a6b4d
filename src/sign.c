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
static pthread_key_t hmac_key;
static int hmac_key_ok;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_ctx_free(void *ctx)
{
	EVP_MAC_CTX_free(ctx);
}

static void hmac_fetch(void)
{
	/* Fetching an algorithm is a costly lookup: once per process, not per signature. */
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
	hmac_key_ok = pthread_key_create(&hmac_key, hmac_ctx_free) == 0;
}

/* The calling thread's HMAC-SHA256 context, made once: making one per signature (and
 * setting its digest by name, a provider lookup) was most of a signature's cost, 9% of
 * the dispatcher's time. Freed when the thread ends. NULL out of memory. */
static EVP_MAC_CTX *hmac_ctx(void)
{
	pthread_once(&hmac_once, hmac_fetch);
	if (!hmac_alg || !hmac_key_ok)
		return NULL;
	EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
	if (ctx)
		return ctx;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	ctx = EVP_MAC_CTX_new(hmac_alg);
	if (ctx &&
	    (EVP_MAC_CTX_set_params(ctx, params) != 1 || pthread_setspecific(hmac_key, ctx) != 0)) {
		EVP_MAC_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

static int hmac_sha256(const unsigned char *key, size_t klen, const void *const *part,
                       const size_t *len, size_t n, unsigned char mac[32])
{
	unsigned char full[EVP_MAX_MD_SIZE];
	size_t maclen = 0;
	EVP_MAC_CTX *ctx = hmac_ctx();
	/* A new key each time (a different secret, or the same one: both cost two blocks). */
	int ok = ctx && EVP_MAC_init(ctx, key, klen, NULL) == 1;
	for (size_t i = 0; ok && i < n; i++)
		ok = EVP_MAC_update(ctx, part[i], len[i]) == 1;
	ok = ok && EVP_MAC_final(ctx, full, &maclen, sizeof full) == 1 && maclen == 32;
	if (ok)
		memcpy(mac, full, 32);
	OPENSSL_cleanse(full, sizeof full);
	return ok ? 0 : -1;
}

int sig_sign_v1(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                size_t body_len, char out[SIG_CAP])
{
	unsigned char key[64], mac[32];
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
	const void *part[] = {head, body};
	size_t len[] = {(size_t)hlen, body_len};
	if (hmac_sha256(key, (size_t)klen, part, len, 2, mac) == 0) {
		memcpy(out, "v1,", 3);
		if (util_b64_encode(mac, sizeof mac, out + 3, SIG_CAP - 3) > 0)
			rc = 0;
	}
out:
	OPENSSL_cleanse(key, sizeof key);
	return rc;
}

int sig_report_link(const unsigned char key[32], const char *bill_id, const char *report_id,
                    int64_t expires, char out[SIG_LINK_HEX])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[32];
	char msg[256];
	int n = snprintf(msg, sizeof msg, "report-link/v1/%s/%s/%lld", bill_id, report_id,
	                 (long long)expires);
	if (n < 0 || (size_t)n >= sizeof msg)
		return -1;
	const void *part[] = {msg};
	size_t len[] = {(size_t)n};
	if (hmac_sha256(key, 32, part, len, 1, mac) != 0)
		return -1;
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[64] = '\0';
	return 0;
}
