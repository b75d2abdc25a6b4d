/* devca.h: the development CA of `serve --demo`, so that `labhook listen` can receive
 * webhooks over HTTPS on this machine without a certificate made by hand.
 *
 * In <data-dir>: dev-ca.pem (a self-signed CA, which the demo service trusts as if given
 * as --ca-file), dev-ca.key, and dev-listen.pem / dev-listen.key (a server certificate for
 * localhost, 127.0.0.1 and ::1 signed by that CA, which listen serves with). All 0600,
 * made once and reused. Nothing outside --demo reads them. Main thread only.
 */
#ifndef LH_DEVCA_H
#define LH_DEVCA_H

#include "err.h"

#define DEVCA_CERT  "dev-ca.pem"
#define DEVCA_KEY   "dev-ca.key"
#define DEVCA_LEAF  "dev-listen.pem"
#define DEVCA_LEAFK "dev-listen.key"

/* Makes the four files in data_dir unless all are there. LH_EIO after a log line naming
 * the file when one cannot be written. */
enum lh_err devca_ensure(const char *data_dir);

#endif
