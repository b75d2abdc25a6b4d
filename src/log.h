/* log.h: one line per event on stderr: "<time> <level> <subsystem> key=value ... msg".
 *
 * The level is checked before any formatting (the LOG macro). Values that come from input
 * must go through log_escape so a line can never be split or forged. Never log a secret,
 * token, signature or full payload. Thread-safe: each line is one fputs under stdio's lock.
 */
#ifndef LH_LOG_H
#define LH_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_threshold;

/* Parses "debug|info|warn|error"; 0 on success. */
int log_parse_level(const char *s, enum log_level *out);
void log_write(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies s into out (cap bytes), escaping quotes, backslashes, control and non-ASCII bytes
 * and truncating with "..." so the result is one safe token. Returns out. */
char *log_escape(const char *s, char *out, size_t cap);

#define LOG(lvl, subsys, ...)                                                                      \
	do {                                                                                       \
		if ((lvl) >= log_threshold)                                                        \
			log_write((lvl), (subsys), __VA_ARGS__);                                   \
	} while (0)

#endif
