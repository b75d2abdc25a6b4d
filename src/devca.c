/* devca.c: see devca.h. EC P-256 keys and X.509 v3 certificates through libcrypto. The CA
 * may sign only certificates (keyCertSign, pathlen 0); the leaf is for TLS servers only
 * (serverAuth), named localhost, 127.0.0.1 and ::1.
 */
#define _POSIX_C_SOURCE 200809L
#include "devca.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"

#define DEVCA_DAYS 3650

/* Opens <dir>/<name> for writing, mode 0600 whatever the umask. NULL after a log line. */
static FILE *open_private(const char *dir, const char *name)
{
	char path[CFG_PATH_CAP + 32];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	/* An old file keeps its mode through O_CREAT: make it private whatever it was. */
	if (fd >= 0 && fchmod(fd, 0600) != 0) {
		close(fd);
		fd = -1;
	}
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		LOG(LOG_ERROR, "devca", "path=%s err=\"%s\" cannot write the development CA", path,
		    strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	return f;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	int ok = ex && X509_add_ext(cert, ex, -1);
	X509_EXTENSION_free(ex);
	return ok;
}

/* A certificate for key named cn, signed by issuer_key (itself when issuer is NULL).
 * Returns owned, free with X509_free; NULL on failure. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int is_ca)
{
	X509 *c = X509_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	int ok = c && RAND_bytes(serial, sizeof serial) == 1;
	serial[0] &= 0x7f; /* a positive serial */
	ok = ok && (bn = BN_bin2bn(serial, sizeof serial, NULL)) &&
	     BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)) && X509_set_version(c, 2) &&
	     X509_gmtime_adj(X509_getm_notBefore(c), -3600) &&
	     X509_gmtime_adj(X509_getm_notAfter(c), 86400L * DEVCA_DAYS) && X509_set_pubkey(c, key);
	X509_NAME *name = X509_get_subject_name(c);
	ok = ok &&
	     X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	                                (const unsigned char *)"labhook development", -1, -1, 0) &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
	                                0) &&
	     X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
	X509 *iss = issuer ? issuer : c;
	if (is_ca)
		ok = ok && add_ext(c, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
		     add_ext(c, iss, NID_key_usage, "critical,keyCertSign,cRLSign") &&
		     add_ext(c, iss, NID_subject_key_identifier, "hash");
	else
		ok = ok && add_ext(c, iss, NID_basic_constraints, "critical,CA:FALSE") &&
		     add_ext(c, iss, NID_key_usage, "critical,digitalSignature") &&
		     add_ext(c, iss, NID_ext_key_usage, "serverAuth") &&
		     add_ext(c, iss, NID_subject_alt_name,
		             "DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1") &&
		     add_ext(c, iss, NID_authority_key_identifier, "keyid");
	ok = ok && X509_sign(c, issuer_key, EVP_sha256()) > 0;
	BN_free(bn);
	if (!ok) {
		X509_free(c);
		return NULL;
	}
	return c;
}

static int write_pair(const char *dir, const char *cert_name, X509 *cert, const char *key_name,
                      EVP_PKEY *key)
{
	FILE *f = open_private(dir, key_name);
	int ok = f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
	if (f)
		ok = fclose(f) == 0 && ok;
	if (!ok)
		return 0;
	f = open_private(dir, cert_name);
	ok = f && PEM_write_X509(f, cert) == 1;
	if (f)
		ok = fclose(f) == 0 && ok;
	return ok;
}

static int exists(const char *dir, const char *name)
{
	char path[CFG_PATH_CAP + 32];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return access(path, R_OK) == 0;
}

enum lh_err devca_ensure(const char *data_dir)
{
	EVP_PKEY *ca_key = NULL, *leaf_key = NULL;
	X509 *ca = NULL, *leaf = NULL;
	enum lh_err e = LH_EIO;

	if (exists(data_dir, DEVCA_CERT) && exists(data_dir, DEVCA_KEY) &&
	    exists(data_dir, DEVCA_LEAF) && exists(data_dir, DEVCA_LEAFK))
		return LH_OK;
	if (!(ca_key = EVP_EC_gen("P-256")) || !(leaf_key = EVP_EC_gen("P-256")) ||
	    !(ca = make_cert(ca_key, "labhook development CA", NULL, ca_key, 1)) ||
	    !(leaf = make_cert(leaf_key, "localhost", ca, ca_key, 0))) {
		LOG(LOG_ERROR, "devca", "cannot make the development CA");
		goto out;
	}
	/* The leaf first: a CA file alone (from an interrupted start) is made again whole. */
	if (!write_pair(data_dir, DEVCA_LEAF, leaf, DEVCA_LEAFK, leaf_key) ||
	    !write_pair(data_dir, DEVCA_CERT, ca, DEVCA_KEY, ca_key))
		goto out;
	LOG(LOG_INFO, "devca", "path=%s/%s made a development CA for labhook listen (--demo only)",
	    data_dir, DEVCA_CERT);
	e = LH_OK;
out:
	X509_free(leaf);
	X509_free(ca);
	EVP_PKEY_free(leaf_key);
	EVP_PKEY_free(ca_key);
	return e;
}
