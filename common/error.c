/* error.c: see error.h. */
#include "common/error.h"

#include <stdarg.h>
#include <stdbool.h>

int error_set(struct error *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return -1;
	e->status = status;
	snprintf(e->code, sizeof(e->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	error_oneline(e->msg);
	return -1;
}

void error_oneline(char *s)
{
	char *w = s;
	bool space = false;

	for (const char *r = s; *r; r++) {
		unsigned char ch = (unsigned char)*r;
		if (ch < 0x20 || ch == 0x7f) {
			space = true;
			continue;
		}
		if (space && w > s && w[-1] != ' ')
			*w++ = ' ';
		space = false;
		*w++ = (char)ch;
	}
	while (w > s && w[-1] == ' ')
		w--;
	*w = '\0';
}

void error_print_line(FILE *f, const char *prefix, const char *suffix, const char *fmt, va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	error_oneline(line);
	fprintf(f, "%s%s%s\n", prefix, line, suffix);
}
