/* admin_cli.h: `labhook admin ...` and `labhook lab ...`: commands that call the admin API of a
 * running service with the key from <data-dir>/admin.key. Single-threaded; runs in its own process.
 */
#ifndef LH_ADMIN_CLI_H
#define LH_ADMIN_CLI_H

#include <stdio.h>

/* tool is "admin" (accounts, labs, parties) or "lab" (what lab staff do: complete a
 * report, delete a bill, convert a lead, enter a bill); argv excludes "labhook <tool>".
 * Returns the process exit code. */
int admin_cli_main(const char *tool, int argc, char **argv, char **env);
/* Prints tool's commands as roff lines "labhook TOOL COMMAND ..." for the man page, one a
 * line (the caller puts them in a no-fill block), from the table that drives the tool. */
void admin_cli_print_man(FILE *f, const char *tool);

#endif
