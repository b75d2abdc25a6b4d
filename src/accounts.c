/* accounts.c: see accounts.h. */
#include "accounts.h"

#include <string.h>

int accounts_mode_from_name(const char *s)
{
	if (strcmp(s, "catch-all") == 0)
		return MODE_CATCH_ALL;
	if (strcmp(s, "party-scoped") == 0)
		return MODE_PARTY_SCOPED;
	return -1;
}

const char *accounts_mode_name(enum account_mode m)
{
	return m == MODE_PARTY_SCOPED ? "party-scoped" : "catch-all";
}

int accounts_kind_from_name(const char *s)
{
	if (strcmp(s, "corporateUser") == 0)
		return PARTY_CORPORATE_USER;
	if (strcmp(s, "organization") == 0)
		return PARTY_ORGANIZATION;
	return -1;
}

const char *accounts_kind_name(enum party_kind k)
{
	return k == PARTY_CORPORATE_USER ? "corporateUser"
	       : k == PARTY_ORGANIZATION ? "organization"
	                                 : "none";
}

enum lh_err accounts_create(struct store *st, const char *name, enum account_mode mode,
                            struct account *out, char secret[AUTH_SECRET_CAP])
{
	struct account a;
	char sec[AUTH_SECRET_CAP];
	enum lh_err e;

	memset(&a, 0, sizeof a);
	if (strlen(name) >= sizeof a.name)
		return LH_EINVAL;
	if ((e = util_new_id("cl_", a.client_id)) != LH_OK ||
	    (e = auth_new_client_secret(sec, a.secret_hash)) != LH_OK)
		return e;
	memcpy(a.name, name, strlen(name) + 1);
	a.mode = mode;
	a.secret_version = 1;
	a.created_at = util_now();
	if ((e = st->ops->account_insert(st, &a)) != LH_OK)
		return e;
	*out = a;
	memcpy(secret, sec, sizeof sec);
	return LH_OK;
}

enum lh_err accounts_add_lab(struct store *st, const char *client_id, const char *name,
                             struct lab *out)
{
	struct lab l;
	struct account a;
	enum lh_err e;

	memset(&l, 0, sizeof l);
	if (strlen(name) >= sizeof l.name)
		return LH_EINVAL;
	if ((e = st->ops->account_get(st, client_id, &a)) != LH_OK)
		return e;
	if ((e = util_new_id("lab_", l.lab_id)) != LH_OK)
		return e;
	memcpy(l.client_id, a.client_id, sizeof l.client_id);
	memcpy(l.name, name, strlen(name) + 1);
	l.created_at = util_now();
	if ((e = st->ops->lab_insert(st, &l)) != LH_OK)
		return e;
	*out = l;
	return LH_OK;
}

enum lh_err accounts_add_party(struct store *st, const char *client_id, enum party_kind kind,
                               const char *name, struct party *out)
{
	struct party p;
	struct account a;
	enum lh_err e;

	memset(&p, 0, sizeof p);
	if (strlen(name) >= sizeof p.name || kind == PARTY_NONE)
		return LH_EINVAL;
	if ((e = st->ops->account_get(st, client_id, &a)) != LH_OK)
		return e;
	if ((e = util_new_id(kind == PARTY_CORPORATE_USER ? "cu_" : "org_", p.party_id)) != LH_OK)
		return e;
	memcpy(p.client_id, a.client_id, sizeof p.client_id);
	p.kind = kind;
	memcpy(p.name, name, strlen(name) + 1);
	p.created_at = util_now();
	if ((e = st->ops->party_insert(st, &p)) != LH_OK)
		return e;
	*out = p;
	return LH_OK;
}
