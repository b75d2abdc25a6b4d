/* demo.h: `serve --demo`: two demo accounts (a catch-all one with a lab, a party-scoped one
 * with a lab and a corporate user), the demo catalog, and what lets `labhook listen` receive
 * on this machine (the development CA of devca.h, loopback endpoints admitted).
 *
 * The accounts and their secrets stay put across restarts of the same data directory:
 * <data-dir>/demo.json (0600) keeps the secrets (the store keeps only hashes) and the URL
 * the service answered on, which `labhook listen` and `labhook trigger` read. Main thread of
 * serve only (demo_state_read: any single-threaded command).
 */
#ifndef LH_DEMO_H
#define LH_DEMO_H

#include "app.h"

#define DEMO_FILE "demo.json"

/* Before the delivery engine starts: makes the development CA, trusts it (unless --ca-file
 * names another CA file) and admits 127.0.0.0/8 and ::1 as endpoints. */
enum lh_err demo_trust(struct config *cfg);

/* After the HTTP server started on port: creates or finds the demo accounts, keeps their
 * secrets (new ones only when demo.json does not hold the working one), writes demo.json
 * and prints the credentials. */
enum lh_err demo_seed(struct app *app, int port);

/* What demo.json says, for the command line (secrets: borrowed from the caller's buffer,
 * cleansed by demo_state_clear). */
struct demo_state {
	char url[600];
	char client_id[ID_CAP], client_secret[AUTH_SECRET_CAP], lab_id[ID_CAP];
};
/* 0 with *out filled from <data_dir>/demo.json (the catch-all account), -1 if there is no
 * readable demo state. */
int demo_state_read(const char *data_dir, struct demo_state *out);
void demo_state_clear(struct demo_state *st);

#endif
