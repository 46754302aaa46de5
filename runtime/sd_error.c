#include <stdarg.h>
#include <stdio.h>
#include "sd_error.h"

static _Thread_local char message[512];

int sd_seterr(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	return -1;
}

const char *sd_geterr(void)
{
	return message[0] ? message : "unknown error";
}
