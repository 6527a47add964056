/* error.h: an error with a stable snake_case code (CONTRACT.md §3) and a human message. */
#ifndef COMMON_ERROR_H
#define COMMON_ERROR_H

#include <stdio.h>

struct error {
	int status;      /* HTTP status for the API, 0 if none */
	char code[48];   /* stable: invalid_request, not_found, unavailable, ... */
	char msg[512];   /* lower case, no final period */
};

#define error_set(e, st, cd, ...)                                                     \
	do {                                                                           \
		if (e) {                                                               \
			(e)->status = (st);                                            \
			snprintf((e)->code, sizeof((e)->code), "%s", (cd));            \
			snprintf((e)->msg, sizeof((e)->msg), __VA_ARGS__);             \
		}                                                                      \
	} while (0)

#endif
