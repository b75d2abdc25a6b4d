/* manpage.h: labhook(8), printed by the hidden command `labhook man` (the Debian package
 * runs it at build time). The commands and every setting come from the tables that drive
 * the command line and --help, so the page cannot drift from the code. Single-threaded.
 */
#ifndef LH_MANPAGE_H
#define LH_MANPAGE_H

#include <stdio.h>

/* Writes the whole page (roff, man macros) to f. */
void manpage_print(FILE *f);

#endif
