/* cli_trigger.h: `labhook trigger EVENT`: makes the lab do what causes EVENT (a bill, a
 * report completed, a lead, ...) through the lab side with the admin key, on the demo's lab
 * unless told another. Single-threaded; runs in its own process.
 */
#ifndef LH_CLI_TRIGGER_H
#define LH_CLI_TRIGGER_H

/* argv excludes "labhook trigger". Returns the exit code (cli_http.h). */
int cli_trigger_main(int argc, char **argv, char **env);

#endif
