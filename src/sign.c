/* sign.c: see sign.h. */
#include "sign.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A thread's HMAC-SHA256 context and the key it holds. */
struct hmac_state {
	EVP_MAC_CTX *ctx;
	size_t klen; /* 0: no key yet */
	unsigned char key[64];
};

static void hmac_state_free(void *p)
{
	struct hmac_state *h = p;
	EVP_MAC_CTX_free(h->ctx);
	OPENSSL_cleanse(h->key, sizeof h->key);
	free(h);
}

static void hmac_fetch(void)
{
	/* Fetching an algorithm is a costly lookup: once per process, not per signature. */
	hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
	hmac_key_ok = pthread_key_create(&hmac_key, hmac_state_free) == 0;
}

/* The calling thread's HMAC-SHA256 context, made once: making one per signature (and
 * setting its digest by name, a provider lookup) was most of a signature's cost, 9% of
 * the dispatcher's time. Freed when the thread ends. NULL out of memory. */
static struct hmac_state *hmac_state(void)
{
	pthread_once(&hmac_once, hmac_fetch);
	if (!hmac_alg || !hmac_key_ok)
		return NULL;
	struct hmac_state *h = pthread_getspecific(hmac_key);
	if (h)
		return h;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	if (!(h = calloc(1, sizeof *h)))
		return NULL;
	h->ctx = EVP_MAC_CTX_new(hmac_alg);
	if (!h->ctx || EVP_MAC_CTX_set_params(h->ctx, params) != 1 ||
	    pthread_setspecific(hmac_key, h) != 0) {
		hmac_state_free(h);
		return NULL;
	}
	return h;
}

static int hmac_sha256(const unsigned char *key, size_t klen, const void *const *part,
                       const size_t *len, size_t n, unsigned char mac[32])
{
	unsigned char full[EVP_MAX_MD_SIZE];
	size_t maclen = 0;
	struct hmac_state *h = hmac_state();
	int ok = h != NULL && klen <= sizeof h->key;
	if (ok) {
		/* The key it holds again (one subscription's webhooks, one after the other):
		 * started over without deriving it anew. */
		int same = klen == h->klen && CRYPTO_memcmp(key, h->key, klen) == 0;
		ok = EVP_MAC_init(h->ctx, same ? NULL : key, same ? 0 : klen, NULL) == 1;
		if (ok && !same)
			memcpy(h->key, key, klen);
		h->klen = ok ? klen : 0;
	}
	for (size_t i = 0; ok && i < n; i++)
		ok = EVP_MAC_update(h->ctx, part[i], len[i]) == 1;
	ok = ok && EVP_MAC_final(h->ctx, full, &maclen, sizeof full) == 1 && maclen == 32;
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
