/* error.c: see error.h. */
#include "common/error.h"

#include <stdarg.h>

void error_set(struct error *e, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	e->status = status;
	snprintf(e->code, sizeof(e->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}
