/* error.h: an error with a stable snake_case code (CONTRACT.md §3) and a human message. */
#ifndef COMMON_ERROR_H
#define COMMON_ERROR_H

#include <stdio.h>

struct error {
	int status;      /* HTTP status for the API, 0 if none */
	char code[48];   /* stable: invalid_request, not_found, unavailable, ... */
	char msg[512];   /* lower case, no final period */
};

/* Fills e (if not NULL): status, code, printf-style message. */
void error_set(struct error *e, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
