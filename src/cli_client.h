/* cli_client.h: `labhook client ...`, the integrator's command line: log in with client
 * credentials, then labs, subscriptions, secrets, deliveries, retry, recover and test events.
 * Also the session that `labhook listen` calls the client API with.
 *
 * The login is kept in a credentials file (mode 0600; --credentials FILE, else
 * $XDG_CONFIG_HOME/labhook/credentials.json or ~/.config/labhook/credentials.json): the
 * clientID, the access and refresh tokens and the service's URL, never the client secret.
 * An access token that expired (or that the service refuses as invalid_token) is refreshed
 * once with the refresh token and the call made again; a refused refresh token ends in
 * CLI_ELOGIN and "log in again". Tokens and secrets are never printed. Single-threaded.
 */
#ifndef LH_CLI_CLIENT_H
#define LH_CLI_CLIENT_H

#include <stdint.h>

#include <jansson.h>

#include "auth.h"
#include "cli_http.h"
#include "config.h"

struct cli_session {
	const char *tool;
	char base[1100];
	char path[CFG_PATH_CAP + 64]; /* the credentials file; "" when nothing is saved */
	char client_id[ID_CAP];
	char secret[AUTH_SECRET_CAP]; /* "" unless given: then a refused refresh logs in again */
	char access[AUTH_TOKEN_CAP];
	char refresh[AUTH_SECRET_CAP];
	int64_t expires_at; /* the access token's, Unix seconds */
};

/* Logs in with client_id and secret (kept in *s only for listen: keep_secret 1). Saves the
 * tokens when s->path is set. CLI_OK, CLI_EAPI after a message for refused credentials. */
int cli_session_login(struct cli_session *s, const char *client_id, const char *secret,
                      int keep_secret);
/* Reads the login saved in s->path (and its URL unless url_given). CLI_ELOGIN after a
 * message when there is none. */
int cli_session_load(struct cli_session *s, int url_given);
/* One client-API call with the session's token (refreshed as the header says). CLI_OK with
 * *out whatever the status (free with cli_resp_free), or CLI_EREACH / CLI_ELOGIN after a
 * message. body borrowed, may be NULL; path begins with '/'. */
int cli_session_call(struct cli_session *s, const char *method, const char *path, json_t *body,
                     struct cli_resp *out);
void cli_session_clear(struct cli_session *s);

/* The default credentials file from env: $XDG_CONFIG_HOME/labhook/credentials.json, else
 * $HOME/.config/labhook/credentials.json. */
void cli_client_default_path(char **env, char *out, size_t cap);

/* The client id and secret from --client-id/--client-secret, else LABHOOK_CLIENT_ID and
 * LABHOOK_CLIENT_SECRET; a secret "-" is read from stdin's first line. 0 with *id (borrowed
 * from w or env) and secret (the caller cleanses it); -1 when either is missing. */
int cli_client_credentials(struct cli_words *w, char **env, const char **id,
                           char secret[AUTH_SECRET_CAP + 8]);

/* argv excludes "labhook client". Returns the exit code (cli_http.h). */
int cli_client_main(int argc, char **argv, char **env);

#endif
