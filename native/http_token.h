/* SPDX-License-Identifier: MIT */
/*
 * http_token.h - the byte-level pieces of HTTP/1.1 syntax that the fast
 * path's request parser (http_fast.c) and hand-back's framing
 * (http_frame.c) both need.  Bounded by the lengths given, never by a
 * terminator in the input.
 */
#ifndef SPECLOOP_HTTP_TOKEN_H
#define SPECLOOP_HTTP_TOKEN_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline int http_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* p[0, len) equals the lower-case `name`, ignoring case (field names,
 * RFC 9110 §5.1) */
static inline bool http_name_is(const uint8_t *p, uint32_t len, const char *name)
{
	uint32_t i;

	for (i = 0; i < len; i++)
		if (!name[i] || http_lower(p[i]) != name[i])
			return false;
	return name[len] == 0;
}

/* RFC 9110 §5.6.2 token characters */
static inline bool http_is_tchar(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

#endif /* SPECLOOP_HTTP_TOKEN_H */
