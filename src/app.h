/* app.h: the service's shared state, built by `labhook serve` before the HTTP threads start
 * and read-only (apart from the modules' own locked state) while they run.
 */
#ifndef LH_APP_H
#define LH_APP_H

#include "auth.h"
#include "config.h"
#include "domain.h"
#include "store.h"
#include "version.h"

struct app {
	struct config cfg;
	struct store *store;
	struct auth *auth;
	unsigned char admin_key_hash[32];
	char public_url[600];      /* base of reportURL links, no trailing slash */
	struct domain_links links; /* reportURL: public_url, the link key, report-link-ttl */
	int ready; /* set (atomically) once public_url and the demo accounts are in place */
};

#endif
