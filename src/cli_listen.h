/* cli_listen.h: `labhook listen`: a local receiver for development. Registers a subscription
 * (the demo account's unless told another) whose endpoint is an HTTPS server of its own on
 * this machine, with the development certificate `serve --demo` made (devca.h); prints each
 * webhook with its signature checked; optionally forwards it to a local URL; deletes the
 * subscription when stopped (SIGINT/SIGTERM).
 *
 * Threads: the main thread registers, then waits for the stop signal; libmicrohttpd's one
 * polling thread receives, verifies, prints and forwards, one webhook at a time.
 */
#ifndef LH_CLI_LISTEN_H
#define LH_CLI_LISTEN_H

/* argv excludes "labhook listen". Returns the exit code (cli_http.h). */
int cli_listen_main(int argc, char **argv, char **env);

#endif
