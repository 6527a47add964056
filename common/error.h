/* error.h: an error with a stable snake_case code (CONTRACT.md §3) and a human message. */
#ifndef COMMON_ERROR_H
#define COMMON_ERROR_H

#include <stdarg.h>
#include <stdio.h>

struct error {
	int status;    /* HTTP status for the API, 0 if none */
	char code[48]; /* stable: invalid_request, not_found, unavailable, ... */
	char msg[512]; /* lower case, no final period */
};

/* Fills e (if not NULL): status, code, printf-style message.  Returns -1,
 * so a failing path is one line: `return error_set(err, 422, ...);`. */
int error_set(struct error *e, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Makes s one line in place: every run of control characters (newlines,
 * tabs, CR, ...) becomes one space; trailing spaces go.  libpq's messages
 * span lines ("\n\tIs the server running...", "DETAIL:", "CONTEXT:"). */
void error_oneline(char *s);

/* Writes "prefix" + the formatted message + "suffix" + "\n" to f as one line
 * (error_oneline on the message). */
void error_print_line(FILE *f, const char *prefix, const char *suffix, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

#endif
