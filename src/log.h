/* log.h: one line per event on stderr, in one of two formats (the log-format setting):
 *   text: "<time> <level> <subsystem> key=value ... msg"
 *   json: {"time":"<RFC 3339 UTC,
 * ms>","level":...,"module":<subsystem>,"msg":...,"key":"value",...}
 *
 * Callers always format the text form; in JSON mode its leading key=value tokens become
 * string fields (log_escape's escapes decoded) and the rest becomes msg, so every call site
 * serves both formats. The level is checked before any formatting (the LOG macro). Values
 * that come from input must go through log_escape so a line can never be split or forged.
 * Never log a secret, token, signature or full payload. Thread-safe: each line is one fputs
 * under stdio's lock. log_threshold and log_output are set once at start, before threads.
 */
#ifndef LH_LOG_H
#define LH_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

extern enum log_level log_threshold;
extern enum log_format log_output;

/* Parses "debug|info|warn|error"; 0 on success. */
int log_parse_level(const char *s, enum log_level *out);
/* Parses "text|json"; 0 on success. */
int log_parse_format(const char *s, enum log_format *out);
/* "text" or "json". */
const char *log_format_name(enum log_format f);
void log_write(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies s into out (cap bytes), escaping quotes, backslashes, control and non-ASCII bytes
 * and truncating with "..." so the result is one safe token. Returns out. */
char *log_escape(const char *s, char *out, size_t cap);
/* The JSON form of one line: text is what the caller formatted ("k=v k2=\"q\" ... msg"),
 * time an RFC 3339 timestamp. Writes one JSON object, a newline and a NUL into out (cap
 * bytes, at least 64), valid JSON and valid UTF-8 whatever the text holds (bytes that are
 * not UTF-8 appear as the text "\xNN"); a line too long for cap loses its last fields or
 * the end of a string, marked "...". Returns the length written, newline included. */
size_t log_render_json(char *out, size_t cap, const char *time, enum log_level lvl,
                       const char *subsys, const char *text);

#define LOG(lvl, subsys, ...)                                                                      \
	do {                                                                                       \
		if ((lvl) >= log_threshold)                                                        \
			log_write((lvl), (subsys), __VA_ARGS__);                                   \
	} while (0)

#endif
