/* admin_cli.h: `labhook admin ...`: commands that call the admin API of a running service
 * with the key from <data-dir>/admin.key. Single-threaded; runs in its own process.
 */
#ifndef LH_ADMIN_CLI_H
#define LH_ADMIN_CLI_H

/* argv excludes "labhook admin". Returns the process exit code. */
int admin_cli_main(int argc, char **argv, char **env);

#endif
