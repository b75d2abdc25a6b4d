/* version.h: the release version, for `labhook version`, /healthz and the User-Agent of
 * deliveries. Kept apart so that a module needing only the version (the delivery engine)
 * does not include the service's shared state (app.h).
 */
#ifndef LH_VERSION_H
#define LH_VERSION_H

#define LABHOOK_VERSION "0.1.0"

#endif
