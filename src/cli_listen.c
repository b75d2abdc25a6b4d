/* cli_listen.c: see cli_listen.h. Its endpoint's path is LISTEN_PATH, which marks a
 * subscription as a listen's: one left behind by a listen that was killed (no chance to
 * delete it) holds the events, and the next listen removes it instead of failing on the
 * one-webhook-per-event rule. Subscriptions with any other endpoint are never touched.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/crypto.h>

#include "cli_client.h"
#include "demo.h"
#include "devca.h"
#include "sign.h"
#include "util.h"

#define LISTEN_PATH      "/labhook-listen"
#define LISTEN_BODY_CAP  (4 * 1024 * 1024) /* a webhook body is small; max-body is 1 MiB */
#define LISTEN_TOLERANCE 300               /* seconds, as Standard Webhooks advises */

static const char *const all_events =
    "bill.created,bill.completed,bill.deleted,report.completed,lead.created,booking.created";

struct listener {
	/* The subscription's signing secret. The server starts before the subscription exists
	 * (its port goes into the endpoint), and a delivery may come before the subscribe
	 * answer: the receiving thread waits for the secret under mu. */
	pthread_mutex_t mu;
	pthread_cond_t ready;
	char secret[128];
	const char *forward_to;
};

struct upload {
	char *p;
	size_t n;
	int too_big;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: labhook listen [--data-dir DIR] [--url URL] [--events a,b] [--lab LAB_ID]\n"
	        "                      [--forward-to http://localhost:3000/hooks] [--port N]\n"
	        "                      [--client-id ID --client-secret SECRET|-]\n"
	        "                      [--credentials FILE] [--cert PEM --key PEM]\n"
	        "Receives webhooks on this machine and prints each one (event type, id, entity,\n"
	        "the payload, and whether its signature verified). It registers a subscription\n"
	        "for --events (default: all six) on --lab (default: the account's first lab) with\n"
	        "an https://127.0.0.1:PORT" LISTEN_PATH " endpoint, and deletes it when stopped\n"
	        "(Ctrl-C or SIGTERM).\n"
	        "The account: --client-id/--client-secret (or LABHOOK_CLIENT_ID/SECRET), else\n"
	        "the demo's when `labhook serve --demo` runs with the same --data-dir, else the\n"
	        "login of `labhook client login`. The certificate: DIR/" DEVCA_LEAF
	        ", which serve --demo\nmakes and trusts (a service without --demo refuses"
	        " loopback endpoints).\n"
	        "--forward-to also POSTs each webhook, with its headers, to a local URL and\n"
	        "prints the answer's status; listen answers the service with that status.\n"
	        "Exit codes: 0 stopped, 1 the service refused, 2 usage, 3 cannot reach it,\n"
	        "4 needs a login.\n");
}

/* Does any "v1,<sig>" of header match the signature of id.ts.body with the secret? */
static int verified(const char *secret, const char *id, const char *ts, const char *header,
                    const char *body, size_t len)
{
	char want[SIG_CAP];
	char *end = NULL;
	long long t = ts ? strtoll(ts, &end, 10) : 0;
	if (!id || !ts || !header || !end || *end ||
	    sig_sign_v1(secret, id, (int64_t)t, body, len, want) != 0)
		return 0;
	size_t wl = strlen(want);
	for (const char *p = header; *p;) {
		size_t n = strcspn(p, " ");
		if (n == wl && util_ct_equal(p, want, wl))
			return 1;
		p += n;
		p += strspn(p, " ");
	}
	return 0;
}

/* The entity a payload is about: "bill bill_...", "report rep_... of bill bill_...". */
static void entity_of(json_t *data, char *out, size_t cap)
{
	const char *bill = json_string_value(json_object_get(data, "billID"));
	const char *rep = json_string_value(json_object_get(data, "reportID"));
	const char *lead = json_string_value(json_object_get(data, "leadID"));
	const char *bk = json_string_value(json_object_get(data, "bookingID"));
	const char *sub = json_string_value(json_object_get(data, "subscriptionID"));
	if (rep && bill)
		snprintf(out, cap, "report %s of bill %s", rep, bill);
	else if (bill)
		snprintf(out, cap, "bill %s", bill);
	else if (bk)
		snprintf(out, cap, "booking %s%s%s", bk, lead ? " of lead " : "", lead ? lead : "");
	else if (lead)
		snprintf(out, cap, "lead %s", lead);
	else if (sub)
		snprintf(out, cap, "subscription %s", sub);
	else
		snprintf(out, cap, "-");
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
	(void)kind;
	struct curl_slist **h = cls;
	char line[8192];
	/* Hop-by-hop and framing headers are curl's to write for the new request. */
	if (!strcasecmp(key, "Host") || !strcasecmp(key, "Content-Length") ||
	    !strcasecmp(key, "Connection") || !strcasecmp(key, "Transfer-Encoding") ||
	    !strcasecmp(key, "Expect"))
		return MHD_YES;
	snprintf(line, sizeof line, "%s: %s", key, value ? value : "");
	*h = curl_slist_append(*h, line);
	return MHD_YES;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

/* POSTs the webhook to --forward-to with its headers; the local answer's status, or 502
 * when it cannot be reached. */
static unsigned forward(struct MHD_Connection *conn, const char *url, const struct upload *u)
{
	struct curl_slist *h = NULL;
	long status = 502;
	MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, &h);
	h = curl_slist_append(h, "Expect:");
	CURL *c = curl_easy_init();
	if (!c) {
		curl_slist_free_all(h);
		return 502;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, u->p ? u->p : "");
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)u->n);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode cc = curl_easy_perform(c);
	if (cc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		printf("    forwarded to %s: %ld\n", url, status);
	} else {
		printf("    forwarded to %s: failed: %s\n", url, curl_easy_strerror(cc));
		status = 502;
	}
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	return status >= 100 && status <= 599 ? (unsigned)status : 502;
}

/* Prints one webhook; returns the status to answer with. */
static unsigned receive(struct listener *l, struct MHD_Connection *conn, const struct upload *u)
{
	const char *id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-id");
	const char *ts = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-timestamp");
	const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "webhook-signature");
	json_t *j = json_loadb(u->p ? u->p : "", u->n, 0, NULL);
	char entity[200], secret[sizeof l->secret];
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&l->mu);
	while (!l->secret[0] && pthread_cond_timedwait(&l->ready, &l->mu, &until) == 0)
		;
	memcpy(secret, l->secret, sizeof secret);
	pthread_mutex_unlock(&l->mu);
	int ok = secret[0] && verified(secret, id, ts, sig, u->p ? u->p : "", u->n);
	OPENSSL_cleanse(secret, sizeof secret);
	long long age = ts ? (long long)util_now() - strtoll(ts, NULL, 10) : 0;
	entity_of(json_object_get(j, "data"), entity, sizeof entity);
	const char *type = json_string_value(json_object_get(j, "eventType"));
	const char *evt = json_string_value(json_object_get(j, "eventID"));
	printf("--> %s %s %s  signature %s%s\n", type ? type : "(not a labhook event)",
	       evt ? evt : (id ? id : "-"), entity, ok ? "verified" : "INVALID",
	       ok && (age > LISTEN_TOLERANCE || age < -LISTEN_TOLERANCE)
	           ? " (but its timestamp is more than 5 minutes off)"
	           : "");
	char *pretty = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	printf("%s\n", pretty ? pretty : (u->p ? u->p : ""));
	free(pretty);
	json_decref(j);
	unsigned status = l->forward_to ? forward(conn, l->forward_to, u) : 200;
	fflush(stdout);
	return status;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
	(void)version;
	struct listener *l = cls;
	struct upload *u = *con_cls;
	if (!u) {
		if (!(u = calloc(1, sizeof *u)))
			return MHD_NO;
		*con_cls = u;
		return MHD_YES;
	}
	if (*size) {
		if (u->n + *size > LISTEN_BODY_CAP) {
			u->too_big = 1;
		} else if (!u->too_big) {
			char *np = realloc(u->p, u->n + *size + 1);
			if (!np)
				return MHD_NO;
			memcpy(np + u->n, data, *size);
			u->p = np;
			u->n += *size;
			u->p[u->n] = '\0';
		}
		*size = 0;
		return MHD_YES;
	}
	unsigned status = 404;
	if (strcmp(method, "POST") != 0 || strcmp(url, LISTEN_PATH) != 0)
		; /* 404 */
	else if (u->too_big)
		status = 413;
	else
		status = receive(l, conn, u);
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct upload *u = *con_cls;
	if (u) {
		free(u->p);
		free(u);
	}
	*con_cls = NULL;
}

/* The whole of a small file (a PEM), owned; NULL after a message. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t n = 0;
	if (f) {
		buf = calloc(1, 65536);
		n = buf ? fread(buf, 1, 65535, f) : 0;
		fclose(f);
	}
	if (!buf || n == 0) {
		fprintf(stderr,
		        "labhook listen: cannot read %s: start `labhook serve --demo` with this"
		        " --data-dir (it makes the development certificate), or give --cert and"
		        " --key\n",
		        path);
		free(buf);
		return NULL;
	}
	return buf;
}

/* 1 if something accepts connections on 127.0.0.1:port: a listen that still runs. */
static int port_live(long port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), live = 0;
	if (fd < 0 || port <= 0 || port > 65535) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return live;
}

/* Removes the listen subscriptions the 409 answer names whose listen is gone (nothing
 * answers on their port any more), and nothing else: 1 if it removed at least one, so
 * that subscribing again may work. A listen that still runs keeps its subscription. */
static int clear_stale(struct cli_session *s, json_t *conflict)
{
	json_t *c;
	size_t i;
	int removed = 0;
	json_array_foreach(json_object_get(json_object_get(conflict, "error"), "conflicts"), i, c)
	{
		struct cli_resp r;
		char path[256];
		const char *id = json_string_value(json_object_get(c, "subscriptionID"));
		if (!id || !util_id_valid(id, "sub_"))
			continue;
		snprintf(path, sizeof path, "/client/events/subscriptions/%s", id);
		if (cli_session_call(s, "GET", path, NULL, &r) != CLI_OK)
			continue;
		const char *ep = json_string_value(
		    json_object_get(json_object_get(r.json, "subscription"), "endpoint"));
		int mine = r.status == 200 && ep && !strncmp(ep, "https://127.0.0.1:", 18) &&
		           strstr(ep, LISTEN_PATH) && !strcmp(strstr(ep, LISTEN_PATH), LISTEN_PATH);
		long port = mine ? strtol(ep + 18, NULL, 10) : 0;
		cli_resp_free(&r);
		if (!mine)
			continue;
		if (port_live(port)) {
			fprintf(
			    stderr,
			    "labhook listen: %s belongs to a labhook listen still running on port "
			    "%ld; stop it first, or listen for other events (--events)\n",
			    id, port);
			continue;
		}
		if (cli_session_call(s, "DELETE", path, NULL, &r) == CLI_OK) {
			if (r.status == 200) {
				printf("removed %s, left behind by an earlier labhook listen\n",
				       id);
				removed = 1;
			}
			cli_resp_free(&r);
		}
	}
	return removed;
}

/* The account to register with: explicit credentials, then the demo's, then the saved
 * login. */
static int session_open(struct cli_session *s, const struct config *cfg, struct cli_words *w,
                        const char *url, char **env, char lab[ID_CAP])
{
	const char *creds = cli_flag(w, "credentials"), *id = NULL;
	struct demo_state d;
	char line[AUTH_SECRET_CAP + 8] = "";
	memset(s, 0, sizeof *s);
	s->tool = "listen";
	cli_base_url(cfg, url, 1, s->base, sizeof s->base);
	if (cli_client_credentials(w, env, &id, line) == 0) {
		int rc = cli_session_login(s, id, line, 1);
		OPENSSL_cleanse(line, sizeof line);
		return rc;
	}
	if (!creds && demo_state_read(cfg->data_dir, &d) == 0) {
		if (!lab[0])
			snprintf(lab, ID_CAP, "%s", d.lab_id);
		int rc = cli_session_login(s, d.client_id, d.client_secret, 1);
		demo_state_clear(&d);
		return rc;
	}
	if (creds)
		snprintf(s->path, sizeof s->path, "%s", creds);
	else
		cli_client_default_path(env, s->path, sizeof s->path);
	return cli_session_load(s, url != NULL);
}

/* The account's first lab into lab, when none was given. */
static int first_lab(struct cli_session *s, char lab[ID_CAP])
{
	struct cli_resp r;
	if (lab[0])
		return CLI_OK;
	int rc = cli_session_call(s, "GET", "/client/labs", NULL, &r);
	if (rc != CLI_OK)
		return rc;
	const char *id = json_string_value(
	    json_object_get(json_array_get(json_object_get(r.json, "labs"), 0), "labID"));
	if (r.status != 200 || !id) {
		rc = r.status != 200 ? cli_api_error("listen", &r) : CLI_EAPI;
		if (r.status == 200)
			fprintf(stderr, "labhook listen: the account has no lab\n");
	} else {
		snprintf(lab, ID_CAP, "%s", id);
	}
	cli_resp_free(&r);
	return rc;
}

/* Registers the subscription; *sub_id and the listener's secret on CLI_OK. */
static int subscribe(struct cli_session *s, const char *lab, const char *events, int port,
                     struct listener *l, char sub_id[ID_CAP])
{
	char endpoint[128];
	struct cli_resp r;
	snprintf(endpoint, sizeof endpoint, "https://127.0.0.1:%d" LISTEN_PATH, port);
	json_t *body = json_pack("{s:s, s:o, s:s, s:s}", "labID", lab, "events",
	                         cli_json_list(events), "endpoint", endpoint, "protocol", "https");
	int rc;
	for (int attempt = 0;; attempt++) {
		if ((rc = cli_session_call(s, "POST", "/client/events/subscribe", body, &r)) !=
		    CLI_OK)
			break;
		if (r.status == 409 && attempt == 0 && clear_stale(s, r.json)) {
			cli_resp_free(&r);
			continue;
		}
		const char *id = json_string_value(
		    json_object_get(json_object_get(r.json, "subscription"), "id"));
		const char *sec = json_string_value(json_object_get(r.json, "signingSecret"));
		if (r.status != 200 || !id || !sec || strlen(sec) >= sizeof l->secret) {
			rc = cli_api_error("listen", &r);
			if (r.status == 400 && strstr(r.body ? r.body : "", "blocked_address"))
				fprintf(stderr,
				        "labhook listen: the service refuses loopback endpoints:"
				        " run it with --demo (or allow-net 127.0.0.0/8 and a"
				        " ca-file that trusts %s)\n",
				        DEVCA_CERT);
		} else {
			snprintf(sub_id, ID_CAP, "%s", id);
			pthread_mutex_lock(&l->mu);
			snprintf(l->secret, sizeof l->secret, "%s", sec);
			pthread_cond_broadcast(&l->ready);
			pthread_mutex_unlock(&l->mu);
		}
		cli_resp_free(&r);
		break;
	}
	json_decref(body);
	return rc;
}

int cli_listen_main(int argc, char **argv, char **env)
{
	struct config cfg;
	char lab[ID_CAP] = "", sub_id[ID_CAP] = "", path[CFG_PATH_CAP + 32];
	char *cert = NULL, *key = NULL;
	struct cli_words w;
	struct cli_session s;
	struct listener l;
	struct MHD_Daemon *d = NULL;
	sigset_t set;
	int sig = 0, rc = cli_start("listen", argc, argv, env, "", usage, &cfg, &w);

	if (rc >= 0)
		return rc;
	rc = CLI_EUSAGE;
	memset(&s, 0, sizeof s);
	memset(&l, 0, sizeof l);
	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.ready, NULL);
	const char *url = cli_flag(&w, "url"), *events = cli_flag(&w, "events");
	const char *port_s = cli_flag(&w, "port"), *cert_f = cli_flag(&w, "cert");
	const char *key_f = cli_flag(&w, "key"), *lab_f = cli_flag(&w, "lab");
	l.forward_to = cli_flag(&w, "forward-to");
	char *port_end = NULL;
	long port = port_s ? strtol(port_s, &port_end, 10) : 0;
	if (port_s && (port_end == port_s || *port_end))
		port = -1; /* not a number: refused below */
	if (lab_f)
		snprintf(lab, sizeof lab, "%s", lab_f);
	if (w.npos) {
		fprintf(stderr, "labhook listen: unexpected argument '%s'\n", w.pos[0]);
		usage(stderr);
		return CLI_EUSAGE;
	}
	if (port < 0 || port > 65535 ||
	    (l.forward_to && strncmp(l.forward_to, "http://", 7) &&
	     strncmp(l.forward_to, "https://", 8))) {
		fprintf(stderr, "labhook listen: %s\n",
		        port < 0 || port > 65535 ? "--port wants 0-65535"
		                                 : "--forward-to wants an http:// or https:// URL");
		return CLI_EUSAGE;
	}
	/* Checked before anything is registered: a wrong flag must leave nothing behind. */
	cli_flag(&w, "client-id");
	cli_flag(&w, "client-secret");
	cli_flag(&w, "credentials");
	if (cli_words_check("listen", &w))
		return CLI_EUSAGE;
	rc = CLI_EAPI; /* from here, a failure is local, not the command line's */
	snprintf(path, sizeof path, "%s/%s", cfg.data_dir, DEVCA_LEAF);
	if (!(cert = slurp(cert_f ? cert_f : path)))
		goto out;
	snprintf(path, sizeof path, "%s/%s", cfg.data_dir, DEVCA_LEAFK);
	if (!(key = slurp(key_f ? key_f : path)))
		goto out;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = CLI_EAPI;
	/* Loopback only: this is a development receiver, nobody else's to reach. */
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS | MHD_USE_ERROR_LOG,
	                     (uint16_t)port, NULL, NULL, on_request, &l, MHD_OPTION_HTTPS_MEM_KEY,
	                     key, MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_NOTIFY_COMPLETED,
	                     on_done, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr,
		        "labhook listen: cannot serve HTTPS on 127.0.0.1:%ld (port in use?"
		        " try --port)\n",
		        port);
		goto out;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	int bound = info ? info->port : (int)port;
	if ((rc = session_open(&s, &cfg, &w, url, env, lab)) != CLI_OK ||
	    (rc = first_lab(&s, lab)) != CLI_OK ||
	    (rc = subscribe(&s, lab, events ? events : all_events, bound, &l, sub_id)) != CLI_OK)
		goto out;
	printf("Ready: webhooks for %s on lab %s arrive at https://127.0.0.1:%d" LISTEN_PATH
	       " (subscription %s).\n%s%s%sPress Ctrl-C to stop (the subscription is then"
	       " deleted).\n",
	       events ? events : all_events, lab, bound, sub_id,
	       l.forward_to ? "Forwarding each to " : "", l.forward_to ? l.forward_to : "",
	       l.forward_to ? "\n" : "");
	fflush(stdout);
	while (sigwait(&set, &sig) != 0)
		;
	rc = CLI_OK;
out:
	if (d)
		MHD_stop_daemon(d); /* no webhook is being printed while we delete */
	if (sub_id[0]) {
		struct cli_resp r;
		char p[256];
		snprintf(p, sizeof p, "/client/events/subscriptions/%s", sub_id);
		if (cli_session_call(&s, "DELETE", p, NULL, &r) == CLI_OK) {
			if (r.status == 200)
				printf("deleted subscription %s\n", sub_id);
			else
				rc = cli_api_error("listen", &r);
			cli_resp_free(&r);
		} else {
			fprintf(stderr,
			        "labhook listen: could not delete subscription %s: the next"
			        " listen removes it\n",
			        sub_id);
		}
	}
	fflush(stdout);
	free(cert);
	if (key) {
		OPENSSL_cleanse(key, strlen(key));
		free(key);
	}
	OPENSSL_cleanse(l.secret, sizeof l.secret);
	pthread_cond_destroy(&l.ready);
	pthread_mutex_destroy(&l.mu);
	cli_session_clear(&s);
	curl_global_cleanup();
	return rc;
}
