/* demo.c: see demo.h. */
#define _POSIX_C_SOURCE 200809L
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "accounts.h"
#include "addr.h"
#include "devca.h"
#include "log.h"
#include "util.h"

/* The demo labs' catalog: the ids the examples in docs/api.md use (flabs_id 101), and a
 * package of two tests. Put again at every start (a put replaces). party_id "" or a party
 * that gets a rate for CBC. */
static enum lh_err demo_catalog(struct store *st, const char *lab_id, const char *party_id)
{
	static const struct {
		enum catalog_kind kind;
		const char *id, *name;
		int64_t price;
	} rows[] = {
	    {CATALOG_TEST, "101", "CBC", 35000},
	    {CATALOG_TEST, "102", "LDL Cholesterol", 25000},
	    {CATALOG_TEST, "103", "HDL Cholesterol", 25000},
	    {CATALOG_TEST, "104", "Thyroid Profile (T3, T4, TSH)", 59950},
	    {CATALOG_PACKAGE, "201", "Lipid Profile", 45000},
	};
	struct catalog_item items[COUNTOF(rows)];
	struct catalog_member members[2];
	memset(items, 0, sizeof items);
	memset(members, 0, sizeof members);
	for (size_t i = 0; i < COUNTOF(rows); i++) {
		snprintf(items[i].lab_id, sizeof items[i].lab_id, "%s", lab_id);
		items[i].kind = rows[i].kind;
		snprintf(items[i].id, sizeof items[i].id, "%s", rows[i].id);
		snprintf(items[i].name, sizeof items[i].name, "%s", rows[i].name);
		items[i].price = rows[i].price;
		items[i].updated_at = util_now();
	}
	for (size_t i = 0; i < COUNTOF(members); i++) {
		snprintf(members[i].package_id, sizeof members[i].package_id, "201");
		snprintf(members[i].test_id, sizeof members[i].test_id, "%s", i ? "103" : "102");
	}
	enum lh_err e = st->ops->catalog_put(st, lab_id, items, COUNTOF(items), members,
	                                     COUNTOF(members), NULL);
	if (e == LH_OK && party_id[0])
		e = st->ops->catalog_rate_set(st, lab_id, CATALOG_TEST, "101", party_id, 30000);
	return e;
}

/* The secret demo.json keeps for client_id, into out; 0 if it has one. */
static int saved_secret(json_t *saved, const char *client_id, char out[AUTH_SECRET_CAP])
{
	size_t i;
	json_t *acct;
	json_array_foreach(json_object_get(saved, "accounts"), i, acct)
	{
		const char *id = json_string_value(json_object_get(acct, "clientID"));
		const char *sec = json_string_value(json_object_get(acct, "clientSecret"));
		if (id && sec && !strcmp(id, client_id) && strlen(sec) < AUTH_SECRET_CAP) {
			snprintf(out, AUTH_SECRET_CAP, "%s", sec);
			return 0;
		}
	}
	return -1;
}

/* demo.json, written through a temporary file and a rename (0600: it holds secrets). */
static enum lh_err state_write(const char *data_dir, json_t *state)
{
	char path[CFG_PATH_CAP + 32], tmp[CFG_PATH_CAP + 40];
	snprintf(path, sizeof path, "%s/" DEMO_FILE, data_dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	char *text = json_dumps(state, JSON_INDENT(2));
	int fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
	size_t len = text ? strlen(text) : 0;
	/* An old file keeps its mode through O_CREAT: make it private whatever it was. */
	int ok = fd >= 0 && fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len &&
	         write(fd, "\n", 1) == 1;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (text) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	if (!ok) {
		LOG(LOG_ERROR, "demo", "path=%s err=\"%s\" cannot write the demo accounts", path,
		    strerror(errno));
		unlink(tmp);
		return LH_EIO;
	}
	return LH_OK;
}

static json_t *state_load(const char *data_dir)
{
	char path[CFG_PATH_CAP + 32];
	snprintf(path, sizeof path, "%s/" DEMO_FILE, data_dir);
	return json_load_file(path, 0, NULL);
}

enum lh_err demo_trust(struct config *cfg)
{
	static const char *const loopback[] = {"127.0.0.0/8", "::1/128"};
	enum lh_err e = devca_ensure(cfg->data_dir);
	if (e != LH_OK)
		return e;
	if (!cfg->ca_file[0]) {
		int n =
		    snprintf(cfg->ca_file, sizeof cfg->ca_file, "%s/" DEVCA_CERT, cfg->data_dir);
		if (n < 0 || (size_t)n >= sizeof cfg->ca_file)
			return LH_EINVAL;
	} else
		LOG(LOG_WARN, "demo",
		    "ca-file=%s labhook listen needs %s/" DEVCA_CERT
		    " among the trusted CAs (ca-file replaces it)",
		    cfg->ca_file, cfg->data_dir);
	for (size_t i = 0; i < COUNTOF(loopback) && cfg->n_allow_net < CFG_MAX_CIDR; i++)
		if (addr_parse_cidr(loopback[i], &cfg->allow_net[cfg->n_allow_net]) == 0)
			cfg->n_allow_net++;
	LOG(LOG_INFO, "demo",
	    "ca-file=%s allow-net=127.0.0.0/8,::1 demo mode: loopback endpoints"
	    " and the development CA are trusted",
	    cfg->ca_file);
	return LH_OK;
}

/* Finds account k of the demo by name, or creates it with its lab (and party). *secret
 * gets its working secret: the one demo.json keeps when it still matches, else a new one. */
static enum lh_err demo_account(struct store *st, json_t *saved, const char *name, int k,
                                struct account *a, struct lab *lab, struct party *party,
                                char secret[AUTH_SECRET_CAP])
{
	struct account *list = NULL;
	size_t n = 0;
	int have = 0;
	enum lh_err e = st->ops->account_list(st, "", 500, &list, &n);
	if (e != LH_OK)
		return e;
	for (size_t i = 0; i < n && !have; i++)
		if (strcmp(list[i].name, name) == 0) {
			*a = list[i];
			have = 1;
		}
	free(list);
	if (!have) {
		enum account_mode m = k ? MODE_PARTY_SCOPED : MODE_CATCH_ALL;
		if ((e = accounts_create(st, name, m, a, secret)) != LH_OK ||
		    (e = accounts_add_lab(st, a->client_id, k ? "Demo Lab North" : "Demo Lab",
		                          lab)) != LH_OK)
			return e;
		return k ? accounts_add_party(st, a->client_id, PARTY_CORPORATE_USER, "Acme Corp",
		                              party)
		         : LH_OK;
	}
	unsigned char h[32];
	struct lab *ls = NULL;
	struct party *ps = NULL;
	size_t nl = 0, np = 0;
	int kept = 0;
	if (saved_secret(saved, a->client_id, secret) == 0) {
		auth_hash_secret(secret, h);
		kept = util_ct_equal(h, a->secret_hash, 32);
	}
	/* Only a secret that no longer works is replaced: a new one would also end the tokens
	 * the integrator holds (a rotation revokes them). */
	if (!kept && ((e = auth_new_client_secret(secret, h)) != LH_OK ||
	              (e = st->ops->account_set_secret(st, a->client_id, h, a)) != LH_OK))
		return e;
	if ((e = st->ops->lab_list(st, a->client_id, &ls, &nl)) != LH_OK)
		return e;
	if (nl == 0 ||
	    (k && ((e = st->ops->party_list(st, a->client_id, &ps, &np)) != LH_OK || np == 0))) {
		free(ls);
		free(ps);
		return e == LH_OK ? LH_ESTORE : e;
	}
	*lab = ls[0];
	if (k)
		*party = ps[0];
	free(ls);
	free(ps);
	return LH_OK;
}

enum lh_err demo_seed(struct app *app, int port)
{
	struct store *st = app->store;
	struct account a[2];
	struct lab lab[2];
	struct party party;
	char secret[2][AUTH_SECRET_CAP], url[700];
	const char *names[2] = {"Demo Clinic (catch-all)", "Demo Corporate (party-scoped)"};
	json_t *saved = state_load(app->cfg.data_dir), *state = NULL;
	enum lh_err e = LH_OK;

	memset(secret, 0, sizeof secret);
	for (int k = 0; k < 2 && e == LH_OK; k++)
		e = demo_account(st, saved, names[k], k, &a[k], &lab[k], &party, secret[k]);
	if (e == LH_OK)
		e = demo_catalog(st, lab[0].lab_id, "");
	if (e == LH_OK)
		e = demo_catalog(st, lab[1].lab_id, party.party_id);
	if (e != LH_OK)
		goto out;
	const char *host =
	    strcmp(app->cfg.listen_host, "0.0.0.0") == 0 ? "127.0.0.1" : app->cfg.listen_host;
	snprintf(url, sizeof url, "http://%s%s%s:%d", strchr(host, ':') ? "[" : "", host,
	         strchr(host, ':') ? "]" : "", port);
	state = json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s, s:s}]}", "url", url,
	                  "accounts", "clientID", a[0].client_id, "clientSecret", secret[0],
	                  "labID", lab[0].lab_id, "clientID", a[1].client_id, "clientSecret",
	                  secret[1], "labID", lab[1].lab_id, "corporateUser", party.party_id);
	if (!state) {
		e = LH_ENOMEM;
		goto out;
	}
	if ((e = state_write(app->cfg.data_dir, state)) != LH_OK)
		goto out;
	printf("\n=== labhook demo ===\n"
	       "Catch-all account:    clientID=%s\n"
	       "                      clientSecret=%s\n"
	       "                      labID=%s\n"
	       "Party-scoped account: clientID=%s\n"
	       "                      clientSecret=%s\n"
	       "                      labID=%s  corporateUser=%s\n\n"
	       "Watch signed webhooks arrive (in another terminal, same --data-dir):\n"
	       "  labhook listen\n"
	       "Make the demo lab emit events:\n"
	       "  labhook trigger bill.completed\n"
	       "Get a token:\n"
	       "  TOKEN=$(curl -s %s/client/auth/token -H 'Content-Type: application/json' \\\n"
	       "    -d '{\"clientID\":\"%s\",\"clientSecret\":\"%s\"}' \\\n"
	       "    | jq -er '.authToken // error(\"login failed: \" + .error.message)')\n"
	       "List labs:\n"
	       "  curl -s %s/client/labs -H \"Authorization: Bearer $TOKEN\"\n"
	       "The labs' test catalog (tests 101-104, package 201):\n"
	       "  curl -s '%s/client/crm/tests?branchID=%s' -H \"Authorization: Bearer $TOKEN\"\n"
	       "Admin key: %s/admin.key\n"
	       "Web console (sign in with a clientID and clientSecret, or the admin key):\n"
	       "  %s/console\n"
	       "(the demo accounts and secrets are kept in %s/" DEMO_FILE
	       " and stay the same at every start)\n\n",
	       a[0].client_id, secret[0], lab[0].lab_id, a[1].client_id, secret[1], lab[1].lab_id,
	       party.party_id, url, a[0].client_id, secret[0], url, url, lab[0].lab_id,
	       app->cfg.data_dir, url, app->cfg.data_dir);
	fflush(stdout);
out:
	json_decref(saved);
	json_decref(state);
	OPENSSL_cleanse(secret, sizeof secret);
	return e;
}

int demo_state_read(const char *data_dir, struct demo_state *out)
{
	json_t *j = state_load(data_dir);
	json_t *acct = json_array_get(json_object_get(j, "accounts"), 0);
	const char *url = json_string_value(json_object_get(j, "url"));
	const char *id = json_string_value(json_object_get(acct, "clientID"));
	const char *sec = json_string_value(json_object_get(acct, "clientSecret"));
	const char *lab = json_string_value(json_object_get(acct, "labID"));
	int ok = url && id && sec && lab && strlen(url) < sizeof out->url && strlen(id) < ID_CAP &&
	         strlen(sec) < AUTH_SECRET_CAP && strlen(lab) < ID_CAP;
	if (ok) {
		snprintf(out->url, sizeof out->url, "%s", url);
		snprintf(out->client_id, sizeof out->client_id, "%s", id);
		snprintf(out->client_secret, sizeof out->client_secret, "%s", sec);
		snprintf(out->lab_id, sizeof out->lab_id, "%s", lab);
	}
	json_decref(j); /* (jansson does not cleanse: the file is 0600 and on disk anyway) */
	return ok ? 0 : -1;
}

void demo_state_clear(struct demo_state *st)
{
	OPENSSL_cleanse(st, sizeof *st);
}
