/* log.h: readable one-line logs, `ts=... level=... msg="..." key=value ...`.
 *
 * Never pass an API key or bearer token to these functions. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level printed ("debug", "info", "warn", "error"); returns -1 on an unknown name. */
int log_set_level(const char *name) __attribute__((warn_unused_result));

/* Prints to stderr: level, then `msg` quoted, then the already formatted fields in fmt. */
void log_msg(enum log_level lvl, const char *msg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...) log_msg(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_msg(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_msg(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_msg(LOG_ERROR, msg, __VA_ARGS__)

#endif
